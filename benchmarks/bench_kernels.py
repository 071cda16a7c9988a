#!/usr/bin/env python3
"""minidl's kernels against the hardware: convolutions vs a GEMM, pooling/BN/ReLU vs a copy.

    python benchmarks/bench_kernels.py --device cpu                      # seed shapes, batch 32
    python benchmarks/bench_kernels.py --device cpu --variant cifar      # cifar shapes, batch 128
    python benchmarks/bench_kernels.py --device cuda --only conv1,conv2

Convolutions (every conv layer of the AlexNet variant): forward and backward time
against the plain GEMMs an im2col convolution of that shape has to do, on
preallocated contiguous arrays (forward: per group (N*OH*OW, C/g*KH*KW) x (.., O/g);
backward: the weight-gradient GEMM and, except conv1, whose input needs no
gradient, the input-gradient GEMM). roofline ratio = GEMM time / conv time, the
fraction of the GEMM rate the convolution achieves (1.0: all its time is the
GEMM; im2col, col2im, padding and bias are the rest). Where conv2d runs Winograd
(3x3 or 5x5, stride 1; see minidl/functional/conv.py), which needs fewer multiplications
than those GEMMs, the same conv is also timed with ``algorithm="im2col"`` and the
table shows Winograd's speed-up over it. Inputs after conv1 are channels-last on
the CPU, as in the network. A large square GEMM gives the device's peak for
reference, and PyTorch's convolution (if installed) the competition.

Memory-bound kernels (max pooling 3/2, batch norm in training mode, ReLU): bytes
that must move at the least (forward: read x, write y; backward: read the upstream
gradient and x, write the input gradient; pooling's backward: read gy, write gx)
divided by the time, against the bandwidth of ``x.copy()`` of the same size
(bytes read + written / time). bandwidth ratio = achieved / copy bandwidth.

Each case is timed in alternating rounds (minidl, GEMM/copy, torch, ...), medians
of ``--iters``; a table and JSON (default benchmarks/results/kernels_<device>.json).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (puts the repo root on sys.path)
from common import format_table, median, sync  # noqa: E402

import numpy as np  # noqa: E402

import minidl  # noqa: E402
import minidl.functional as F  # noqa: E402
from minidl import backend  # noqa: E402
from minidl.kernels import dispatch  # noqa: E402
from minidl.kernels.cpu import threads as cpu_threads  # noqa: E402
from minidl.models.alexnet import CIFAR_WIDTHS  # noqa: E402

# name: (C, H, W), weight (O, C/g, KH, KW), stride, groups, input needs a gradient ("same" padding)
SEED_CONVS = {
    "conv1": ((3, 224, 224), (96, 3, 11, 11), 4, 1, False),
    "conv2": ((96, 27, 27), (256, 48, 5, 5), 1, 2, True),
    "conv3": ((256, 13, 13), (384, 256, 3, 3), 1, 1, True),
    "conv4": ((384, 13, 13), (384, 192, 3, 3), 1, 2, True),
    "conv5": ((384, 13, 13), (256, 192, 3, 3), 1, 2, True),
}
_C1, _C2, _C3, _C4, _C5 = CIFAR_WIDTHS[:5]
CIFAR_CONVS = {
    "conv1": ((3, 32, 32), (_C1, 3, 3, 3), 1, 1, False),
    "conv2": ((_C1, 16, 16), (_C2, _C1 // 2, 3, 3), 1, 2, True),
    "conv3": ((_C2, 8, 8), (_C3, _C2, 3, 3), 1, 1, True),
    "conv4": ((_C3, 8, 8), (_C4, _C3 // 2, 3, 3), 1, 2, True),
    "conv5": ((_C4, 8, 8), (_C5, _C4 // 2, 3, 3), 1, 2, True),
}
VARIANTS = {  # variant: (convs, pools, batch norms, relus, default batch)
    "seed": (SEED_CONVS, {"pool1": (96, 56, 56), "pool2": (256, 27, 27), "pool5": (256, 13, 13)},
             {"bn1": (96, 56, 56), "bn2": (256, 27, 27)}, {"relu1": (96, 56, 56), "relu3": (384, 13, 13)}, 32),
    "cifar": (CIFAR_CONVS, {"pool1": (_C1, 32, 32), "pool2": (_C2, 16, 16), "pool5": (_C5, 8, 8)},
              {"bn1": (_C1, 32, 32), "bn2": (_C2, 16, 16), "bn3": (_C3, 8, 8)},
              {"relu1": (_C1, 32, 32), "relu3": (_C3, 8, 8)}, 128),
}


def same_pads(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


# Pause before each timed case: PyTorch's OpenMP threads keep spinning for a while after
# its calls, and in this one process they took cores from the minidl case timed next
# (cifar conv2 forward 7.4 ms right after torch, 5.2 ms without torch in the process,
# 5.6 ms with this pause).
_SETTLE_S = 0.02


def time_fwd_bwd(cases, warmup, iters) -> dict:
    """Alternate rounds over ``cases`` [(name, fn)], fn() -> (forward s, backward s); medians per name."""
    samples = {name: [] for name, _ in cases}
    for round_ in range(warmup + iters):
        for name, fn in cases:
            time.sleep(_SETTLE_S)
            t = fn()
            if round_ >= warmup:
                samples[name].append(t)
    return {name: (median([t[0] for t in s]), median([t[1] for t in s])) for name, s in samples.items()}


def _timed(device, fn):
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


# ---- case builders: each returns fn() -> (forward seconds, backward seconds) -----------------
def _forward_backward(device, x, params, forward, random_like):
    """fn() -> (forward s, backward s) of forward(x, *params), for either framework's tensors.

    The upstream gradient is drawn once (``random_like(y)``) and reused every round.
    """
    state = {}

    def run():
        for p in params:
            p.grad = None
        x.grad = None
        y, tf = _timed(device, lambda: forward(x, *params))
        if "gy" not in state:
            state["gy"] = random_like(y)
        _, tb = _timed(device, lambda: y.backward(state["gy"]))
        return tf, tb
    return run


def _in_layout_of(values, like):
    """``values`` copied into an array with ``like``'s memory layout (channels-last stays so)."""
    out = backend.get_array_module(like).empty_like(like)
    out[...] = values
    return out


def minidl_case(device, rng, x_shape, forward, x_grad=True, params=(), channels_last=False):
    """forward(x, *params) -> y Tensor; backward runs y.backward(random gy, in y's layout).

    channels_last: x in channels-last memory, as every activation after conv1 on the CPU.
    """
    data = rng.standard_normal(x_shape, dtype=np.float32)
    if channels_last and len(x_shape) == 4 and device.type == "cpu":
        data = np.ascontiguousarray(data.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    x = minidl.tensor(data, device=device, requires_grad=x_grad)
    params = [minidl.tensor(p, device=device, requires_grad=True) for p in params]
    return _forward_backward(device, x, params, forward, lambda y: _in_layout_of(backend.to_device(
        rng.standard_normal(y.shape, dtype=np.float32), device), y.data))


def torch_case(torch, device, rng, x_shape, forward, x_grad=True, params=()):
    tdev = common.torch_device(device)
    x = torch.from_numpy(rng.standard_normal(x_shape, dtype=np.float32)).to(tdev).requires_grad_(x_grad)
    params = [torch.from_numpy(np.ascontiguousarray(p)).to(tdev).requires_grad_(True) for p in params]
    return _forward_backward(device, x, params, forward, torch.randn_like)


def _gemm(a, b):
    """Batched a @ b at the parallelism minidl's own products get.

    On the CPU minidl runs BLAS single-threaded and spreads products over its worker
    threads (minidl/kernels/cpu/threads.py), so the reference does the same, one group at a
    time; a multi-threaded BLAS call here would also leave OpenBLAS threads spinning
    into the next timed case.
    """
    if a.ndim == 2:
        return cpu_threads.matmul(a, b)
    if backend.device_of(a).type != "cpu":
        return backend.get_array_module(a).matmul(a, b)
    return [cpu_threads.matmul(a[i], b[i]) for i in range(a.shape[0])]


def gemm_case(device, rng, n, x_shape, w_shape, stride, groups, x_grad):
    """The GEMMs of an im2col convolution of this shape, on ready contiguous arrays."""
    c, h, w = x_shape
    o, cg, kh, kw = w_shape
    oh, ow = -(-h // stride), -(-w // stride)
    m, k, og = n * oh * ow, cg * kh * kw, o // groups

    def arr(*shape):
        return backend.to_device(rng.standard_normal(shape, dtype=np.float32), device)
    xp = backend.get_array_module(arr(1))
    col, wmat, gy_t = arr(groups, m, k), arr(groups, k, og), arr(groups, og, m)
    gy = xp.ascontiguousarray(gy_t.transpose(0, 2, 1))
    wt = xp.ascontiguousarray(wmat.transpose(0, 2, 1))

    def run():
        _, tf = _timed(device, lambda: _gemm(col, wmat))
        _, tb = _timed(device, lambda: _gemm(gy_t, col))  # weight gradient (g, O/g, K)
        if x_grad:
            _, tb2 = _timed(device, lambda: _gemm(gy, wt))  # column gradient (g, M, K)
            tb += tb2
        return tf, tb
    flops = 2.0 * groups * m * k * og
    return run, flops, flops * (2 if x_grad else 1)


def copy_case(device, rng, shape):
    x = backend.to_device(rng.standard_normal(shape, dtype=np.float32), device)

    def run():
        _, t = _timed(device, x.copy)
        return t, t
    return run, 2.0 * x.nbytes


def peak_gemm(device, size, iters) -> float:
    """GFLOP/s of a square float32 GEMM, the device's practical peak."""
    rng = np.random.default_rng(0)
    a = backend.to_device(rng.standard_normal((size, size), dtype=np.float32), device)
    b = backend.to_device(rng.standard_normal((size, size), dtype=np.float32), device)
    times = []
    for i in range(iters + 1):
        _, t = _timed(device, lambda: _gemm(a, b))
        if i:
            times.append(t)
    return 2.0 * size**3 / median(times) / 1e9


# ---- the four families -------------------------------------------------------------------------
def bench_convs(names, args, device, torch, rng):
    rows = []
    convs = VARIANTS[args.variant][0]
    for name in names:
        x_shape, w_shape, stride, groups, x_grad = convs[name]
        shape = (args.batch_size,) + x_shape
        w = rng.standard_normal(w_shape, dtype=np.float32) * 0.05
        b = rng.standard_normal(w_shape[0], dtype=np.float32) * 0.05
        out_hw = tuple(-(-s // stride) for s in x_shape[1:])
        x_probe = backend.to_device(np.zeros((1,) + x_shape, np.float32), device)
        wanted = os.environ.get("MINIDL_CONV_ALGORITHM", "auto").strip() or "auto"   # as conv2d reads it
        algorithm = dispatch.conv_algorithm(x_probe, tuple(w_shape[2:]), (stride, stride), groups, out_hw,
                                              wanted)

        def conv_case(alg):
            return minidl_case(device, rng, shape, lambda x, w, b: F.conv2d(
                x, w, b, stride=stride, padding="same", groups=groups, algorithm=alg), x_grad, (w, b),
                channels_last=name != "conv1")
        cases = [("minidl", conv_case(algorithm))]
        if algorithm != "im2col":
            cases.append(("im2col", conv_case("im2col")))
        gemm, flops_f, flops_b = gemm_case(device, rng, args.batch_size, x_shape, w_shape, stride, groups, x_grad)
        cases.append(("gemm", gemm))
        if torch is not None:
            (pt, pb), (pl, pr) = (same_pads(s, k, stride) for s, k in zip(x_shape[1:], w_shape[2:]))
            tfn = torch.nn.functional

            def tconv(x, w, b, pads=(pl, pr, pt, pb)):
                if pads[0] == pads[1] and pads[2] == pads[3]:
                    return tfn.conv2d(x, w, b, stride, (pads[2], pads[0]), 1, groups)
                return tfn.conv2d(tfn.pad(x, pads), w, b, stride, 0, 1, groups)
            cases.append(("torch", torch_case(torch, device, rng, shape, tconv, x_grad, (w, b))))
        t = time_fwd_bwd(cases, args.warmup, args.iters)
        row = {"op": name, "x": shape, "w": w_shape, "stride": stride, "groups": groups, "input_grad": x_grad,
               "algorithm": algorithm, "flops_fwd": flops_f, "flops_bwd": flops_b}
        for fw, (tf, tb) in t.items():
            row.update({f"{fw}_fwd_s": tf, f"{fw}_bwd_s": tb,
                        f"{fw}_fwd_gflops": flops_f / tf / 1e9, f"{fw}_bwd_gflops": flops_b / tb / 1e9})
        row["roofline_fwd"] = t["gemm"][0] / t["minidl"][0]
        row["roofline_bwd"] = t["gemm"][1] / t["minidl"][1]
        if "im2col" in t:  # Winograd's speed-up over the im2col path on the same conv
            row["speedup_over_im2col_fwd"] = t["im2col"][0] / t["minidl"][0]
            row["speedup_over_im2col_bwd"] = t["im2col"][1] / t["minidl"][1]
        rows.append(row)
        print(f"  {name} done", flush=True)
    return rows


def bench_memory_bound(names, args, device, torch, rng):
    rows = []
    _, pools, norms, relus, _ = VARIANTS[args.variant]
    for name in names:
        family = name.rstrip("0123456789")
        shape = (args.batch_size,) + {"pool": pools, "bn": norms, "relu": relus}[family][name]
        c = shape[1]
        params = ()
        if family == "pool":
            fwd = lambda x: F.max_pool2d(x, 3, 2)  # noqa: E731
            tfwd = lambda x: torch.nn.functional.max_pool2d(x, 3, 2)  # noqa: E731
        elif family == "bn":
            params = (np.ones(c, np.float32), np.zeros(c, np.float32))
            run_m = backend.to_device(np.zeros(c, np.float32), device)
            run_v = backend.to_device(np.ones(c, np.float32), device)
            fwd = lambda x, w, b: F.batch_norm(x, w, b, run_m, run_v, True, 0.01, 1e-3)  # noqa: E731
            if torch is not None:
                tm = torch.zeros(c, device=common.torch_device(device))
                tv = torch.ones(c, device=common.torch_device(device))
                tfwd = lambda x, w, b: torch.nn.functional.batch_norm(x, tm, tv, w, b, True, 0.01, 1e-3)  # noqa
        else:
            fwd = F.relu
            tfwd = lambda x: torch.nn.functional.relu(x)  # noqa: E731
        cases = [("minidl", minidl_case(device, rng, shape, fwd, True, params, channels_last=True))]
        copy, copy_bytes = copy_case(device, rng, shape)
        cases.append(("copy", copy))
        if torch is not None:
            cases.append(("torch", torch_case(torch, device, rng, shape, tfwd, True, params)))
        t = time_fwd_bwd(cases, args.warmup, args.iters)
        x_bytes = 4.0 * np.prod(shape)
        y_bytes = x_bytes
        if family == "pool":
            oh = (shape[2] - 3) // 2 + 1
            y_bytes = x_bytes * oh * oh / (shape[2] * shape[3])
        bytes_f = x_bytes + y_bytes
        bytes_b = y_bytes + x_bytes + (0 if family == "pool" else x_bytes)
        copy_bw = copy_bytes / t["copy"][0]
        row = {"op": name, "x": shape, "bytes_fwd": bytes_f, "bytes_bwd": bytes_b, "copy_gbs": copy_bw / 1e9}
        for fw in ("minidl", "torch"):
            if fw in t:
                tf, tb = t[fw]
                row.update({f"{fw}_fwd_s": tf, f"{fw}_bwd_s": tb, f"{fw}_fwd_gbs": bytes_f / tf / 1e9,
                            f"{fw}_bwd_gbs": bytes_b / tb / 1e9})
        row["bandwidth_fwd"] = bytes_f / t["minidl"][0] / copy_bw
        row["bandwidth_bwd"] = bytes_b / t["minidl"][1] / copy_bw
        rows.append(row)
        print(f"  {name} done", flush=True)
    return rows


def tables(conv_rows, mem_rows, has_torch) -> str:
    out = []
    if conv_rows:
        headers = ["conv", "algorithm", "fwd ms", "bwd ms", "fwd GF/s", "bwd GF/s", "roofline fwd", "roofline bwd",
                   "gemm fwd ms", "gemm bwd ms", "im2col fwd", "im2col bwd", "x im2col"] + (
                       ["torch fwd", "torch bwd", "vs torch"] if has_torch else [])
        rows = []
        for r in conv_rows:
            line = [r["op"], r["algorithm"], 1e3 * r["minidl_fwd_s"], 1e3 * r["minidl_bwd_s"], r["minidl_fwd_gflops"],
                    r["minidl_bwd_gflops"], r["roofline_fwd"], r["roofline_bwd"], 1e3 * r["gemm_fwd_s"],
                    1e3 * r["gemm_bwd_s"]]
            if "im2col_fwd_s" in r:
                total_i, total_m = r["im2col_fwd_s"] + r["im2col_bwd_s"], r["minidl_fwd_s"] + r["minidl_bwd_s"]
                line += [1e3 * r["im2col_fwd_s"], 1e3 * r["im2col_bwd_s"], total_i / total_m]
            else:
                line += ["-", "-", "-"]
            if has_torch:
                total_t, total_m = r["torch_fwd_s"] + r["torch_bwd_s"], r["minidl_fwd_s"] + r["minidl_bwd_s"]
                line += [1e3 * r["torch_fwd_s"], 1e3 * r["torch_bwd_s"], total_t / total_m]
            rows.append(line)
        out.append(format_table(headers, rows))
    if mem_rows:
        headers = ["op", "shape", "fwd ms", "bwd ms", "fwd GB/s", "bwd GB/s", "copy GB/s", "bw fwd", "bw bwd"] + (
            ["torch fwd", "torch bwd", "vs torch"] if has_torch else [])
        rows = []
        for r in mem_rows:
            line = [r["op"], "x".join(map(str, r["x"])), 1e3 * r["minidl_fwd_s"], 1e3 * r["minidl_bwd_s"],
                    r["minidl_fwd_gbs"], r["minidl_bwd_gbs"], r["copy_gbs"], r["bandwidth_fwd"], r["bandwidth_bwd"]]
            if has_torch:
                total_t, total_m = r["torch_fwd_s"] + r["torch_bwd_s"], r["minidl_fwd_s"] + r["minidl_bwd_s"]
                line += [1e3 * r["torch_fwd_s"], 1e3 * r["torch_bwd_s"], total_t / total_m]
            rows.append(line)
        out.append(format_table(headers, rows))
    note = ("roofline = GEMM time / conv time (for Winograd: the im2col GEMMs' time, which it beats by needing "
            "fewer multiplications); x im2col = the im2col path's time (fwd+bwd) / the chosen algorithm's; "
            "bw = achieved / copy bandwidth")
    if has_torch:
        note += "; vs torch = torch (fwd+bwd) / minidl (fwd+bwd), < 1: minidl slower"
    return "\n\n".join(out + [note])


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--variant", default="seed", choices=sorted(VARIANTS), help="AlexNet variant's shapes (default seed)")
    p.add_argument("--batch-size", type=int, default=None, help="batch of every shape (default 32 for seed, "
                   "128 for cifar)")
    p.add_argument("--iters", type=int, default=5, help="timed rounds (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--only", help="comma-separated subset, e.g. conv1,pool1,bn1,relu1")
    p.add_argument("--peak-size", type=int, default=None, help="square GEMM size for the peak (default 2048 "
                   "on CPU, 8192 on CUDA; 0 skips)")
    p.add_argument("--tf32", action="store_true", help="GPU: allow TF32 matrix products on both sides")
    p.add_argument("--skip-torch", action="store_true", help="time minidl only")
    common.add_threads_argument(p)
    p.add_argument("--json", help="output file (default benchmarks/results/kernels_<device>.json)")
    return p


def run(args) -> dict:
    device, torch, threads, precision = common.setup(args)
    convs, pools, norms, relus, default_batch = VARIANTS[args.variant]
    args.batch_size = args.batch_size or default_batch
    names = list(convs) + list(pools) + list(norms) + list(relus)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise SystemExit(f"bench_kernels: unknown --only names {unknown}; choose from {names}")
        names = wanted
    rng = np.random.default_rng(0)
    peak_size = args.peak_size if args.peak_size is not None else (2048 if device.type == "cpu" else 8192)
    print(f"kernels of the '{args.variant}' AlexNet on {device}, batch {args.batch_size}, {args.warmup} warmup + "
          f"{args.iters} timed rounds, medians; threads: {threads}; precision {precision}")
    payload = {"benchmark": "kernels", "device": str(device), "variant": args.variant, "batch_size": args.batch_size,
               "iters": args.iters, "precision": precision, "threads": threads,
               "machine": common.machine_info(device)}
    if peak_size:
        payload["peak_gemm_gflops"] = peak_gemm(device, peak_size, 3)
        print(f"square {peak_size} float32 GEMM: {payload['peak_gemm_gflops']:.1f} GFLOP/s")
    payload["convs"] = bench_convs([n for n in names if n in convs], args, device, torch, rng)
    payload["memory_bound"] = bench_memory_bound([n for n in names if n not in convs], args, device, torch, rng)
    print(tables(payload["convs"], payload["memory_bound"], torch is not None))
    payload["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    path = common.write_json(args.json or common.default_json("kernels", device), payload)
    print(f"wrote {path}")
    return payload


def main(argv=None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
