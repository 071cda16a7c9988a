"""The Python side of every hand-written CUDA kernel: allocate the output, launch, return.

The ``xp`` code of every op runs unchanged on CuPy, but some of it is slow there:
im2col is one big strided copy, col2im and pooling loop over the KH*KW kernel taps
with one small CuPy launch (or several) per tap, and batch norm's centred affine maps
take a pass over memory per arithmetic operation. The kernels in ``sources.py`` do
each job in a single pass. The ``xp`` code stays the reference: every raw kernel is
tested against it (tests/kernels/cuda/), on a GPU when there is one and, without one,
by compiling the same CUDA C with g++ and running it on NumPy arrays
(tests/cuda_emulation.py).

When they run is ``minidl.kernels.dispatch``'s decision (CuPy float32/float64 arrays,
fast kernels on). The wrappers below are written against ``xp`` too (they allocate
with the input's array module and launch through ``backend.raw_kernel``), which is
what lets the tests drive them with NumPy arrays and an emulated kernel.
"""
from __future__ import annotations

import numpy as np

from ... import backend
from .sources import KERNEL_OPTIONS, cuda_source

# Threads per block (a multiple of the 32-thread warp; the kernels use no shared
# memory, so nothing else constrains it) and the most blocks per launch: plenty
# to fill any GPU, and the grid-stride loops cover arrays larger than the grid.
_BLOCK = 256
_MAX_BLOCKS = 65535
# The element types the kernels are built for.
RAW_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


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
    """The reference im2col (``minidl.functional.conv.im2col``) in one kernel: col[c,kh,kw,n,oh,ow] = xpad[n,c,oh*SH+kh,ow*SW+kw].

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
    """The reference col2im (``minidl.functional.conv.col2im``) in one kernel: each pixel sums the columns of the windows that cover it.

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
    """Max pooling forward as the reference (``minidl.functional.pooling``) computes it, in one kernel.

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
# Batch norm's centred affine passes
# ---------------------------------------------------------------------------

def centered_affine(rows, center_r, scale_r, shift_r=None, other=None, other_scale_r=None):
    """Batch norm's centred affine map of rows in one kernel (the xp twin takes three to five passes).

    y = (rows - center) * scale + shift, or with ``other``
    y = (other + (rows - center) * scale + shift) * other_scale: batch norm's forward
    and inference map, and its backward. The centre is subtracted first, as in the
    twin, so a large channel mean costs no precision; each step is rounded
    separately (``--fmad=false``), so the two agree exactly. Without ``shift_r`` a
    zero shift is added (which can only turn a -0.0 into +0.0).

    Args:
        rows: (R, S) float32/float64 array.
        center_r, scale_r, shift_r, other_scale_r: (R, 1) per-row values of rows' dtype.
        other: optional (R, S) array of rows' dtype.
    Returns:
        a new (R, S) array, contiguous.

    Shapes: rows, other (R,S), per-row values (R,1) -> y (R,S).
    """
    xp = backend.get_array_module(rows)
    with backend.device_context(backend.device_of(rows)):
        rows = xp.ascontiguousarray(rows)
        dtype = rows.dtype

        def flat(values):  # (R, 1) -> the kernels' contiguous (R,)
            return xp.ascontiguousarray(values.reshape(-1))

        shift = flat(shift_r) if shift_r is not None else xp.zeros(rows.shape[0], dtype)
        y = xp.empty_like(rows)
        head = (rows, flat(center_r), flat(scale_r), shift)
        tail = (y, rows.size, rows.shape[1])
        if other is None:
            _launch("minidl_centered_affine", rows.size, head + tail, dtype)
        else:
            other = xp.ascontiguousarray(other)
            _launch("minidl_centered_affine_add", rows.size, head + (other, flat(other_scale_r)) + tail, dtype)
    return y
