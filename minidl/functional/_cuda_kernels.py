"""Hand-written CUDA kernels: when they run, and the Python side of each launch.

The ``xp`` code of every kernel runs unchanged on CuPy, but some of it is slow
there: im2col is one big strided copy, col2im and pooling loop over the KH*KW
kernel offsets with one small CuPy launch (or several) per offset, and batch
norm's affine maps take a pass per operation. The kernels in
``_cuda_sources.py`` do each job in a single pass. The ``xp`` code stays the
reference: every raw kernel is tested against it (tests/test_cuda_kernels.py),
on a GPU when there is one and, without one, by compiling the same CUDA C with
g++ and running it on NumPy arrays (tests/cuda_emulation.py).

When: ``wanted(x)`` is True for a CuPy float32/float64 array unless the
environment variable ``MINIDL_RAW_KERNELS`` is ``0`` (read at every call, so one
process can time or compare both paths). NumPy arrays always take the ``xp`` code,
decided by one type check, so the CPU path is unchanged.

The launch wrappers below are written against ``xp`` too (they allocate with the
input's array module and launch through ``backend.raw_kernel``), which is what
lets the tests drive them with NumPy arrays and an emulated kernel.

Besides the wrappers, this module holds batch norm's per-channel affine passes,
``channel_affine`` and ``channel_affine2``, with their ``xp`` twins.
"""
from __future__ import annotations

import os

import numpy as np

from .. import backend
from ._cuda_sources import KERNEL_OPTIONS, cuda_source

# Threads per block (a multiple of the 32-thread warp; the kernels use no shared
# memory, so nothing else constrains it) and the most blocks per launch: plenty
# to fill any GPU, and the grid-stride loops cover arrays larger than the grid.
_BLOCK = 256
_MAX_BLOCKS = 65535
_RAW_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def raw_kernels_enabled() -> bool:
    """False when the environment sets ``MINIDL_RAW_KERNELS=0`` (the xp code then runs on CUDA too)."""
    return os.environ.get("MINIDL_RAW_KERNELS", "1").strip() != "0"


def wanted(x) -> bool:
    """True when ``x`` should go to a raw kernel: a CuPy float32/float64 array, kernels enabled."""
    if isinstance(x, np.ndarray) or backend.get_array_module(x) is np:
        return False  # the CPU path: one type check, then the xp code as before
    return x.dtype in _RAW_DTYPES and raw_kernels_enabled()


def _launch(name: str, total: int, args: tuple, real_dtype, index_dtype=None) -> None:
    """Run kernel ``name`` over ``total`` output elements; Python ints go as 64-bit ``long long``."""
    if total == 0:
        return  # an empty grid is not a valid launch, and there is nothing to do
    kernel = backend.raw_kernel(cuda_source(name, real_dtype, index_dtype), name, KERNEL_OPTIONS)
    blocks = min(-(-total // _BLOCK), _MAX_BLOCKS)
    kernel((blocks,), (_BLOCK,), tuple(np.int64(a) if isinstance(a, int) else a for a in args))


def _window_args(x_shape, kernel, stride, pads, out_hw) -> tuple:
    """(N, C, H, W, KH, KW, OH, OW, SH, SW, top, left): the window kernels' geometry, in their order."""
    (top, _), (left, _) = pads
    return tuple(int(v) for v in (*x_shape, *kernel, *out_hw, *stride, top, left))


# ---------------------------------------------------------------------------
# Convolution and pooling windows
# ---------------------------------------------------------------------------

def im2col(x, kernel: tuple, stride: tuple, pads: tuple, out_hw: tuple):
    """``_im2col.im2col`` in one kernel: col[c,kh,kw,n,oh,ow] = xpad[n,c,oh*SH+kh,ow*SW+kw].

    Args:
        x: float32/float64 images; kernel, stride (KH, KW), (SH, SW); pads
            ((top, bottom), (left, right)), zeros; out_hw (OH, OW) from ``output_hw``.
    Returns:
        col, contiguous.

    Shapes: x (N,C,H,W) -> col (C,KH,KW,N,OH,OW).
    """
    xp = backend.get_array_module(x)
    n, c = x.shape[:2]
    with backend.device_context(backend.device_of(x)):
        x = xp.ascontiguousarray(x)
        col = xp.empty((c, *kernel, n, *out_hw), dtype=x.dtype)
        _launch("minidl_im2col", col.size, (x, col) + _window_args(x.shape, kernel, stride, pads, out_hw),
                x.dtype)
    return col


def col2im(col, x_shape: tuple, stride: tuple, pads: tuple):
    """``_im2col.col2im`` in one kernel: each pixel sums the columns of the windows that cover it.

    Shapes: col (C,KH,KW,N,OH,OW) -> gx x_shape = (N,C,H,W), contiguous.
    """
    xp = backend.get_array_module(col)
    c, kh, kw, n, oh, ow = col.shape
    with backend.device_context(backend.device_of(col)):
        col = xp.ascontiguousarray(col)
        gx = xp.empty(tuple(x_shape), dtype=col.dtype)
        _launch("minidl_col2im", gx.size,
                (col, gx) + _window_args(x_shape, (kh, kw), stride, pads, (oh, ow)), col.dtype)
    assert gx.shape == (n, c) + tuple(x_shape[2:])
    return gx


def max_pool2d_forward(x, kernel: tuple, stride: tuple, pads: tuple, out_hw: tuple, index_dtype):
    """Max pooling forward as ``pooling.MaxPool2d``'s xp loop computes it, in one kernel.

    Args:
        x: float32/float64 images; kernel, stride, pads as max_pool2d resolved them
            (padding reads as -inf); out_hw (OH, OW); index_dtype: argmax's dtype.
    Returns:
        y and argmax (the winning offset kh*KW + kw of each window, first maximum on ties).

    Shapes: x (N,C,H,W) -> y, argmax (N,C,OH,OW).
    """
    xp = backend.get_array_module(x)
    with backend.device_context(backend.device_of(x)):
        x = xp.ascontiguousarray(x)
        y = xp.empty(x.shape[:2] + tuple(out_hw), dtype=x.dtype)
        argmax = xp.empty(y.shape, dtype=index_dtype)
        args = (x, y, argmax) + _window_args(x.shape, kernel, stride, pads, out_hw) + (x.dtype.type(-np.inf),)
        _launch("minidl_max_pool2d_forward", y.size, args, x.dtype, argmax.dtype)
    return y, argmax


def max_pool2d_backward(gy, argmax, x_shape: tuple, kernel: tuple, stride: tuple, pads: tuple):
    """Max pooling backward in one kernel: each input pixel sums gy over the windows that chose it.

    Shapes: gy, argmax (N,C,OH,OW) -> gx x_shape = (N,C,H,W).
    """
    xp = backend.get_array_module(gy)
    with backend.device_context(backend.device_of(gy)):
        gy = xp.ascontiguousarray(gy)
        argmax = xp.ascontiguousarray(argmax)
        gx = xp.empty(tuple(x_shape), dtype=gy.dtype)
        args = (gy, argmax, gx) + _window_args(x_shape, kernel, stride, pads, gy.shape[2:])
        _launch("minidl_max_pool2d_backward", gx.size, args, gy.dtype, argmax.dtype)
    assert gx.shape == tuple(x_shape)
    return gx


# ---------------------------------------------------------------------------
# Bilinear resize
# ---------------------------------------------------------------------------

def resize_bilinear(x, row_taps: tuple, col_taps: tuple):
    """``data.transforms.resize_bilinear``'s two interpolation passes in one kernel.

    Args:
        x: float32/float64 images.
        row_taps, col_taps: (lo, hi, w_hi) host arrays of ``_linear_taps`` for the
            rows (length OH) and the columns (length OW); identity taps (lo = hi = i,
            w_hi = 0) leave an axis as it is.
    Returns:
        y, contiguous, x's dtype.

    Shapes: x (N,C,H,W) -> y (N,C,OH,OW).
    """
    xp = backend.get_array_module(x)
    device = backend.device_of(x)
    n, c, h, w = x.shape

    def on_device(taps):
        lo, hi, w_hi = taps
        return (backend.to_device(np.ascontiguousarray(lo, dtype=np.int64), device),
                backend.to_device(np.ascontiguousarray(hi, dtype=np.int64), device),
                backend.to_device(np.ascontiguousarray(w_hi, dtype=x.dtype), device))

    with backend.device_context(device):
        x = xp.ascontiguousarray(x)
        row_lo, row_hi, row_w = on_device(row_taps)
        col_lo, col_hi, col_w = on_device(col_taps)
        oh, ow = row_lo.shape[0], col_lo.shape[0]
        y = xp.empty((n, c, oh, ow), dtype=x.dtype)
        _launch("minidl_resize_bilinear", y.size,
                (x, y, row_lo, row_hi, row_w, col_lo, col_hi, col_w, n * c, h, w, oh, ow), x.dtype)
    return y


# ---------------------------------------------------------------------------
# Batch norm's per-channel affine passes
# ---------------------------------------------------------------------------

def _check_affine(fn: str, x, per_channel: dict) -> None:
    """Raise ValueError unless x is (N, C, ...) and each per-channel array holds C values."""
    if x.ndim < 2:
        raise ValueError(f"{fn}: expected an array (N, C, ...), got shape {tuple(x.shape)}")
    for name, value in per_channel.items():
        if value.size != x.shape[1]:
            raise ValueError(f"{fn}: expected {name} with {x.shape[1]} values (one per channel of shape "
                             f"{tuple(x.shape)}), got shape {tuple(value.shape)}")


def _broadcastable(value, x):
    """A per-channel array as (1, C, 1, ...) in x's dtype, to broadcast against x (N, C, ...)."""
    return value.reshape((1, -1) + (1,) * (x.ndim - 2)).astype(x.dtype, copy=False)


def _flat(xp, value, dtype):
    """A per-channel array as a contiguous (C,) array of ``dtype``, the raw kernels' layout."""
    return xp.ascontiguousarray(value.reshape(-1).astype(dtype, copy=False))


def _raw_output(fn: str, xp, out, like):
    """``out`` checked for a raw kernel (like's shape and dtype, contiguous), or a new array."""
    if out is None:
        return xp.empty_like(like)
    if out.shape != like.shape or out.dtype != like.dtype or not out.flags.c_contiguous:
        raise ValueError(f"{fn}: out must be a contiguous {like.dtype} array of shape {tuple(like.shape)}, "
                         f"got {'a non-contiguous ' if not out.flags.c_contiguous else ''}{out.dtype} array "
                         f"of shape {tuple(out.shape)}")
    return out


def channel_affine_xp(x, scale, shift, out=None):
    """The ``xp`` twin of ``channel_affine`` (what the CPU runs): two in-place passes."""
    xp = backend.get_array_module(x)
    out = xp.multiply(x, _broadcastable(scale, x), out=out)
    out += _broadcastable(shift, x)
    return out


def channel_affine(x, scale, shift, out=None):
    """y = x * scale[c] + shift[c] for every element of channel c (batch norm's affine map).

    A raw kernel on CUDA (one pass), ``channel_affine_xp`` elsewhere; both round the
    product and the sum separately, so they agree exactly.

    Args:
        x: (N, C, *S) float array.
        scale, shift: C values each, shaped (C,) or e.g. (1, C, 1, 1); cast to x's dtype.
        out: optional result array (x's shape; on CUDA also x's dtype and contiguous);
            may be x itself.
    Returns:
        y (out when given).

    Shapes: x (N,C,*S), scale/shift (C,) -> y (N,C,*S).
    """
    _check_affine("channel_affine", x, {"scale": scale, "shift": shift})
    if not wanted(x):
        return channel_affine_xp(x, scale, shift, out)
    xp = backend.get_array_module(x)
    with backend.device_context(backend.device_of(x)):
        x = xp.ascontiguousarray(x)
        out = _raw_output("channel_affine", xp, out, x)
        c, inner = x.shape[1], x.size // max(x.shape[0] * x.shape[1], 1)
        _launch("minidl_channel_affine", x.size,
                (x, _flat(xp, scale, x.dtype), _flat(xp, shift, x.dtype), out, x.size, c, inner), x.dtype)
    return out


def channel_affine2_xp(a_arr, a, b_arr, b, c, out=None):
    """The ``xp`` twin of ``channel_affine2`` (what the CPU runs).

    The b term is formed first, so that ``out`` may be a_arr or b_arr.
    """
    xp = backend.get_array_module(a_arr)
    b_term = b_arr * _broadcastable(b, a_arr)
    out = xp.multiply(a_arr, _broadcastable(a, a_arr), out=out)
    out += b_term
    del b_term
    out += _broadcastable(c, a_arr)
    return out


def channel_affine2(a_arr, a, b_arr, b, c, out=None):
    """y = a_arr * a[ch] + b_arr * b[ch] + c[ch] per channel ch (batch norm's backward in one pass).

    Added in that order, each product and sum rounded separately, on CUDA (a raw
    kernel) and elsewhere (``channel_affine2_xp``), so the two agree exactly.

    Args:
        a_arr, b_arr: (N, C, *S) float arrays of one shape (and, for the raw kernel,
            one dtype; mixed dtypes take the xp twin).
        a, b, c: C values each, shaped (C,) or e.g. (1, C, 1, 1); cast to a_arr's dtype.
        out: optional result array (as for ``channel_affine``); may be a_arr or b_arr.
    Returns:
        y (out when given).

    Shapes: a_arr, b_arr (N,C,*S), a/b/c (C,) -> y (N,C,*S).
    """
    _check_affine("channel_affine2", a_arr, {"a": a, "b": b, "c": c})
    if b_arr.shape != a_arr.shape:
        raise ValueError(f"channel_affine2: expected b_arr of a_arr's shape {tuple(a_arr.shape)}, "
                         f"got {tuple(b_arr.shape)}")
    if not (wanted(a_arr) and b_arr.dtype == a_arr.dtype):
        return channel_affine2_xp(a_arr, a, b_arr, b, c, out)
    xp = backend.get_array_module(a_arr)
    with backend.device_context(backend.device_of(a_arr)):
        a_arr, b_arr = xp.ascontiguousarray(a_arr), xp.ascontiguousarray(b_arr)
        out = _raw_output("channel_affine2", xp, out, a_arr)
        channels = a_arr.shape[1]
        inner = a_arr.size // max(a_arr.shape[0] * channels, 1)
        dtype = a_arr.dtype
        args = (a_arr, _flat(xp, a, dtype), b_arr, _flat(xp, b, dtype), _flat(xp, c, dtype), out,
                a_arr.size, channels, inner)
        _launch("minidl_channel_affine2", a_arr.size, args, dtype)
    return out
