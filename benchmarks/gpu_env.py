#!/usr/bin/env python3
"""The environment step of gpu_check.sh: versions, then the two GPU libraries minidl needs, tried once.

    python benchmarks/gpu_env.py --device cuda      # versions + NVRTC + cuBLAS, exit 1 if either fails
    python benchmarks/gpu_env.py --device cpu       # versions only

On CUDA it compiles and launches one of minidl's own raw kernels (batch norm's
centred affine map, through NVRTC, as training will) and runs one float32 matrix
product (cuBLAS), each against NumPy. A missing or broken NVRTC or cuBLAS then shows
here, in the first seconds of a device run, with the library named, instead of as
a failure in every later step. Then it reports, without failing, which products a
fresh CuPy runs in TensorFloat-32 under ``CUPY_TF32=1`` (what ``--tf32`` sets): its
2-D GEMMs (the dense layers') and its batched matmul (the convolutions') are two
code paths in CuPy, and by CuPy's source only the first honours the setting.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from minidl import backend  # noqa: E402


def versions() -> list[str]:
    lines = [f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs",
             f"numpy {np.__version__}"]
    for name in ("cupy", "torch", "pytest", "hypothesis"):
        try:
            module = __import__(name)
            lines.append(f"{name} {module.__version__}")
        except Exception as exc:  # absent or broken: say which, and go on
            lines.append(f"{name} missing: {type(exc).__name__}: {exc}")
    lines.append(f"cuda available: {backend.is_cuda_available()} ({backend.cuda_device_count()} GPU(s)); "
                 f"CUPY_TF32={os.environ.get('CUPY_TF32', '(unset)')}")
    return lines


def check_nvrtc(device) -> str:
    """Compile (NVRTC) and launch minidl's centred-affine kernel; compare with NumPy."""
    from minidl.kernels.cuda import launches
    rng = np.random.default_rng(0)
    rows, center, scale, shift = (rng.standard_normal(shape).astype(np.float32)
                                  for shape in ((6, 33), (6, 1), (6, 1), (6, 1)))
    expected = (rows - center) * scale + shift
    on_device = [backend.to_device(a, device) for a in (rows, center, scale, shift)]
    got = backend.to_numpy(launches.centered_affine(*on_device))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    return "NVRTC: compiled and ran minidl_centered_affine, equal to NumPy"


def check_cublas(device) -> str:
    """One float32 matrix product on the GPU (cuBLAS), against NumPy in float64."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((192, 160)).astype(np.float32), rng.standard_normal((160, 224)).astype(np.float32)
    xp_a, xp_b = backend.to_device(a, device), backend.to_device(b, device)
    with backend.device_context(device):
        got = backend.to_numpy(xp_a @ xp_b)
    error = float(np.abs(got - a.astype(np.float64) @ b).max())
    tf32 = os.environ.get("CUPY_TF32", "0") == "1"
    limit = 5e-2 if tf32 else 1e-3  # TF32 keeps 10 mantissa bits; float32 products of 160 terms stay near 1e-5
    if not error <= limit:
        raise AssertionError(f"float32 product differs from NumPy by {error:.3g} (limit {limit:g})")
    return f"cuBLAS: float32 (192x160) @ (160x224), max |error| {error:.2e}{' (TF32 on)' if tf32 else ''}"


_TF32_PROBE = r"""
import sys
import numpy as np, cupy
cupy.cuda.Device(int(sys.argv[1])).use()
one = np.float32(1 + 2.0 ** -12)   # TF32 keeps 10 mantissa bits: rounds to 1
a, b = cupy.full((1, 4, 8), one, dtype=cupy.float32), cupy.ones((1, 8, 4), dtype=cupy.float32)
exact = 8 * float(one)
print(float((a[0] @ b[0])[0, 0]) != exact, float(cupy.matmul(a, b)[0, 0, 0]) != exact)
"""


def check_tf32(device) -> str:
    """Which products a fresh CuPy runs in TF32 under CUPY_TF32=1 (information, never a failure)."""
    import subprocess
    cupy = sys.modules.get("cupy")
    if getattr(cupy, "__file__", None) is None:
        return "TF32: not probed (no real CuPy)"
    done = subprocess.run([sys.executable, "-c", _TF32_PROBE, str(device.index)], capture_output=True, text=True,
                          env=dict(os.environ, CUPY_TF32="1"), timeout=120)
    if done.returncode != 0:
        return f"TF32: probe failed ({done.stderr.strip().splitlines()[-1:]})"
    two_d, batched = (word == "True" for word in done.stdout.split())
    say = {True: "TF32", False: "float32"}
    return (f"TF32 under CUPY_TF32=1 (--tf32): 2-D products (dense layers) {say[two_d]}, batched matmul "
            f"(convolutions) {say[batched]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cpu, cuda or cuda:N (default cuda)")
    args = parser.parse_args(argv)
    print("\n".join(versions()), flush=True)
    try:
        device = backend.parse_device(args.device)
    except backend.DeviceError as exc:
        print(f"gpu_env: {exc}", file=sys.stderr)
        return 1
    if device.type == "cpu":
        print("device cpu: no GPU libraries to check")
        return 0
    failed = False
    for library, check in (("NVRTC", check_nvrtc), ("cuBLAS", check_cublas)):
        try:
            print(check(device), flush=True)
        except Exception as exc:  # report every library's failure, then fail the step
            print(f"gpu_env: {library} check failed on {device}: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed = True
    print(check_tf32(device), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
