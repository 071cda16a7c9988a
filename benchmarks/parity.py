#!/usr/bin/env python3
"""CPU-vs-device parity of every minidl kernel: forward values and input gradients.

    python benchmarks/parity.py --device cuda        # NumPy on the CPU vs CuPy on the GPU
    python benchmarks/parity.py --device cpu         # cpu vs cpu: a dry run of the script

Each kernel runs on the same random inputs (float64, then float32) with the same
random upstream gradient on the CPU and on ``--device``; the table shows, per
kernel and dtype, the largest difference of the output and of every input
gradient, as max |a - b| and relative to max |cpu value|. Exit status 1 when a
relative difference exceeds the tolerance (float64 1e-9, float32 1e-4: summation
order differs between BLAS libraries, TF32 stays off).
"""
from __future__ import annotations

import argparse
import os
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (puts the repo root on sys.path)
from common import format_table  # noqa: E402

import numpy as np  # noqa: E402

import minidl  # noqa: E402
import minidl.functional as F  # noqa: E402
from minidl import backend  # noqa: E402

TOLERANCE = {"float64": 1e-9, "float32": 1e-4}


def _bn(training, momentum=0.1, eps=1e-5):
    def fn(x, w, b):
        c = x.shape[1]
        mean = backend.to_device(np.linspace(-0.5, 0.5, c).astype(x.dtype), x.device)
        var = backend.to_device(np.linspace(0.5, 2.0, c).astype(x.dtype), x.device)
        return F.batch_norm(x, w, b, mean, var, training, momentum, eps)
    return fn


def _pool_input(shape):
    """Tie-free values (a shuffled linspace), so the argmax is the same everywhere."""
    n = int(np.prod(shape))
    return np.random.default_rng(3).permutation(np.linspace(-1, 1, n)).reshape(shape)


# name -> (fn(*tensors) -> Tensor, [input shapes or arrays]); every input gets a gradient
KERNELS = {
    "conv2d same g2": (lambda x, w, b: F.conv2d(x, w, b, padding="same", groups=2), [(2, 4, 9, 9), (6, 2, 3, 3), (6,)]),
    "conv2d s4 same 11x11": (lambda x, w, b: F.conv2d(x, w, b, stride=4, padding="same"),
                             [(2, 3, 23, 23), (4, 3, 11, 11), (4,)]),
    "conv2d s2 pad1 nobias": (lambda x, w: F.conv2d(x, w, stride=2, padding=1), [(2, 3, 8, 7), (5, 3, 3, 3)]),
    "max_pool2d 3/2": (lambda x: F.max_pool2d(x, 3, 2), [_pool_input((2, 3, 11, 11))]),
    "max_pool2d 3/2 pad1": (lambda x: F.max_pool2d(x, 3, 2, padding=1), [_pool_input((2, 3, 8, 8))]),
    "batch_norm train 4d": (_bn(True, 0.01, 1e-3), [(4, 3, 5, 5), (3,), (3,)]),
    "batch_norm eval 4d": (_bn(False), [(4, 3, 5, 5), (3,), (3,)]),
    "batch_norm train 2d": (_bn(True), [(6, 5), (5,), (5,)]),
    "local_response_norm": (lambda x: F.local_response_norm(x, 5, 1e-2, 0.75, 2.0), [(2, 7, 4, 4)]),
    "relu": (F.relu, [(3, 17)]),
    "dropout": (lambda x: F.dropout(x, 0.5, True, rng=np.random.default_rng(7)), [(4, 33)]),
    "linear": (F.linear, [(5, 7), (3, 7), (3,)]),
    "softmax": (lambda x: F.softmax(x, axis=-1), [(4, 6)]),
    "log_softmax": (lambda x: F.log_softmax(x, axis=1), [(4, 6)]),
    "softmax_cross_entropy": (lambda x: F.softmax_cross_entropy(x, np.array([0, 3, 5, 1])), [(4, 6)]),
    "flatten": (F.flatten, [(2, 3, 4, 5)]),
    "concat": (lambda a, b: F.concat([a, b], axis=1), [(2, 3, 4), (2, 2, 4)]),
    "add/sub/mul/div": (lambda a, b: (a + b) * a - b / (a * a + 1.0), [(3, 4), (4,)]),
    "matmul": (lambda a, b: a @ b, [(3, 5), (5, 4)]),
    "sum/mean": (lambda a: a.sum(axis=1) + a.mean(axis=0).sum(), [(3, 4)]),
    "exp/log/pow": (lambda a: (a * a + 1.0).log() + (a * 0.5).exp() + a ** 3, [(3, 4)]),
    "reshape/transpose/getitem": (lambda a: a.reshape(4, 3).transpose(1, 0)[1:, ::2], [(3, 4)]),
}


def run_kernel(fn, inputs, device, dtype):
    """Output and input gradients (host arrays) of fn on ``device``."""
    tensors = [minidl.tensor(a.astype(dtype), device=device, requires_grad=True) for a in inputs]
    y = fn(*tensors)
    gy = np.random.default_rng(11).standard_normal(y.shape).astype(dtype)
    y.backward(gy)
    grads = [t.grad.numpy() if t.grad is not None else np.zeros(t.shape, dtype) for t in tensors]
    return [y.numpy()] + grads


def compare(name, fn, shapes, device, dtype):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    inputs = [s if isinstance(s, np.ndarray) else rng.standard_normal(s) for s in shapes]
    ref = run_kernel(fn, inputs, backend.CPU, dtype)
    got = run_kernel(fn, inputs, device, dtype)
    worst_abs, worst_rel, worst_what = 0.0, 0.0, "-"
    labels = ["output"] + [f"grad[{i}]" for i in range(len(inputs))]
    for label, a, b in zip(labels, ref, got):
        if a.shape != b.shape:
            return [name, np.dtype(dtype).name, float("inf"), float("inf"), f"{label} shape {a.shape} vs {b.shape}"]
        err = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
        scale = float(np.max(np.abs(a))) if a.size else 0.0
        rel = err / scale if scale else err
        if rel >= worst_rel:
            worst_abs, worst_rel, worst_what = err, rel, label
    return [name, np.dtype(dtype).name, worst_abs, worst_rel, worst_what]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="device compared with the CPU (default cuda)")
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    os.environ.pop("CUPY_TF32", None)  # full float32 precision
    device = backend.parse_device(args.device)
    rows, failed = [], []
    for dtype in (np.float64, np.float32):
        for name, (fn, shapes) in KERNELS.items():
            try:
                row = compare(name, fn, shapes, device, dtype)
            except Exception as exc:  # one broken kernel must not hide the others
                row = [name, np.dtype(dtype).name, float("nan"), float("nan"), f"ERROR {type(exc).__name__}: {exc}"]
            ok = row[3] <= TOLERANCE[row[1]]  # NaN compares False: an error fails
            row.append("ok" if ok else "FAIL")
            if not ok:
                failed.append(f"{row[0]} ({row[1]})")
            rows.append(row)
    print(f"parity: cpu vs {device} (tolerance on max|diff| / max|cpu|: {TOLERANCE})")
    print(format_table(["kernel", "dtype", "max abs diff", "max rel diff", "worst at", "status"], rows))
    if args.json:
        common.write_json(args.json, {"device": str(device), "tolerance": TOLERANCE, "rows": rows})
    if failed:
        print(f"parity FAILED for {len(failed)}: {', '.join(failed)}")
        return 1
    print(f"parity ok: {len(rows)} kernel/dtype pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
