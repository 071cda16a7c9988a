"""The hand-written CUDA kernels on a real GPU, against the xp references on CuPy arrays (skipped without CUDA).

The other two layers of these checks (nvcc, and the CPU emulation of the same sources)
are in test_raw_kernels.py.
"""

import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.kernels
from minidl import backend
from minidl.data import transforms
from minidl.functional import conv as reference_conv
from minidl.functional.pooling import MaxPool2d
from minidl.kernels.cuda import launches
from minidl.kernels.cuda.pooling import RawMaxPool2d

from support.cuda_cases import FLOATS, POOL_CASES, WINDOW_CASES, case_id, needs_cuda, out_hw, tied_input


# ---------------------------------------------------------------------------
# GPU: raw kernels against the references on CuPy arrays
# ---------------------------------------------------------------------------

def _both_paths(monkeypatch, fn):
    """fn() with the fast kernels, then with the references (checking which ran); host copies."""
    compiled, real = [], backend.raw_kernel
    monkeypatch.setattr(backend, "raw_kernel", lambda source, name, options=(): compiled.append(name)
                        or real(source, name, options))
    monkeypatch.delenv("MINIDL_KERNELS", raising=False)
    raw = fn()
    assert compiled, "no raw kernel ran"
    compiled.clear()
    with minidl.kernels.use("reference"):
        xp_result = fn()
    assert not compiled, f"MINIDL_KERNELS=reference still ran {compiled}"
    as_host = (lambda r: tuple(backend.to_numpy(a) for a in r)) if isinstance(raw, tuple) else backend.to_numpy
    return as_host(raw), as_host(xp_result)


def _close(got, want, dtype):
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", WINDOW_CASES, ids=case_id)
def test_im2col_col2im_cuda(rng, case, dtype):
    shape, kernel, stride, pads = case
    x = backend.to_device(rng.standard_normal(shape).astype(dtype), "cuda")
    col_shape = (shape[1],) + kernel + (shape[0],) + out_hw(case)
    gcol = backend.to_device(rng.standard_normal(col_shape).astype(dtype), "cuda")
    col_raw = backend.to_numpy(launches.im2col(x, kernel, stride, pads, out_hw(case)))
    gx_raw = backend.to_numpy(launches.col2im(gcol, shape, stride, pads))
    np.testing.assert_array_equal(col_raw, backend.to_numpy(reference_conv.im2col(x, kernel, stride, pads)))
    _close(gx_raw, backend.to_numpy(reference_conv.col2im(gcol, shape, stride, pads)), dtype)


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_max_pool_cuda(rng, case, dtype):
    shape, kernel, stride, pads = case
    x = backend.to_device(tied_input(rng, shape, dtype), "cuda")
    gy = backend.to_device(rng.standard_normal((shape[0], shape[1]) + out_hw(case)).astype(dtype), "cuda")
    raw, ref = RawMaxPool2d(kernel, stride, pads), MaxPool2d(kernel, stride, pads)
    y_raw, y_ref = raw.forward(x), ref.forward(x)
    gx_raw, gx_ref = raw.backward(gy, (True,))[0], ref.backward(gy)
    np.testing.assert_array_equal(backend.to_numpy(y_raw), backend.to_numpy(y_ref))
    np.testing.assert_array_equal(backend.to_numpy(raw.argmax), backend.to_numpy(ref.argmax))
    _close(backend.to_numpy(gx_raw), backend.to_numpy(gx_ref), dtype)


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
def test_public_functions_cuda(monkeypatch, rng, dtype):
    """conv2d and max_pool2d forward and backward, and the resize (up along H, down along W)."""
    x0 = rng.standard_normal((4, 4, 27, 25)).astype(dtype)
    w0 = rng.standard_normal((6, 2, 5, 5)).astype(dtype)
    gy = rng.standard_normal((4, 6, 3, 3)).astype(dtype)

    def run():
        x = minidl.tensor(x0, requires_grad=True, device="cuda")
        w = minidl.tensor(w0, requires_grad=True, device="cuda")
        y = F.max_pool2d(F.conv2d(x, w, stride=4, padding="same", groups=2), 3, stride=2)
        (y * minidl.tensor(gy, device="cuda")).sum().backward()
        images = transforms.resize_bilinear(backend.to_device(x0[:, :3], "cuda"), (40, 30))
        return y.data, x.grad.data, w.grad.data, images

    for got, want in zip(*_both_paths(monkeypatch, run)):
        _close(got, want, dtype)


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_cuda(monkeypatch, rng, dtype, training):
    """batch_norm forward and backward with the raw centred-affine kernels and with the reference."""
    x0 = rng.standard_normal((8, 16, 7, 9)).astype(dtype)
    gamma0, beta0 = rng.standard_normal(16).astype(dtype), rng.standard_normal(16).astype(dtype)
    gy = backend.to_device(rng.standard_normal(x0.shape).astype(dtype), "cuda")

    def run():
        x, gamma, beta = (minidl.tensor(a, requires_grad=True, device="cuda") for a in (x0, gamma0, beta0))
        running = [backend.to_device(a, "cuda") for a in (np.zeros(16, dtype), np.ones(16, dtype))]
        y = F.batch_norm(x, gamma, beta, *running, training=training)
        y.backward(gy)
        return y.data, x.grad.data, gamma.grad.data, beta.grad.data

    for got, want in zip(*_both_paths(monkeypatch, run)):
        tol = 1e-4 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
