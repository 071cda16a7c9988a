"""A CIFAR ResNet's training in PyTorch, fed minidl's own batches: the engine twin of ``minidl train`` (issue 18).

minidl's ResNet-20 lands short of He et al.'s 91.25% (docs/recipes.md). Is the gap minidl's
engine, or the recipe and the data? This script trains the same network with the same
recipe on the same batches, with PyTorch doing the arithmetic:

    python benchmarks/resnet_torch.py --model resnet20 --data-dir ../shared/data --epochs 50 \\
        --schedule cosine --lr 0.1 --nesterov --weight-decay 5e-4 --label-smoothing 0.1 \\
        --json benchmarks/results/resnet20_torch.json

It takes ``minidl train``'s own options and everything that is not the engine from minidl:

* the settings: ``minidl train``'s parser and recipes (``resolve_settings``), so the
  defaults are the model's default recipe;
* the data: minidl's loaders (``make_loaders``): the same order, crops, flips and
  normalisation, batch by batch;
* the initial weights: the run's seeded minidl model, copied into the twin
  (``tests/support/torch_models.py``: torchvision's module names, option-A shortcuts);
* the learning rate of every step: minidl's schedule object, stepped beside the run.

The engine is torch's: the twin's layers, ``torch.optim.SGD`` (momentum, Nesterov, coupled
weight decay on every parameter, as minidl's), ``F.cross_entropy`` with the run's label
smoothing, and eval mode with the running batch-norm statistics for the test.
``tests/benchmarks/test_resnet_torch.py`` holds the twin to minidl: in float64, from the same
weights on the same batches, the same weights after every step of minidl's ``Trainer``.

Only SGD and the per-step or per-epoch schedules without validation ("plateau" needs one) are
supported; the rest are refused with one line. Nothing is written but the JSON.
"""
from __future__ import annotations

import time

STARTED = time.perf_counter()   # the whole command's wall time starts before the imports

import argparse  # noqa: E402
import datetime  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as TF  # noqa: E402

from common import machine_info, top1_top5_hits, write_json  # noqa: E402  (also puts the checkout on sys.path)
from frameworks import build_torch_twin, model_spec  # noqa: E402
from minidl import backend  # noqa: E402
from minidl.nn import Parameter  # noqa: E402
from minidl.cli import datasets  # noqa: E402
from minidl.cli.models import CIFAR_RESNETS, build_model  # noqa: E402
from minidl.cli.recipes import UsageError, build_optimizer, make_schedule, resolve_settings  # noqa: E402
from minidl.cli.train import build_parser as minidl_train_parser  # noqa: E402
from minidl.data import DatasetError, load_cifar10  # noqa: E402

EXIT_NONFINITE = 3


class LrFollower:
    """minidl's schedule for the run, stepped on a stand-in optimizer: ``lr`` is the rate of the next step."""

    def __init__(self, settings: dict, steps_per_epoch: int):
        self.optimizer = build_optimizer(settings, [Parameter(np.zeros(1, np.float32))])
        self.schedule = make_schedule(settings, self.optimizer, steps_per_epoch)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def after_batch(self) -> None:
        if self.schedule is not None:
            self.schedule.step_batch()

    def after_epoch(self) -> None:
        if self.schedule is not None:
            self.schedule.step_epoch(None)


def build_twin(settings: dict, num_classes: int, dtype=torch.float32):
    """(minidl's freshly initialised model for the run, the torch twin holding its weights)."""
    ours = build_model(settings, num_classes)
    twin = build_torch_twin(model_spec(settings["model"], num_classes=num_classes), ours)
    return ours, twin.to(dtype)


def make_optimizer(settings: dict, twin) -> torch.optim.SGD:
    return torch.optim.SGD(twin.parameters(), lr=settings["lr"], momentum=settings["momentum"],
                           weight_decay=settings["weight_decay"], nesterov=bool(settings["nesterov"]))


def to_torch(x, y, dtype):
    return torch.from_numpy(np.asarray(x.numpy(), dtype=np.float32)).to(dtype), torch.from_numpy(np.asarray(y))


def train(twin, loader, settings: dict, *, dtype=torch.float32, log=print, on_step=None) -> list:
    """The run's epochs on ``loader``'s batches; one row per epoch. ``on_step(twin)`` after each step (tests)."""
    optimizer = make_optimizer(settings, twin)
    follower = LrFollower(settings, len(loader))
    smoothing, rows = float(settings["label_smoothing"]), []
    for epoch in range(settings["epochs"]):
        twin.train()
        started, loss_sum, correct, seen, first_lr = time.perf_counter(), 0.0, 0, 0, follower.lr
        for step, (x, y) in enumerate(loader.epoch_batches(epoch)):
            x, y = to_torch(x, y, dtype)
            for group in optimizer.param_groups:
                group["lr"] = follower.lr
            logits = twin(x)
            loss = TF.cross_entropy(logits, y, label_smoothing=smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"the training loss became {value} at epoch {epoch + 1}, batch {step + 1}")
            optimizer.step()
            follower.after_batch()
            if on_step is not None:
                on_step(twin)
            loss_sum += value * len(y)
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += len(y)
        follower.after_epoch()
        seconds = time.perf_counter() - started
        row = {"epoch": epoch + 1, "lr": first_lr, "train_loss": loss_sum / seen, "train_acc": correct / seen,
               "seconds": seconds, "images_per_s": seen / seconds}
        rows.append(row)
        log(f"epoch {epoch + 1}/{settings['epochs']}: train loss {row['train_loss']:.4f} acc "
            f"{100 * row['train_acc']:.2f}% | lr {first_lr:.4g} | {seconds:.1f} s, {row['images_per_s']:.0f} img/s")
    return rows


def evaluate(twin, loader, settings: dict, dtype=torch.float32) -> dict:
    """Eval mode over ``loader``: the (label-smoothed, as minidl reports it) loss, top-1 and top-5."""
    twin.eval()
    loss_sum, top1, top5, seen = 0.0, 0, 0, 0
    with torch.no_grad():
        for x, y in loader.epoch_batches(0):
            x, y = to_torch(x, y, dtype)
            logits = twin(x)
            loss_sum += float(TF.cross_entropy(logits, y, label_smoothing=float(settings["label_smoothing"]),
                                               reduction="sum"))
            hits = top1_top5_hits(logits, y)
            top1, top5 = top1 + hits[0], top5 + hits[1]
            seen += len(y)
    return {"test_loss": loss_sum / seen, "test_acc": top1 / seen, "test_top5": top5 / seen}


def check_supported(settings: dict) -> None:
    if settings["model"] not in CIFAR_RESNETS:
        raise UsageError(f"--model must be one of {CIFAR_RESNETS}, got {settings['model']!r}")
    if settings.get("optimizer", "sgd") != "sgd" or settings["schedule"] == "plateau" or settings["clip_grad_norm"]:
        raise UsageError("only SGD without gradient clipping and a schedule other than "
                         f"'plateau' are supported, got --optimizer {settings.get('optimizer')}, --schedule "
                         f"{settings['schedule']}, --clip-grad-norm {settings['clip_grad_norm']}")


def build_parser() -> argparse.ArgumentParser:
    parser = minidl_train_parser(prog="resnet_torch.py")
    parser.description = "Train a CIFAR ResNet with PyTorch on minidl's batches, settings and initial weights."
    parser.add_argument("--json", default=None, help="write the settings, per-epoch rows and test results here")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        settings = resolve_settings(args, None)
        check_supported(settings)
        data = load_cifar10(data_dir=args.data_dir, cache_dir=args.data_dir, download=False,
                            val_size=settings["val_size"], progress=False)
    except (UsageError, DatasetError) as exc:
        print(f"resnet_torch.py: {exc}", file=sys.stderr)
        return 2
    train_loader, _, test_loader = datasets.make_loaders(settings, data, "cpu")
    _, twin = build_twin(settings, len(data.label_names))
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads): {settings['model']} on minidl's batches, "
          f"{settings['epochs']} epochs, batch {settings['batch_size']}, lr {settings['lr']} ({settings['schedule']}), "
          f"momentum {settings['momentum']}{' nesterov' if settings['nesterov'] else ''}, weight decay "
          f"{settings['weight_decay']}, label smoothing {settings['label_smoothing']}, {settings['preprocess']}, "
          f"seed {settings['seed']}; {len(train_loader)} steps per epoch", flush=True)
    try:
        rows = train(twin, train_loader, settings, log=lambda line: print(line, flush=True))
    except FloatingPointError as exc:
        print(f"resnet_torch.py: {exc}", file=sys.stderr)
        return EXIT_NONFINITE
    results = evaluate(twin, test_loader, settings)
    wall = time.perf_counter() - STARTED
    print(f"test: loss {results['test_loss']:.4f}, accuracy {100 * results['test_acc']:.2f}%, top-5 "
          f"{100 * results['test_top5']:.2f}%; {wall / 60:.1f} min for the whole command", flush=True)
    if args.json:
        write_json(args.json, {"date": datetime.date.today().isoformat(), "machine": machine_info(backend.parse_device("cpu")),
                               "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "settings": {k: v for k, v in settings.items() if not k.startswith("class")},
                               "epochs": rows, **results, "wall_s": wall})
    return 0


if __name__ == "__main__":
    sys.exit(main())
