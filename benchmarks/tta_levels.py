"""A finished CIFAR-10 run's final weights evaluated at every test-time augmentation level.

    python benchmarks/tta_levels.py --run runs/ab94_s0 --data-dir ../shared/data
    python benchmarks/tta_levels.py --run runs/ab94_s0 --data-dir ../shared/data --levels 0,2 --json out.json

Issue 20 asks what each of airbench94's ingredients contributes. Test-time augmentation
acts only when a model is evaluated, so its share is measured from a run's own final
weights without training again: the run's stored settings rebuild its model and its test
loader (the same images, the same normalisation), and ``minidl.metrics.evaluate`` runs
at each level (0: the images as they are, 1: the mean of the logits of each image and its
mirror image, 2: also translated by a pixel; ``minidl.metrics.tta_logits``). The level
the run trained with reproduces the test accuracy it logged, which the report checks.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import write_json  # (common puts the repo root on sys.path)

from minidl import backend
from minidl.cli.datasets import make_loaders
from minidl.cli.model_files import InputError, model_from_weights
from minidl.data.cifar10 import load_cifar10
from minidl.data.errors import DatasetError
from minidl.metrics import evaluate
from minidl.train import TTA_LEVELS


def measure(run: Path, data_dir: str, levels) -> dict:
    """Test loss, accuracy and top-5 of ``run``'s final weights at each of ``levels``."""
    model, _, settings = model_from_weights(run / "checkpoint.npz")    # minidl predict's rebuild, in eval mode
    if settings.get("dataset", "cifar10") != "cifar10":
        raise ValueError(f"tta_levels: {run} is not a CIFAR-10 training run; only those are supported")
    data = load_cifar10(data_dir=data_dir, cache_dir=data_dir, val_size=settings["val_size"], progress=False)
    _, _, test = make_loaders(settings, data, backend.CPU)
    logged = json.loads((run / "results.json").read_text()) if (run / "results.json").exists() else {}
    rows = []
    for level in levels:
        start = time.perf_counter()
        result = evaluate(model, test, tta=level)
        rows.append({"level": level, "accuracy": result["acc"], "top5": result["top5"], "loss": result["loss"],
                     "seconds": time.perf_counter() - start})
    return {"run": str(run), "model": settings["model"], "trained_tta": settings.get("tta", 0),
            "logged_test_acc": logged.get("test_acc"), "levels": rows}


def report(result: dict) -> str:
    lines = [f"{result['run']} ({result['model']}, trained with tta {result['trained_tta']}):"]
    base = result["levels"][0]["accuracy"]
    for row in result["levels"]:
        lines.append(f"  tta {row['level']}: accuracy {100 * row['accuracy']:.2f}% "
                     f"({100 * (row['accuracy'] - base):+.2f} points), top-5 {100 * row['top5']:.2f}%, "
                     f"loss {row['loss']:.4f} ({row['seconds']:.0f} s)")
    logged = result["logged_test_acc"]
    own = [r for r in result["levels"] if r["level"] == result["trained_tta"]]
    if logged is not None and own:
        same = abs(own[0]["accuracy"] - logged) < 1e-9
        lines.append(f"  the run logged {100 * logged:.2f}% at tta {result['trained_tta']}: "
                     f"{'reproduced' if same else 'NOT reproduced'}")
    return "\n".join(lines)


def _levels(text: str) -> list:
    try:
        levels = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected levels like 0,1,2, got {text!r}") from None
    if not levels or any(v not in TTA_LEVELS for v in levels):
        raise argparse.ArgumentTypeError(f"levels must be among {TTA_LEVELS}, got {text!r}")
    return levels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished run's directory (its checkpoint.npz)")
    parser.add_argument("--data-dir", required=True, help="where CIFAR-10 is (as for minidl train)")
    parser.add_argument("--levels", type=_levels, default=list(TTA_LEVELS), help="comma-separated (default 0,1,2)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    run = Path(args.run)
    if not (run / "checkpoint.npz").is_file():
        print(f"tta_levels: no checkpoint.npz in {run}", file=sys.stderr)
        return 2
    try:
        result = measure(run, args.data_dir, args.levels)
    except (ValueError, OSError, DatasetError, InputError) as exc:
        print(str(exc) if str(exc).startswith("tta_levels:") else f"tta_levels: {exc}", file=sys.stderr)
        return 2
    print(report(result))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
