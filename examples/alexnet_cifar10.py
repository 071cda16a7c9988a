#!/usr/bin/env python3
"""Train AlexNet on CIFAR-10 (or a folder of your own images) with minidl, on a GPU (CuPy) or the CPU (NumPy).

    python examples/alexnet_cifar10.py --device cuda                 # the "seed" model, 224x224
    python examples/alexnet_cifar10.py --variant cifar --device cpu  # minutes on a laptop
    python examples/alexnet_cifar10.py --variant cifar --resume      # continue a stopped run
    python examples/alexnet_cifar10.py --dataset folder --data-dir photos/ --variant paper   # photos/<class>/*.jpg

Everything the run produces goes to --out: history.csv, checkpoint.npz, best.npz,
results.json and (with matplotlib) curves.png and filters.png.

Exit codes: 0 done, 1 an error (message on stderr), 2 bad arguments, 3 the loss
became NaN/infinite (the last good checkpoint is kept), 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

try:
    import minidl
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import minidl

from minidl import backend
from minidl.checkpoint import CheckpointError, load_checkpoint
from minidl.data import (DataLoader, DatasetError, build_transform, channel_mean_std, folder_loaders, load_cifar10,
                         load_image_folder)
from minidl.models import AlexNet
from minidl.models.alexnet import INPUT_SIZE
from minidl.optim import SGD, CosineLR, OneCycleLR, ReduceLROnPlateau, StepLR
from minidl.train import NonFiniteLossError, Trainer

PROG = "alexnet_cifar10"
EXIT_ERROR, EXIT_NONFINITE, EXIT_INTERRUPTED = 1, 3, 130

# One recipe per variant: the defaults of every flag left unset. Edit here to retune.
RECIPES = {
    # the tutorial's model and preprocessing (standardise, resize to 224); its plain
    # SGD(lr=0.001) gets momentum and a cosine decay to converge in a GPU-friendly run
    "seed": dict(epochs=20, batch_size=64, lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=False,
                 schedule="cosine", augment=False),
    # Krizhevsky et al. 2012: batch 128, momentum 0.9, wd 5e-4, lr 0.01 divided by 10
    # when the validation accuracy stops improving, random crops and flips
    "paper": dict(epochs=30, batch_size=128, lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=False,
                  schedule="plateau", augment=True),
    # native 32x32: Nesterov SGD with a one-cycle schedule (lr is the peak)
    "cifar": dict(epochs=7, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True,
                  schedule="onecycle", augment=True),
}
# Settings that define a run (stored in its checkpoint; a resume must not change them,
# except epochs). Device, data location, output, checkpoint frequency and TF32 are
# run-time choices and may differ on resume.
RUN_SETTINGS = ("variant", "epochs", "batch_size", "lr", "momentum", "weight_decay", "nesterov", "schedule",
                "augment", "seed", "val_size", "limit_train", "limit_val", "limit_test", "widths", "dataset",
                "val_fraction", "test_fraction", "normalize", "mean", "std")
FOLDER_ONLY = {"val_fraction": 0.1, "test_fraction": 0.1, "normalize": "channel", "mean": None, "std": None}
LENGTH_DEPENDENT = ("onecycle", "cosine", "step")  # schedules whose curve depends on the run's length


class UsageError(Exception):
    """A problem with the command line that argparse cannot see (e.g. a resume conflict)."""


def _count(kind, low):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return value
    return parse


def _widths(text):
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 7 comma-separated ints, got {text!r}") from None


def _fraction(text):
    value = _count(float, 0.0)(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f"must be < 1, got {text}")
    return value


def _floats(count):
    def parse(text):
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers, got {text!r}")
        return values
    return parse


def _recipe_help() -> str:
    lines = ["default recipes (any flag overrides its entry):"]
    for variant, r in RECIPES.items():
        lines.append(f"  {variant:5s} ({INPUT_SIZE[variant]}x{INPUT_SIZE[variant]}): {r['epochs']} epochs, batch "
                     f"{r['batch_size']}, lr {r['lr']} ({r['schedule']}), momentum {r['momentum']}"
                     f"{' nesterov' if r['nesterov'] else ''}, weight decay {r['weight_decay']}, augment "
                     f"{'on' if r['augment'] else 'off'}")
    return "\n".join(lines) + """

schedules: onecycle (lr is the peak; warm-up over 30% of the steps, then cosine
  annealing), cosine (from lr to 0 over the run), step (x0.1 every third of the
  epochs), plateau (x0.1 when the validation accuracy has not improved for 2
  epochs), constant.

resuming: --resume continues <out>/checkpoint.npz with the settings it was started
  with; flags that would change them are refused, except --epochs, which may be
  raised to train longer. onecycle, cosine and step are then rebuilt for the new
  length and continue from the current step on the new curve (the lr jumps to the
  new curve's value); plateau and constant carry on unchanged. --device, --data-dir,
  --checkpoint-every, --tf32, --workers and --on-bad-image may differ. On the CPU a
  resumed run ends with weights and results bit-identical to an uninterrupted one.

exit codes: 0 done, 1 error, 2 bad arguments, 3 loss became NaN/inf, 130 interrupted."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Train AlexNet on CIFAR-10 (or a folder of images) with minidl.",
                                epilog=_recipe_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda:0 when a GPU is usable, else cpu), cpu, cuda, cuda:N")
    p.add_argument("--variant", choices=sorted(RECIPES), default=None,
                   help="seed (224x224, the tutorial's model; default), paper (227x227), cifar (32x32)")
    p.add_argument("--epochs", type=_count(int, 1), help="number of epochs (default: per variant)")
    p.add_argument("--batch-size", type=_count(int, 1), help="images per step (default: per variant)")
    p.add_argument("--lr", type=_count(float, 0.0), help="learning rate; the peak for onecycle (default: per variant)")
    p.add_argument("--momentum", type=_count(float, 0.0), help="SGD momentum (default: per variant)")
    p.add_argument("--weight-decay", type=_count(float, 0.0), help="L2 weight decay (default: per variant)")
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                   help="Nesterov momentum (default: per variant)")
    p.add_argument("--schedule", choices=["onecycle", "cosine", "step", "plateau", "constant"],
                   help="learning-rate schedule (default: per variant)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crops (pad 4) and horizontal flips while training; with --dataset folder random-"
                        "resized crops and flips (default: per variant)")
    p.add_argument("--dataset", choices=["cifar10", "folder"], help="cifar10 (default) or folder: --data-dir holds "
                   "<class>/<image> folders, or train/ and val/ (and test/) folders of them")
    p.add_argument("--data-dir", help="a directory holding cifar-10-batches-py/, or where to download it "
                                      "(default: ~/.cache/minidl); with --dataset folder, the image folder")
    p.add_argument("--val-fraction", type=_fraction, help="folder: share of each class held out for "
                   "validation when there is no val/ folder (default 0.1)")
    p.add_argument("--test-fraction", type=_fraction, help="folder: share of each class held out for "
                   "testing when there is no train/ folder (default 0.1; 0 tests on the validation images)")
    p.add_argument("--normalize", choices=["channel", "image"], help="folder: per-channel mean/std (from the "
                   "training images unless --mean/--std; default) or per-image standardisation")
    p.add_argument("--mean", type=_floats(3), help="folder: per-channel mean R,G,B on the 0..1 scale")
    p.add_argument("--std", type=_floats(3), help="folder: per-channel std R,G,B on the 0..1 scale")
    p.add_argument("--workers", type=_count(int, 0), help="folder: image decoding threads (default: one per core, "
                   "at most 8)")
    p.add_argument("--on-bad-image", choices=["skip", "raise"], default="skip", help="folder: an image that does "
                   "not decode is reported and skipped (default), or stops the run with an error (raise)")
    p.add_argument("--out", help="output directory (default: runs/alexnet_<variant>)")
    p.add_argument("--seed", type=_count(int, 0), help="seed of weights, data order, augmentation, dropout (default 0)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.npz")
    p.add_argument("--val-size", type=_count(int, 1), help="first N training images held out for validation "
                                                          "(default 5000)")
    p.add_argument("--limit-train", type=_count(int, 1), help="use only the first N training images")
    p.add_argument("--limit-val", type=_count(int, 1), help="use only the first N validation images")
    p.add_argument("--limit-test", type=_count(int, 1), help="use only the first N test images")
    p.add_argument("--widths", type=_widths, help="cifar variant only: 7 even ints, channels of conv1..conv5 and "
                                                  "units of fc6, fc7 (default 32,96,192,128,128,512,512)")
    p.add_argument("--checkpoint-every", type=_count(int, 0), default=200,
                   help="also checkpoint every N steps within an epoch (0: only at epoch ends; default 200)")
    p.add_argument("--tf32", action="store_true", help="allow TensorFloat-32 matrix products on the GPU "
                                                       "(faster, less exact); no effect on the CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bar, only a line per epoch")
    p.add_argument("--no-plots", action="store_true", help="skip curves.png and filters.png")
    return p


def resolve_settings(args, stored: dict | None) -> dict:
    """The run's settings: stored ones on resume (only epochs may change), else flags over the recipe."""
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
    variant = given["variant"] or "seed"
    settings = {"variant": variant, **RECIPES[variant], "seed": 0, "val_size": 5000, "limit_train": None,
                "limit_val": None, "limit_test": None, "widths": None, "dataset": "cifar10"}
    if given["dataset"] == "folder":
        settings.update(FOLDER_ONLY)
        del settings["val_size"]
        if given["val_size"] is not None:
            raise UsageError("--val-size applies to --dataset cifar10; use --val-fraction (or a val/ folder)")
    for key in FOLDER_ONLY:
        if given[key] is not None and given["dataset"] != "folder":
            raise UsageError(f"--{key.replace('_', '-')} applies to --dataset folder only")
    settings.update({key: value for key, value in given.items() if value is not None})
    if (settings.get("mean") is None) != (settings.get("std") is None):
        raise UsageError("--mean and --std go together")
    if settings["widths"] is not None and variant != "cifar":
        raise UsageError(f"--widths applies to --variant cifar only, not {variant}")
    if settings["nesterov"] and settings["momentum"] == 0:
        raise UsageError("--nesterov needs --momentum > 0")
    if settings["lr"] <= 0:
        raise UsageError(f"--lr must be > 0, got {settings['lr']}")
    return settings


def make_loaders(settings: dict, data, device, args):
    """Train, validation and test loaders; the transform resizes to the variant's input size."""
    size = INPUT_SIZE[settings["variant"]]
    if settings["dataset"] == "folder":
        return folder_loaders(data, size, settings["batch_size"], augment=settings["augment"], seed=settings["seed"],
                              device=device, mean=settings["mean"], std=settings["std"], workers=args.workers,
                              limits=[settings[f"limit_{s}"] for s in ("train", "val", "test")],
                              on_bad_image=args.on_bad_image)

    def first(images, labels, limit):
        return (images, labels) if limit is None else (images[:limit], labels[:limit])

    batch, seed = settings["batch_size"], settings["seed"]
    train = DataLoader(*first(data.train_images, data.train_labels, settings["limit_train"]), batch, shuffle=True,
                       seed=seed, device=device, transform=build_transform(size, augment=settings["augment"]))
    evaluation = build_transform(size, augment=False)
    val = DataLoader(*first(data.val_images, data.val_labels, settings["limit_val"]), batch, shuffle=False,
                     seed=seed, device=device, transform=evaluation)
    test = DataLoader(*first(data.test_images, data.test_labels, settings["limit_test"]), batch, shuffle=False,
                      seed=seed, device=device, transform=evaluation)
    return train, val, test


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
    if name == "plateau":
        return ReduceLROnPlateau(optimizer, mode="max", factor=0.1, patience=2)
    return None


def load_data(args, settings):
    if settings["dataset"] == "folder":
        return load_folder(args, settings)
    url = os.environ.get("MINIDL_CIFAR10_URL")  # lets tests point the download at a local server
    extra = {"url": url} if url else {}
    return load_cifar10(data_dir=args.data_dir, cache_dir=args.data_dir, val_size=settings["val_size"],
                        progress=not args.no_progress, **extra)


def load_folder(args, settings):
    """The folder's splits; records (fresh run) or checks (resume) its classes, files and channel statistics."""
    if not args.data_dir:
        raise UsageError("--dataset folder needs --data-dir PATH: a folder of <class>/<image> folders")
    splits = load_image_folder(args.data_dir, settings["val_fraction"], settings["test_fraction"], settings["seed"])
    if "folder_digest" in settings and settings["folder_digest"] != splits.digest():
        raise DatasetError(f"the images under {args.data_dir} are not the ones the run started with (classes "
                           f"{settings['class_names']} then, {splits.class_names} now); resume needs the same "
                           "files, or start a new run in another --out")
    settings["class_names"], settings["folder_digest"] = splits.class_names, splits.digest()
    if splits.skipped:
        print(f"{PROG}: skipped {len(splits.skipped)} file(s) under {args.data_dir} that are hidden or not images "
              f"(e.g. {splits.skipped[0]})", file=sys.stderr, flush=True)
    if settings["normalize"] == "channel" and settings["mean"] is None:
        mean, std = channel_mean_std(splits.train, INPUT_SIZE[settings["variant"]], seed=settings["seed"],
                                     workers=args.workers, on_bad_image=args.on_bad_image,
                                     bad_paths=splits.unreadable)
        settings["mean"], settings["std"] = [round(v, 6) for v in mean], [round(v, 6) for v in std]
    return splits


def describe(settings, device, loaders, model, out, resumed) -> str:
    s, (train, val, test) = settings, loaders
    size = INPUT_SIZE[s["variant"]]
    params = sum(int(p.data.size) for p in model.parameters())
    lines = [f"minidl {minidl.__version__}: AlexNet variant {s['variant']!r} ({size}x{size}) on {device}",
             f"  {s['epochs']} epochs, batch {s['batch_size']}, lr {s['lr']} ({s['schedule']}), momentum "
             f"{s['momentum']}{' nesterov' if s['nesterov'] else ''}, weight decay {s['weight_decay']}, augment "
             f"{'on' if s['augment'] else 'off'}, seed {s['seed']}",
             f"  data: {train.num_samples} train / {val.num_samples} validation / {test.num_samples} test images, "
             f"{len(train)} steps per epoch",
             *folder_lines(settings, test),
             f"  model: {params:,} parameters; output: {out}"]
    if resumed is not None:
        lines.append(f"  resuming at epoch {resumed['epoch'] + 1}, batch {resumed['step']} "
                     f"({resumed['global_step']} steps done)")
    return "\n".join(lines)


def folder_lines(settings, test) -> list:
    if settings["dataset"] != "folder":
        return []
    names = settings["class_names"]
    norm = (f"mean {settings['mean']} std {settings['std']}" if settings["normalize"] == "channel" else
            "per-image standardisation")
    return [f"  folder: {len(names)} classes ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''}); "
            f"{norm}" + ("" if test.name == "test" else "; no test images: testing on the validation images")]


def run(args) -> int:
    if args.tf32:
        os.environ["CUPY_TF32"] = "1"  # CuPy reads it before its first float32 matrix product
    device = backend.parse_device(args.device)
    out = Path(args.out or f"runs/alexnet_{args.variant or 'seed'}")
    stored, checkpoint = None, None
    if args.resume:
        path = out / "checkpoint.npz"
        if not path.exists():
            raise UsageError(f"--resume: there is no checkpoint at {path}; start the run without --resume")
        checkpoint = load_checkpoint(path)
        stored = dict({"dataset": "cifar10"}, **checkpoint["settings"], completed_epochs=checkpoint["trainer"]["epoch"])
    settings = resolve_settings(args, stored)
    settings.pop("completed_epochs", None)
    args.resolved_batch_size = settings["batch_size"]  # for the out-of-memory hint
    if not args.resume and (out / "checkpoint.npz").exists():
        raise UsageError(f"{out} already holds a run (checkpoint.npz); continue it with --resume or choose "
                         "another --out")

    data = load_data(args, settings)
    settings.setdefault("class_names", getattr(data, "label_names", None))  # examples/predict.py prints them
    loaders = make_loaders(settings, data, device, args)
    train, val, test = loaders
    model = AlexNet(num_classes=len(settings["class_names"]), variant=settings["variant"], seed=settings["seed"],
                    widths=settings["widths"]).to(device)
    optimizer = SGD(model.parameters(), lr=settings["lr"], momentum=settings["momentum"],
                    weight_decay=settings["weight_decay"], nesterov=settings["nesterov"])
    schedule = make_schedule(settings, optimizer, len(train))
    trainer = Trainer(model, optimizer, train, val, epochs=settings["epochs"], schedule=schedule, out_dir=out,
                      settings=settings, checkpoint_every=args.checkpoint_every, progress=not args.no_progress,
                      plots=not args.no_plots)
    if checkpoint is not None:
        rebuild = None
        if settings["epochs"] != checkpoint["settings"]["epochs"] and settings["schedule"] in LENGTH_DEPENDENT:
            def rebuild(opt):
                opt.lr = settings["lr"]  # the fresh schedule starts from the base lr, then is replayed
                return make_schedule(settings, opt, len(train))
        trainer.load_state_dict(checkpoint, rebuild_schedule=rebuild)
    print(describe(settings, device, loaders, model, out, trainer.state if checkpoint is not None else None),
          flush=True)
    # A diverging run is stopped by the trainer with one clear message (exit code 3);
    # NumPy's per-operation overflow warnings on the way there would only add noise.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        trainer.fit()
        results = trainer.test(test)
    print(f"test: loss {results['test_loss']:.4f}, accuracy {100 * results['test_acc']:.2f}%, top-5 "
          f"{100 * results['test_top5']:.2f}% (final weights; best validation accuracy "
          f"{100 * (results['best_val_acc'] or 0):.2f}% at epoch {results['best_epoch']}); files in {out}", flush=True)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)  # bad arguments: usage + message, exit 2

    def fail(message: str, code: int = EXIT_ERROR) -> int:
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
        return code

    try:
        return run(args)
    except NonFiniteLossError as exc:
        return fail(str(exc), EXIT_NONFINITE)
    except KeyboardInterrupt:
        return fail("interrupted; continue with the same command plus --resume", EXIT_INTERRUPTED)
    except (UsageError, DatasetError, backend.DeviceError, CheckpointError) as exc:
        return fail(str(exc))
    except Exception as exc:  # one clear line instead of a traceback
        if backend.is_out_of_memory(exc):
            return fail(f"out of memory with batch size {getattr(args, 'resolved_batch_size', '?')}; "
                        "try a smaller --batch-size")
        if os.environ.get("MINIDL_TRACEBACK"):
            raise
        return fail(f"{type(exc).__name__}: {exc} (set MINIDL_TRACEBACK=1 to see the traceback)")


if __name__ == "__main__":
    sys.exit(main())
