#!/usr/bin/env python3
"""The hardware yardstick of bench_models.py: the machine's float32 GEMM peak, and throughput as a fraction of it.

    python benchmarks/yardstick.py --kind numpy --size 2048      # prints one JSON line

GEMM peak: an n x n x n float32 product (2 n^3 FLOPs), each kind in a process of its own
(bench_models.py runs one child per kind), warmed up, then the median of ``--iters``:
  numpy   ``a @ b`` in NumPy's BLAS (OpenBLAS here) at minidl's thread count (its
          workers: ``MINIDL_NUM_THREADS``, else the usable CPUs), set through threadpoolctl
  minidl  ``minidl.kernels.cpu.threads.matmul``: how minidl itself runs a large product
          (BLAS pinned to one thread, blocks of the result spread over its workers)
  torch   ``torch.mm`` at PyTorch's default threads
``--threads N`` sets all of them to N.

Fraction of the GEMM peak: a framework's images/s times the step's dense-equivalent
FLOPs per image (counted on the torch twin by FlopCounterMode: every convolution as if
done directly, forward + backward for training), divided by the peak. Algorithms that do
fewer multiplications than the direct convolution (Winograd) can pass 1.0 in these units.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402,F401  (puts the repo root on sys.path)
from timing import timed_runs  # noqa: E402

import numpy as np  # noqa: E402

KINDS = ("numpy", "minidl", "torch")


def _product(kind: str, size: int, threads: int):
    """(fn computing one product, the threads it uses) for ``kind``."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    if kind == "torch":
        import torch
        if threads:
            torch.set_num_threads(threads)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        return (lambda: torch.mm(ta, tb)), torch.get_num_threads()
    if threads:
        common.set_threads(threads)
    from minidl.kernels.cpu import threads as cpu_threads
    count = cpu_threads.num_threads()
    if kind == "minidl":
        return (lambda: cpu_threads.matmul(a, b)), count
    from threadpoolctl import threadpool_limits
    common._LIMITS.append(threadpool_limits(limits=count, user_api="blas"))
    return (lambda: a @ b), count


def gemm_peak(kind: str, size: int = 2048, iters: int = 5, warmup: int = 2, threads: int = 0) -> dict:
    """GFLOP/s of ``kind``'s float32 size^3 product: the median of ``iters`` timed runs after ``warmup``.

    ``threads`` 0 leaves each library at its default (numpy: minidl's worker count).
    """
    if kind not in KINDS:
        raise ValueError(f"gemm_peak: kind must be one of {KINDS}, got {kind!r}")
    fn, used = _product(kind, size, threads)
    times = timed_runs(fn, warmup, iters)
    seconds = statistics.median(times)
    return {"kind": kind, "size": size, "threads": used, "times_s": times, "median_s": seconds,
            "gflops": 2 * size ** 3 / seconds / 1e9}


def fractions(speed: dict, flops: dict, peak_gflops: float) -> dict:
    """framework -> {"train": f, "infer": f}: images/s x dense FLOPs per image / GEMM peak."""
    out = {}
    for fw, s in speed.items():
        row = {}
        for phase in ("train", "infer"):
            rate = s.get(f"{phase}_images_per_s")
            if rate is not None:
                row[phase] = rate * flops[f"{phase}_per_image"] / (peak_gflops * 1e9)
        out[fw] = row
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", choices=KINDS, default="numpy")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="0: each library's default (numpy: minidl's workers)")
    args = p.parse_args(argv)
    print(json.dumps(gemm_peak(args.kind, args.size, args.iters, args.warmup, args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
