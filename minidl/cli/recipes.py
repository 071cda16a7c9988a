"""The settings of a ``minidl train`` run: a recipe per AlexNet variant, flags over it, resume rules.

A run's settings (``RUN_SETTINGS``) define it: they are stored in its checkpoint,
and a resume must not change them (except ``epochs``, to train longer). Device,
data location, output, checkpoint frequency, TF32 and the data-parallel choices
(number of processes, --comm, --sync-bn, --bucket-mb) are run-time choices and may
differ on resume.
"""
from __future__ import annotations

import argparse

from ..models.alexnet import INPUT_SIZE
from ..nn.batchnorm import _BatchNorm
from ..optim import (SGD, Adam, AdamW, CosineLR, LinearWarmupDecayLR, Lookahead, MultiStepLR, OneCycleLR,
                     ReduceLROnPlateau, RMSprop, StepLR)
from . import datasets
from .models import published_normalization


class UsageError(Exception):
    """A problem with the command line that argparse cannot see (e.g. a resume conflict)."""


# torchvision's ImageNet nets (resnet18, resnet34, AlexNet variant "torchvision"): SGD with
# momentum 0.9, weight decay 1e-4, lr 0.01 with a cosine decay, at 224x224, crops and flips;
# lr 0.01 suits fine-tuning their published weights (--weights) as well as a short run from scratch
IMAGENET_NET = dict(epochs=30, batch_size=64, lr=0.01, momentum=0.9, weight_decay=1e-4, nesterov=False,
                    schedule="cosine", augment=True, preprocess="standardize", clip_grad_norm=0.0, init=None)
# One recipe per variant: the defaults of every flag left unset. Edit here to retune.
RECIPES = {
    # the tutorial's model and preprocessing (standardise, resize to 224); its plain
    # SGD(lr=0.001) gets momentum and a cosine decay to converge in a GPU-friendly run
    "seed": dict(epochs=20, batch_size=64, lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=False,
                 schedule="cosine", augment=False, preprocess="standardize", clip_grad_norm=0.0, init=None),
    # Krizhevsky et al. 2012: batch 128, momentum 0.9, wd 5e-4, lr 0.01 divided by 10
    # when the validation accuracy stops improving, random crops and flips. But He
    # initialisation on standardised images, and gradient-norm clipping: with 10
    # classes instead of 1000 the paper's init (N(0, 0.01), biases 1) and lr blow up
    # and kill fc7 within 10 steps, and even clipped it learns slowly (README, "The
    # paper variant"; --init paper --preprocess subtract-mean gives the paper's)
    "paper": dict(epochs=30, batch_size=128, lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=False,
                  schedule="plateau", augment=True, preprocess="standardize", clip_grad_norm=5.0, init="he"),
    # native 32x32: Nesterov SGD with a one-cycle schedule (lr is the peak); 20 epochs
    # reach 82.6% test in 16 minutes on 2 cores (7 epochs: 77%, still underfitting)
    "cifar": dict(epochs=20, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True,
                  schedule="onecycle", augment=True, preprocess="standardize", clip_grad_norm=0.0, init=None),
    # torchvision's single-stream AlexNet, the one its published ImageNet weights are for
    "torchvision": IMAGENET_NET,
}
# The ResNets: He et al.'s CIFAR recipe (2016, section 4.2): SGD with momentum 0.9, weight
# decay 1e-4, batch 128, lr 0.1 divided by 10 at 50% and 75% of training (their 32k and 48k
# of 64k iterations), crops (pad 4) and flips; all 50,000 training images (the split only
# chose the length).
CIFAR_RESNET = dict(epochs=164, batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=False,
                    schedule="multistep", augment=True, preprocess="standardize", clip_grad_norm=0.0, init=None,
                    val_size=0)
# airbench94 (Jordan 2024, arXiv 2404.00498), in minidl's terms: the loss is the batch's MEAN
# (the paper sums it) and weight decay is PyTorch's coupled L2 term. The paper's lr 11.5 "per
# 1024 examples", divided by Nesterov's step gain 1 + 1/(1 - momentum) = 7.67, is 1.5 on the
# mean loss of a 1024 batch; its decay 0.0153 per 1024 examples gives weight_decay 0.0153/11.5 =
# 1.33e-3 here (lr * weight_decay = 0.002 per step). The batch norms' shifts train at 64x the lr
# with weight decay / 64 (the same decay per step); the whitening bias for the first 3 epochs
# only. Schedule "linear": up from 0.2x over 23% of the steps, down to 0.07x at the end.
# Lookahead every 5 steps; translations by up to 2 pixels (reflected border) and alternating
# flips; test-time augmentation level 2. 10 epochs (the paper: 9.9).
AIRBENCH94 = dict(epochs=10, batch_size=1024, lr=1.5, momentum=0.85, weight_decay=1.33e-3, nesterov=True,
                  schedule="linear", augment=True, preprocess="channel", clip_grad_norm=0.0, init=None, val_size=0,
                  label_smoothing=0.2, lookahead=True, tta=2, flip="alternate",
                  crop_padding=2, padding_mode="reflect", bias_lr_scale=64.0, whiten_bias_epochs=3, dirac=True,
                  whitening=True)
MODEL_RECIPES = {**{name: CIFAR_RESNET for name in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")},
                 "resnet18": IMAGENET_NET, "resnet34": IMAGENET_NET, "airbench94": AIRBENCH94}
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
RUN_SETTINGS = ("model", "variant", "epochs", "batch_size", "lr", "momentum", "weight_decay", "nesterov", "schedule",
                "augment", "preprocess", "clip_grad_norm", "init", "optimizer", "label_smoothing", "seed", "val_size",
                "limit_train", "limit_val", "limit_test", "widths", "weights", "dataset", "lookahead", "tta", "flip",
                "bias_lr_scale", "whiten_bias_epochs", "dirac", "whitening", *datasets.FOLDER_SETTINGS)
# schedules whose curve depends on the run's length
LENGTH_DEPENDENT = ("onecycle", "cosine", "step", "multistep", "linear")
LOOKAHEAD_STEPS = 5   # airbench's: the slow weights every 5 steps
DEFAULT_SEED, DEFAULT_VAL_SIZE, DEFAULT_CHECKPOINT_EVERY = 0, 5000, 200
# settings of runs from before they existed: an AlexNet on CIFAR-10, standardised, never clipped, SGD
OLD_RUN_DEFAULTS = {"dataset": "cifar10", "preprocess": "standardize", "clip_grad_norm": 0.0, "init": None,
                    "model": "alexnet", "optimizer": "sgd", "label_smoothing": 0.0, "weights": None,
                    "lookahead": False, "tta": 0, "flip": "random"}


def parameter_groups(settings: dict, model):
    """The parameters the optimizer trains: all of them, or airbench94's groups.

    With the recipe's ``bias_lr_scale`` (airbench94): the trainable parameters (frozen ones
    are left out), then the batch norms' shifts at ``bias_lr_scale`` times the lr with the
    weight decay divided by it (the same decay per step), then the whitening bias alone
    (``whiten_bias_epochs`` freezes that group: ``minidl.callbacks.FreezeAfter``).
    """
    scale = settings.get("bias_lr_scale")
    if not scale:
        return list(model.parameters())
    norm_shifts = [m.bias for m in model.modules() if isinstance(m, _BatchNorm) and m.bias is not None
                   and m.bias.requires_grad]
    later = [model.whiten.bias] if settings.get("whiten_bias_epochs") is not None else []
    taken = {id(p) for p in norm_shifts + later}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    groups = [{"params": rest}, {"params": norm_shifts, "lr": settings["lr"] * scale,
                                  "weight_decay": settings["weight_decay"] / scale}]
    return groups + ([{"params": later}] if later else [])


def build_optimizer(settings: dict, params, total_steps: int | None = None, model=None):
    """The run's optimizer: SGD with the recipe's momentum, or Adam, AdamW, RMSprop (--optimizer).

    With ``lookahead`` it is wrapped in ``Lookahead`` (every 5 steps; alpha falls from 1 to
    1 - 0.95^5 = 0.23 as (step / total_steps)^3, airbench's ramp), which also averages the
    ``model``'s batch-norm statistics.
    """
    name, lr, decay = settings.get("optimizer", "sgd"), settings["lr"], settings["weight_decay"]
    if name == "sgd":
        optimizer = SGD(params, lr=lr, momentum=settings["momentum"], weight_decay=decay,
                        nesterov=settings["nesterov"], max_grad_norm=settings["clip_grad_norm"] or None)
    elif name == "rmsprop":
        optimizer = RMSprop(params, lr=lr, momentum=settings["momentum"], weight_decay=decay)
    else:
        optimizer = (Adam if name == "adam" else AdamW)(params, lr=lr, weight_decay=decay)
    if not settings.get("lookahead"):
        return optimizer
    total = max(1, total_steps or 1)
    return Lookahead(optimizer, k=LOOKAHEAD_STEPS, alpha=lambda steps: 1.0 - 0.95 ** 5 * min(steps / total, 1.0) ** 3,
                     module=model)


def widths(text):
    """An argparse type: 7 comma-separated ints."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 7 comma-separated ints, got {text!r}") from None


def recipe_help() -> str:
    """The epilog of ``minidl train --help``: the recipes, schedules, resuming and exit codes."""
    lines = ["default recipes (any flag overrides its entry):"]
    for variant, r in RECIPES.items():
        lines.append(f"  {variant:5s} ({INPUT_SIZE[variant]}x{INPUT_SIZE[variant]}): {r['epochs']} epochs, batch "
                     f"{r['batch_size']}, lr {r['lr']} ({r['schedule']}), momentum {r['momentum']}"
                     f"{' nesterov' if r['nesterov'] else ''}, weight decay {r['weight_decay']}, augment "
                     f"{'on' if r['augment'] else 'off'}, {r['preprocess']}"
                     f"{', clip ' + str(r['clip_grad_norm']) if r['clip_grad_norm'] else ''}"
                     f"{', ' + r['init'] + ' init' if r['init'] else ''}")
    for name, r in (("resnet20 .. resnet110", CIFAR_RESNET), ("resnet18, resnet34", IMAGENET_NET)):
        lines.append(f"  {name}: {r['epochs']} epochs, batch {r['batch_size']}, lr {r['lr']} ({r['schedule']}), "
                     f"momentum {r['momentum']}, weight decay {r['weight_decay']}, augment on"
                     + (", all 50,000 training images (--val-size 0)" if r.get("val_size") == 0 else ""))
    r = AIRBENCH94
    lines.append(f"  airbench94: {r['epochs']} epochs, batch {r['batch_size']}, lr {r['lr']} ({r['schedule']}; batch "
                 f"norm shifts x{r['bias_lr_scale']:g}), momentum {r['momentum']} nesterov, weight decay "
                 f"{r['weight_decay']}, label smoothing {r['label_smoothing']}, lookahead, translations by "
                 f"{r['crop_padding']} (reflect) and alternating flips, per-channel normalisation, tta "
                 f"{r['tta']}, whitening bias trained {r['whiten_bias_epochs']} epochs, all 50,000 training images")
    return "\n".join(lines) + """

schedules: onecycle (lr is the peak; warm-up over 30% of the steps, then cosine
  annealing), cosine (from lr to 0 over the run), step (x0.1 every third of the
  epochs), multistep (x0.1 at half and three quarters of the epochs), plateau (x0.1 when the
  validation accuracy has not improved for 2 epochs), linear (airbench's: a straight line
  from 0.2 lr to lr over 23% of the steps, then down to 0.07 lr), constant.

resuming: --resume continues <out>/checkpoint.npz with the settings it was started
  with; flags that would change them are refused, except --epochs, which may be
  raised to train longer. onecycle, cosine, step and multistep are then rebuilt for the
  new length and continue from the current step on the new curve (the lr jumps to the
  new curve's value), as linear does; plateau and constant carry on unchanged. --device, --data-dir,
  --checkpoint-every, --tf32, --workers and --on-bad-image may differ. On the CPU a resumed run ends with
  weights and results bit-identical to an uninterrupted one. A run started from --weights keeps the
  setting; a resume does not read the file again (the checkpoint holds the trained weights).

fine-tuning: --weights FILE starts from a minidl checkpoint (.npz), a .safetensors or a PyTorch
  .pth/.pt (a state_dict, or a checkpoint dict with one under "state_dict" or "model"). Every
  layer must match the model, key for key and shape for shape, except the classifier (the last
  dense layer: fc8, classifier.6, fc, head): with another number of classes (your folders') it starts
  fresh. Folder runs from weights of torchvision's ImageNet models (resnet18, resnet34,
  --variant torchvision) normalise with ImageNet's mean/std unless --mean/--std or --normalize
  say otherwise; CIFAR-10 runs keep per-image standardisation.

exit codes: 0 done, 1 error, 2 bad arguments, 3 loss became NaN/inf, 130 interrupted."""


def resolve_settings(args, stored: dict | None) -> dict:
    """The run's settings: stored ones on resume (only epochs may change), else flags over the recipe.

    Raises:
        UsageError for flags that conflict with the stored run or with each other.
    """
    given = {key: getattr(args, key) for key in RUN_SETTINGS}
    if stored is not None:
        conflicts = [f"--{key.replace('_', '-')} {given[key]} (the run has {stored.get(key)})"
                     for key in RUN_SETTINGS if key != "epochs" and given[key] is not None
                     and given[key] != stored.get(key)]
        if conflicts:
            raise UsageError("--resume continues a run with the settings it was started with; these flags differ: "
                             + "; ".join(conflicts) + ". Drop them, or start a new run in another --out")
        settings = dict(stored)
        if given["epochs"] is not None:
            if given["epochs"] < stored["completed_epochs"]:
                raise UsageError(f"--epochs {given['epochs']}: the run already finished "
                                 f"{stored['completed_epochs']} epochs")
            settings["epochs"] = given["epochs"]
        return settings
    model = given["model"] or "alexnet"
    if model != "alexnet" and given["variant"] is not None:
        raise UsageError(f"--variant chooses the AlexNet; it does not apply to --model {model}")
    variant = (given["variant"] or "seed") if model == "alexnet" else None
    recipe = RECIPES[variant] if model == "alexnet" else MODEL_RECIPES[model]
    settings = {"model": model, "variant": variant, "val_size": DEFAULT_VAL_SIZE, "seed": DEFAULT_SEED,
                "optimizer": "sgd", "label_smoothing": 0.0, "limit_train": None, "limit_val": None,
                "limit_test": None, "widths": None, "weights": None, "dataset": "cifar10", "lookahead": False,
                "tta": 0, "flip": "random", **recipe}
    problem = datasets.settings_problem(given, settings)
    if problem:
        raise UsageError(problem)
    settings.update({key: value for key, value in given.items() if value is not None})
    published = published_normalization(settings)
    if settings["weights"] and settings["dataset"] == "folder" and published and given["normalize"] is None \
            and given["mean"] is None:
        # pretrained weights of torchvision's ImageNet models expect ImageNet's statistics
        settings["mean"], settings["std"] = published
    if settings["widths"] is not None and variant != "cifar":
        raise UsageError(f"--widths applies to --variant cifar only, not {variant}")
    if settings["init"] is not None and variant != "paper":
        raise UsageError(f"--init applies to --variant paper only, not {variant}")
    if settings["optimizer"] != "sgd":  # a recipe's SGD-only entries do not apply (asked for, they are errors)
        settings["nesterov"] = settings["nesterov"] and bool(given["nesterov"])
        settings["clip_grad_norm"] = settings["clip_grad_norm"] if given["clip_grad_norm"] else 0.0
    if settings["nesterov"] and (settings["momentum"] == 0 or settings["optimizer"] != "sgd"):
        raise UsageError("--nesterov needs --optimizer sgd and --momentum > 0")
    if settings["clip_grad_norm"] and settings["optimizer"] != "sgd":
        raise UsageError(f"--clip-grad-norm works with --optimizer sgd, not {settings['optimizer']}")
    if not 0.0 <= settings["label_smoothing"] < 1.0:
        raise UsageError(f"--label-smoothing must be in [0, 1), got {settings['label_smoothing']}")
    if settings["lr"] <= 0:
        raise UsageError(f"--lr must be > 0, got {settings['lr']}")
    for key in ("bias_lr_scale", "whiten_bias_epochs", "dirac", "whitening"):   # airbench94's, for ablations
        if given[key] is not None and model != "airbench94":
            raise UsageError(f"--{key.replace('_', '-')} applies to --model airbench94 only, not {model}")
    if model == "airbench94" and settings["dataset"] != "cifar10":
        raise UsageError("--model airbench94 trains on CIFAR-10 only: its whitening layer starts from the training "
                         "images' patch statistics")
    if settings["preprocess"] == "channel" and settings["dataset"] != "cifar10":
        raise UsageError("--preprocess applies to CIFAR-10; for folders use --normalize")
    return settings


def make_schedule(settings: dict, optimizer, steps_per_epoch: int):
    """The learning-rate schedule named in ``settings`` for a run of settings["epochs"] epochs."""
    name, epochs, lr = settings["schedule"], settings["epochs"], settings["lr"]
    total = max(2, epochs * steps_per_epoch)  # OneCycleLR needs at least 2 steps
    if name == "onecycle":
        return OneCycleLR(optimizer, max_lr=lr, total_steps=total)
    if name == "cosine":
        return CosineLR(optimizer, total_steps=total, min_lr=0.0, warmup_steps=0)
    if name == "step":
        return StepLR(optimizer, step_size_epochs=max(1, epochs // 3), gamma=0.1)
    if name == "multistep":   # He et al.'s: x0.1 at 50% and 75% of the epochs
        return MultiStepLR(optimizer, milestones=sorted({max(1, epochs // 2), max(1, epochs * 3 // 4)}), gamma=0.1)
    if name == "plateau":
        return ReduceLROnPlateau(optimizer, mode="max", factor=0.1, patience=2)
    if name == "linear":      # airbench94's
        return LinearWarmupDecayLR(optimizer, total_steps=total, warmup_steps=int(0.23 * total), start_factor=0.2,
                                   end_factor=0.07)
    return None
