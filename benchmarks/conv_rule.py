"""The convolution algorithm rule, measured on a whole network: Winograd from N input channels up, im2col below.

    python benchmarks/conv_rule.py --model resnet20 --batch-size 128 --min-channels 16,32,64,1024 --rounds 3
    python benchmarks/conv_rule.py --model alexnet --variant cifar --batch-size 32 --min-channels 16,48,96,1024

``minidl.kernels.dispatch`` runs Winograd for 3x3 and 5x5 stride-1 convolutions with at least
``WINOGRAD_MIN_CHANNELS`` input channels per group and im2col for the rest. This times a
training step (SGD, momentum) and the fused inference of ``--model`` (and ``--variant``) with that threshold set
to each value, each run in a child process of its own, in alternating rounds: 2 warm-up and
``--steps`` timed steps, medians in milliseconds. A threshold above the widest layer means
im2col everywhere.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import common  # noqa: F401  (puts the checkout on sys.path)
from timing import median_ms


def child(model_name: str, batch: int, min_channels: int, steps: int, variant: str = "seed") -> dict:
    import minidl
    import minidl.functional as F
    from frameworks import build_minidl, make_batch, model_spec
    from minidl import nn
    from minidl.kernels import dispatch
    from minidl.optim import SGD
    dispatch.WINOGRAD_MIN_CHANNELS = min_channels
    spec = model_spec(model_name, variant)
    images, labels = make_batch(spec, batch)
    model = build_minidl(spec)
    x = minidl.tensor(images)
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train():
        loss = F.cross_entropy(model(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    fused = nn.fuse_for_inference(model)

    def infer():
        with minidl.no_grad():
            fused(x)
    return {"train_ms": median_ms(train, 2, steps), "infer_ms": median_ms(infer, 2, steps)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--variant", default="seed", help="AlexNet's variant (with --model alexnet)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--min-channels", default="16,32,64,1024", help="comma list of thresholds to compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.model, args.batch_size, args.child, args.steps, args.variant)))
        return 0
    thresholds = [int(v) for v in args.min_channels.split(",")]
    rows = {t: [] for t in thresholds}
    for _ in range(args.rounds):
        for t in thresholds:
            done = subprocess.run([sys.executable, __file__, "--model", args.model, "--variant", args.variant,
                                   "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                                   "--child", str(t)],
                                  capture_output=True, text=True, check=True)
            rows[t].append(json.loads(done.stdout.strip().splitlines()[-1]))
    name = f"{args.model} ({args.variant})" if args.model == "alexnet" else args.model
    print(f"{name}, batch {args.batch_size}: milliseconds per step, one value per round")
    for t, runs in rows.items():
        print(f"Winograd from {t:>4} channels: train " + " ".join(f"{r['train_ms']:.0f}" for r in runs)
              + " | fused inference " + " ".join(f"{r['infer_ms']:.0f}" for r in runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
