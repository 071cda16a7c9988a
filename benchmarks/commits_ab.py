"""minidl at an earlier commit against this checkout: a training step and fused inference, alternating processes.

    python benchmarks/commits_ab.py --base 23b82c5 --model resnet20 --batch-size 128 --rounds 8

A change that should make minidl faster by a few percent cannot be seen in two separate
runs on a shared machine, whose speed moves by more than that from minute to minute.
This checks out ``--base`` into a temporary git worktree and times the same network in
child processes that import minidl from the base or from this checkout, alternating
(base, this, base, this, ...) for ``--rounds`` rounds: per child 2 warm-up and ``--steps``
timed training steps (cross-entropy, SGD with momentum) and fused inference passes
(``nn.fuse_for_inference``), medians in milliseconds. It prints each round's numbers, the
median over rounds of each with this checkout's time over the base's, the median of the
per-round ratios (a round's two children ran a few seconds apart), and the fastest round
of each (what the code costs when nothing else gets in the way).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import median_ms

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("cifar", "seed", "resnet20", "resnet18")


def child(tree: str, model_name: str, batch: int, steps: int) -> dict:
    """Medians of a training step and a fused inference pass, with minidl imported from ``tree``."""
    sys.path.insert(0, tree)
    import numpy as np
    import minidl
    import minidl.functional as F
    from minidl import models, nn
    from minidl.optim import SGD
    assert Path(minidl.__file__).resolve().is_relative_to(Path(tree).resolve()), minidl.__file__
    if model_name in ("cifar", "seed"):
        model = models.AlexNet(variant=model_name)
    else:
        model = getattr(models, model_name)(num_classes=10)
    size = 224 if model_name in ("seed", "resnet18") else 32
    rng = np.random.default_rng(0)
    x = minidl.tensor(rng.standard_normal((batch, 3, size, size)).astype(np.float32))
    labels = rng.integers(0, 10, batch)
    optimizer = SGD(model.parameters(), lr=0.001, momentum=0.9)

    def train():
        optimizer.zero_grad()
        F.cross_entropy(model(x), labels).backward()
        optimizer.step()

    def infer():
        with minidl.no_grad():
            fused(x)

    result = {"train_ms": median_ms(train, 2, steps)}
    model.eval()
    fused = nn.fuse_for_inference(model)
    result["infer_ms"] = median_ms(infer, 2, steps)
    return result


def _median(values):
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=False, help="the commit to compare against (any git revision)")
    parser.add_argument("--model", default="resnet20", choices=MODELS)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)   # the tree a child imports minidl from
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.model, args.batch_size, args.steps)))
        return 0
    if not args.base:
        parser.error("--base is required: the git revision to compare this checkout against")
    work = Path(tempfile.mkdtemp(prefix="minidl_base_"))
    base_tree = work / "tree"
    added = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), args.base],
                           capture_output=True, text=True)
    if added.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        print(f"commits_ab: cannot check out {args.base!r}: {added.stderr.strip()}", file=sys.stderr)
        return 1
    trees = {"base": str(base_tree), "this": str(ROOT)}
    rows = {name: [] for name in trees}
    try:
        for _ in range(args.rounds):
            for name, tree in trees.items():
                done = subprocess.run([sys.executable, __file__, "--model", args.model, "--batch-size",
                                       str(args.batch_size), "--steps", str(args.steps), "--child", tree],
                                      capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
                rows[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.model}, batch {args.batch_size}: milliseconds, one value per round (base = {args.base})")
    medians = {}
    for name, runs in rows.items():
        medians[name] = {key: _median([r[key] for r in runs]) for key in ("train_ms", "infer_ms")}
        print(f"{name:>4}: train " + " ".join(f"{r['train_ms']:.1f}" for r in runs)
              + " | fused inference " + " ".join(f"{r['infer_ms']:.1f}" for r in runs))
    for key, label in (("train_ms", "train"), ("infer_ms", "fused inference")):
        b, t = medians["base"][key], medians["this"][key]
        paired = _median([r[key] / q[key] for r, q in zip(rows["this"], rows["base"])])
        fastest = [min(r[key] for r in rows[name]) for name in ("base", "this")]
        print(f"median {label}: base {b:.1f} ms, this {t:.1f} ms, this / base {t / b:.3f} "
              f"(per-round ratios' median {paired:.3f}; fastest rounds {fastest[0]:.1f} and {fastest[1]:.1f} ms, "
              f"{fastest[1] / fastest[0]:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
