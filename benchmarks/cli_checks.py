#!/usr/bin/env python3
"""Helpers for gpu_check.sh's end-to-end steps through the command line (no network needed).

    python benchmarks/cli_checks.py images --data-dir .gpu_data --out OUT/images
        OUT/images/folder/<class>/<i>.png: an image-folder data set of real CIFAR-10
        training images (--classes, --per-class), and OUT/images/predict/*.png: a few
        test images for ``minidl predict`` (Pillow needed).
    python benchmarks/cli_checks.py resume --reference REF --out OUT -- TRAIN_ARGS...
        ``minidl train TRAIN_ARGS --out OUT``, interrupted (SIGINT) as soon as its first
        checkpoint within the epoch exists, then the same command with ``--resume``;
        the checkpoint must lie within an epoch, and the history and test results
        must equal those of the same command run uninterrupted into REF (resumes are
        bit-identical by design, docs/recipes.md).

Exit status 0 when the check passed, 1 (with the reason on stderr) when not.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minidl.checkpoint import load_checkpoint  # noqa: E402
from minidl.data.cifar10 import load_batch, load_label_names  # noqa: E402

TRAIN = [sys.executable, "-m", "minidl", "train"]
COMPARED = ("train_loss", "train_acc", "val_loss", "val_acc", "val_top5")


def images(args) -> int:
    from PIL import Image
    batches = Path(args.data_dir) / "cifar-10-batches-py"
    x, y = load_batch(batches / "data_batch_1")
    names = load_label_names(batches / "batches.meta")
    out = Path(args.out)
    for c in range(args.classes):
        folder = out / "folder" / names[c]
        folder.mkdir(parents=True, exist_ok=True)
        for i, index in enumerate(np.flatnonzero(y == c)[:args.per_class]):
            Image.fromarray(x[index].transpose(1, 2, 0)).save(folder / f"{i:03d}.png")
    test_x, _ = load_batch(batches / "test_batch")
    (out / "predict").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        Image.fromarray(test_x[i].transpose(1, 2, 0)).save(out / "predict" / f"test_{i}.png")
    print(f"wrote {args.classes} x {args.per_class} training images to {out / 'folder'} and 3 test images to "
          f"{out / 'predict'}")
    return 0


def _history(out: Path) -> np.ndarray:
    with open(out / "history.csv") as f:
        return np.array([[float(row[k]) for k in COMPARED] for row in csv.DictReader(f)])


def resume(args) -> int:
    out = Path(args.out)
    command = TRAIN + args.train + ["--out", str(out)]
    # each checkpoint write pauses (minidl's test hook), so the interrupt lands in the epoch
    proc = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, MINIDL_TEST_WRITE_DELAY="0.3"))
    deadline = time.monotonic() + args.timeout
    while not (out / "checkpoint.npz").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            print(f"resume check: no checkpoint appeared (rc {proc.poll()})", file=sys.stderr)
            return 1
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=args.timeout)
    state = load_checkpoint(out / "checkpoint.npz")["trainer"]
    print(f"interrupted (rc {rc}) with a checkpoint at epoch {state['epoch']}, step {state['step']}", flush=True)
    if rc != 130 or state["step"] == 0:
        print("resume check: the run was not interrupted within its first epoch", file=sys.stderr)
        return 1
    done = subprocess.run(command + ["--resume"], cwd=ROOT, timeout=args.timeout)
    if done.returncode != 0:
        print(f"resume check: the resumed run failed (rc {done.returncode})", file=sys.stderr)
        return 1
    got, want = _history(out), _history(Path(args.reference))
    tests = [json.loads((d / "results.json").read_text())["test_loss"] for d in (out, Path(args.reference))]
    worst = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    print(f"resumed run vs uninterrupted: history max |difference| {worst:.3g}, test loss {tests[0]:.6f} vs "
          f"{tests[1]:.6f}")
    if worst != 0 or tests[0] != tests[1]:
        print("resume check: the resumed run differs from the uninterrupted one", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("images")
    q.add_argument("--data-dir", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--classes", type=int, default=3)
    q.add_argument("--per-class", type=int, default=40)
    q = sub.add_parser("resume")
    q.add_argument("--reference", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--timeout", type=float, default=300)
    q.add_argument("train", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if args.command == "resume":
        args.train = [a for a in args.train if a != "--"]
        return resume(args)
    return images(args)


if __name__ == "__main__":
    sys.exit(main())
