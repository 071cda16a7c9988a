"""Scratch timing: minidl conv2d / max_pool2d forward+backward vs PyTorch on AlexNet-seed shapes.

Run: PYTHONPATH=. python benchmarks/scratch_conv.py [repeats]
(OPENBLAS_NUM_THREADS=1 TORCH_THREADS=1 for single-thread numbers; TORCH_THREADS defaults to 2.)
Not a test; the real benchmark suite is benchmarks/bench_kernels.py.
"""
import sys
import time

import numpy as np

import minidl
import minidl.functional as F

SHAPES = [  # name, x shape, w shape, stride, padding, groups, input grad needed
    ("conv1", (32, 3, 224, 224), (96, 3, 11, 11), 4, "same", 1, False),
    ("conv2", (32, 96, 27, 27), (256, 48, 5, 5), 1, "same", 2, True),
    ("conv3", (32, 256, 13, 13), (384, 256, 3, 3), 1, "same", 1, True),
    ("conv4", (32, 384, 13, 13), (384, 192, 3, 3), 1, "same", 2, True),
    ("conv5", (32, 384, 13, 13), (256, 192, 3, 3), 1, "same", 2, True),
]
POOLS = [("pool1", (32, 96, 56, 56)), ("pool2", (32, 256, 27, 27)), ("pool5", (32, 256, 13, 13))]


def best(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(repeats=3):
    rng = np.random.default_rng(0)
    try:
        import torch
        import torch.nn.functional as TF
        torch.set_num_threads(int(__import__("os").environ.get("TORCH_THREADS", "2")))
    except ImportError:
        torch = None
    total_m = total_t = 0.0
    for name, xs, ws, s, pad, g, need_x in SHAPES:
        x = rng.standard_normal(xs, dtype=np.float32)
        w = rng.standard_normal(ws, dtype=np.float32) * 0.01
        b = np.zeros(ws[0], np.float32)
        mx, mw, mb = minidl.tensor(x, requires_grad=need_x), minidl.tensor(w, requires_grad=True), \
            minidl.tensor(b, requires_grad=True)
        y0 = F.conv2d(mx, mw, mb, stride=s, padding=pad, groups=g)
        gy = rng.standard_normal(y0.shape, dtype=np.float32)

        def run_m():
            F.conv2d(mx, mw, mb, stride=s, padding=pad, groups=g).backward(gy)

        def fwd_m():
            with minidl.no_grad():
                F.conv2d(mx, mw, mb, stride=s, padding=pad, groups=g)
        tm, tfm = best(run_m, repeats), best(fwd_m, repeats)
        line = f"{name}: minidl fwd {tfm*1e3:7.1f} ms, fwd+bwd {tm*1e3:7.1f} ms"
        total_m += tm
        if torch is not None:
            tx = torch.tensor(x, requires_grad=need_x)
            tw, tb = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
            tgy = torch.tensor(gy)

            def torch_conv():
                if s == 1:
                    return TF.conv2d(tx, tw, tb, padding="same", groups=g)
                # torch's "same" needs stride 1: pad as TF does (3 top/left, 4 bottom/right).
                return TF.conv2d(TF.pad(tx, (3, 4, 3, 4)), tw, tb, stride=s, groups=g)

            def run_t():
                torch_conv().backward(tgy)

            def fwd_t():
                with torch.no_grad():
                    torch_conv()
            tt, tft = best(run_t, repeats), best(fwd_t, repeats)
            total_t += tt
            line += f" | torch fwd {tft*1e3:7.1f} ms, fwd+bwd {tt*1e3:7.1f} ms | speed ratio {tt/tm:.2f}"
        print(line, flush=True)
    for name, xs in POOLS:
        x = rng.standard_normal(xs, dtype=np.float32)
        mx = minidl.tensor(x, requires_grad=True)
        gy = rng.standard_normal(F.max_pool2d(mx, 3, 2).shape, dtype=np.float32)

        def run_m():
            F.max_pool2d(mx, 3, 2).backward(gy)
        tm = best(run_m, repeats)
        total_m += tm
        line = f"{name}: minidl fwd+bwd {tm*1e3:7.1f} ms"
        if torch is not None:
            tx, tgy = torch.tensor(x, requires_grad=True), torch.tensor(gy)
            tt = best(lambda: TF.max_pool2d(tx, 3, 2).backward(tgy), repeats)
            total_t += tt
            line += f" | torch {tt*1e3:7.1f} ms | speed ratio {tt/tm:.2f}"
        print(line, flush=True)
    print(f"total minidl {total_m*1e3:.0f} ms" + (f", torch {total_t*1e3:.0f} ms, ratio {total_t/total_m:.2f}"
                                                  if torch is not None else ""))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
