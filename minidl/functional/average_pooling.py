"""2-D average pooling, with PyTorch's ``ceil_mode``, ``count_include_pad`` and ``divisor_override``.

Forward walks the KH*KW kernel taps, never the pixels, as max pooling does: for one
tap, the pixels it sees across all windows form one strided slice of the zero-padded
input (``window.tap_slice``), so KH*KW vectorised adds give every window's sum. Each
sum is then divided by its window's divisor:

* ``count_include_pad=True`` (the default): the cells of the window inside the input
  or its padding, so a window over zero padding averages the zeros in;
* ``count_include_pad=False``: only the cells inside the input;
* ``divisor_override=d``: d for every window.

In ``ceil_mode`` the output rounds up, so the last window may hang past the padded
input; that overhang is padded with zeros too but never counts in a divisor, and a
window that would start in the after-padding is dropped altogether (PyTorch's rules;
``window.pool_output_hw``, ``window.window_cells``).

Backward is the same walk in reverse: every input cell of a window receives the
window's gradient divided by its divisor; where windows overlap the per-tap strided
adds accumulate.

This module is the reference implementation; ``avg_pool2d`` asks
``minidl.kernels.dispatch`` for a fast path first (on the CPU, batch slices in
channels-last memory on the worker threads).
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from ..kernels import dispatch
from ..window import covering_pads, int_pair, pad2d, pool_output_hw, resolve_padding, tap_slice, window_cells
from .fast_path import FastPath
from .unbatched import as_batch, drop_batch


class AvgPool2d(Function):
    # x (N,C,H,W) -> xpad (N,C,Hp,Wp), zero-padded far enough for every window
    # -> the sum of the KH*KW taps (N,C,OH,OW) -> y = sum / divisor, divisor (OH,OW).
    def __init__(self, kernel: tuple, stride: tuple, pads: tuple, divisor):
        self.kernel, self.stride, self.pads = kernel, stride, pads
        self.divisor = divisor   # (OH, OW) host array: each window's divisor

    def forward(self, x):
        xp = backend.get_array_module(x)
        (kh_size, kw_size), (sh, sw) = self.kernel, self.stride
        oh, ow = self.divisor.shape
        xpad = pad2d(x, self.pads, 0.0)
        total = xp.zeros((x.shape[0], x.shape[1], oh, ow), dtype=x.dtype)
        for kh in range(kh_size):
            for kw in range(kw_size):
                total += xpad[:, :, tap_slice(kh, sh, oh), tap_slice(kw, sw, ow)]
        self.x_shape = x.shape
        return total / xp.asarray(self.divisor, dtype=x.dtype)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        (kh_size, kw_size), (sh, sw) = self.kernel, self.stride
        (top, bottom), (left, right) = self.pads
        n, c, h, w = self.x_shape
        oh, ow = gy.shape[2:]
        share = gy / xp.asarray(self.divisor, dtype=gy.dtype)   # what each cell of a window receives
        gxpad = xp.zeros((n, c, top + h + bottom, left + w + right), dtype=gy.dtype)
        for kh in range(kh_size):
            for kw in range(kw_size):
                gxpad[:, :, tap_slice(kh, sh, oh), tap_slice(kw, sw, ow)] += share
        gx = xp.ascontiguousarray(gxpad[:, :, top:top + h, left:left + w])
        assert gx.shape == tuple(self.x_shape)
        return gx


def _flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"avg_pool2d: {name} must be True or False, got {value!r}")
    return bool(value)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None) -> Tensor:
    """The mean over each KH x KW window of each channel, as ``torch.nn.functional.avg_pool2d``.

    Args:
        input: Tensor (or array), (N, C, H, W) or one sample (C, H, W).
        kernel_size: int or (KH, KW).
        stride: int or (SH, SW); defaults to kernel_size.
        padding: zeros around the input: int or (ph, pw) as PyTorch, or minidl's
            ((top, bottom), (left, right)), "valid" or "same" (TensorFlow's rule) as
            conv2d takes them. At most half the kernel on every side, as PyTorch requires.
        ceil_mode: round the output size up (windows may hang off the end; one that
            would start in the after-padding is dropped).
        count_include_pad: divide by the window's cells in the input and its padding
            (True) or in the input only (False). The ceil-mode overhang never counts.
        divisor_override: a nonzero int to divide every window's sum by instead.
    Returns:
        y Tensor.

    Shapes: (N, C, H, W) -> (N, C, OH, OW) with OH = floor or ceil((H + top + bottom - KH) / SH) + 1;
        (C, H, W) -> (C, OH, OW).
    Raises:
        ValueError naming the argument for a wrong rank or dtype, a non-positive kernel or
        stride, padding over half the kernel, a kernel larger than the padded input, or a
        divisor_override that is not a nonzero int.
    """
    x, unbatched = as_batch("avg_pool2d", input)
    if x.dtype.kind != "f":
        raise ValueError(f"avg_pool2d: expected a floating-point input, got dtype {x.dtype}")
    kernel = int_pair("avg_pool2d", "kernel_size", kernel_size)
    stride = kernel if stride is None else int_pair("avg_pool2d", "stride", stride)
    in_hw = tuple(x.shape[2:])
    pads = resolve_padding("avg_pool2d", padding, in_hw, kernel, stride)
    if any(2 * p > k for (before, after), k in zip(pads, kernel) for p in (before, after)):
        raise ValueError(f"avg_pool2d: padding {pads} must be at most half the kernel {kernel} on every side")
    ceil_mode = _flag("ceil_mode", ceil_mode)
    count_include_pad = _flag("count_include_pad", count_include_pad)
    if divisor_override is not None and (not isinstance(divisor_override, numbers.Integral)
                                         or isinstance(divisor_override, bool) or divisor_override == 0):
        raise ValueError(f"avg_pool2d: divisor_override must be None or a nonzero int, got {divisor_override!r}")
    out_hw = pool_output_hw("avg_pool2d", in_hw, kernel, stride, pads, ceil_mode)
    if divisor_override is None:
        rows, cols = (window_cells(n, k, s, a, b, o, count_include_pad)
                      for n, k, s, (a, b), o in zip(in_hw, kernel, stride, pads, out_hw))
        divisor = np.outer(rows, cols).astype(np.float64)
    else:
        divisor = np.full(out_hw, float(divisor_override))
    pads = covering_pads(in_hw, kernel, stride, pads, out_hw)
    fast = dispatch.avg_pool2d(x.data if isinstance(x, Tensor) else x, kernel, stride, pads, divisor)
    y = (AvgPool2d(kernel, stride, pads, divisor) if fast is None else FastPath("AvgPool2d", fast))(x)
    return drop_batch(y, unbatched)
