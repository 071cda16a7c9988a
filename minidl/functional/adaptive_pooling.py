"""Adaptive 2-D pooling: the output size is given, the windows follow from it.

For an input axis of n cells and an output of m, output i pools the window from
floor(i * n / m) to ceil((i + 1) * n / m) (PyTorch's rule, ``window.adaptive_bounds``):
the windows cover the input, neighbours may share a cell, and when m divides n they
are plain non-overlapping n / m pools. Output (1, 1) is the global pooling that ends
ResNets: one value per channel.

The windows differ in size, so instead of walking kernel taps (as ``avg_pool2d`` and
``max_pool2d`` do) the reference walks the OH*OW windows, each one slice of the input
reduced over its two spatial axes in one vectorised step:

* average: y[..., i, j] = mean of the window; backward spreads each output's gradient
  evenly over its window's cells, accumulating where windows share cells;
* max: y[..., i, j] = the window's maximum, and the flat input index h * W + w of the
  first maximum in row-major order (PyTorch's ``return_indices``); backward sends each
  output's gradient to that one cell.

This module holds the reference implementations; ``adaptive_avg_pool2d`` asks
``minidl.kernels.dispatch`` for a fast path first (on the CPU, the global average of
channels-last input, without copying it).
"""
from __future__ import annotations

import numbers

from .. import backend
from ..autograd import Function, Tensor
from ..kernels import dispatch
from ..window import adaptive_bounds
from .fast_path import FastPath
from .unbatched import as_batch, drop_batch


class AdaptiveAvgPool2d(Function):
    # x (N,C,H,W) -> y (N,C,OH,OW): y[:, :, i, j] = mean of x[:, :, rows[i], cols[j]].
    def __init__(self, rows: list, cols: list):
        self.rows, self.cols = rows, cols   # (start, end) of each window, per axis

    def forward(self, x):
        xp = backend.get_array_module(x)
        y = xp.empty((x.shape[0], x.shape[1], len(self.rows), len(self.cols)), dtype=x.dtype)
        for i, (r0, r1) in enumerate(self.rows):
            for j, (c0, c1) in enumerate(self.cols):
                y[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
        self.x_shape = x.shape
        return y

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        gx = xp.zeros(self.x_shape, dtype=gy.dtype)
        for i, (r0, r1) in enumerate(self.rows):
            for j, (c0, c1) in enumerate(self.cols):
                area = (r1 - r0) * (c1 - c0)
                gx[:, :, r0:r1, c0:c1] += gy[:, :, i, j, None, None] / area
        assert gx.shape == tuple(self.x_shape)
        return gx


class AdaptiveMaxPool2d(Function):
    # x (N,C,H,W) -> y (N,C,OH,OW), the maximum of each window, and
    # index (N,C,OH,OW) int64: the winner's flat position h * W + w in its (H, W) plane.
    def __init__(self, rows: list, cols: list, return_indices: bool):
        self.rows, self.cols, self.return_indices = rows, cols, return_indices

    def forward(self, x):
        xp = backend.get_array_module(x)
        n, c, h, w = x.shape
        out = (n, c, len(self.rows), len(self.cols))
        y, index = xp.empty(out, dtype=x.dtype), xp.empty(out, dtype=xp.int64)
        for i, (r0, r1) in enumerate(self.rows):
            for j, (c0, c1) in enumerate(self.cols):
                cells = (r1 - r0) * (c1 - c0)
                window = x[:, :, r0:r1, c0:c1].reshape(n, c, cells)   # the window's cells in row-major order
                y[:, :, i, j] = window.max(axis=2)                 # a NaN wins, as in PyTorch
                first = window.argmax(axis=2)                      # the first maximum on a tie
                index[:, :, i, j] = (r0 + first // (c1 - c0)) * w + c0 + first % (c1 - c0)
        self.x_shape, self.index = x.shape, index
        return (y, index) if self.return_indices else y

    def backward(self, gy, g_index=None):
        xp = backend.get_array_module(gy)
        n, c, h, w = self.x_shape
        gx = xp.zeros((n * c, h * w), dtype=gy.dtype)
        plane = xp.arange(n * c)
        outputs = gy.shape[2] * gy.shape[3]
        index = self.index.reshape(n * c, outputs)
        g = gy.reshape(n * c, outputs)
        # One output position at a time: within it every (n, c) plane sends to one cell, so
        # the indexed add has no repeated targets; across positions the adds accumulate.
        for k in range(outputs):
            gx[plane, index[:, k]] += g[:, k]
        gx = gx.reshape(self.x_shape)
        return gx


def _output_size(fn: str, output_size, in_hw: tuple) -> tuple:
    """``output_size`` (an int, or a pair whose entries may be None for "as the input") as (OH, OW)."""
    pair = (output_size, output_size) if isinstance(output_size, numbers.Integral) else output_size
    ok = isinstance(pair, (tuple, list)) and len(pair) == 2 and all(
        v is None or (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0) for v in pair)
    if isinstance(output_size, bool) or not ok:
        raise ValueError(f"{fn}: output_size must be a positive int or a pair of positive ints or None, "
                         f"got {output_size!r}")
    return tuple(int(n if v is None else v) for v, n in zip(pair, in_hw))


def _prepare(fn: str, input):
    """``as_batch(fn, input)`` after the checks every adaptive pool makes."""
    x, unbatched = as_batch(fn, input)
    if x.dtype.kind != "f":
        raise ValueError(f"{fn}: expected a floating-point input, got dtype {x.dtype}")
    if 0 in x.shape[1:]:
        raise ValueError(f"{fn}: expected non-empty channel and spatial axes, got shape {tuple(input.shape)}")
    return x, unbatched


def adaptive_avg_pool2d(input, output_size) -> Tensor:
    """The mean over adaptive windows, as ``torch.nn.functional.adaptive_avg_pool2d``.

    Args:
        input: Tensor (or array), (N, C, H, W) or one sample (C, H, W).
        output_size: OH = OW as an int, or (OH, OW); an entry None keeps that input size.
            (1, 1) is global average pooling.
    Returns:
        y Tensor.

    Shapes: (N, C, H, W) -> (N, C, OH, OW); (C, H, W) -> (C, OH, OW).
    Raises:
        ValueError for a wrong rank or dtype, an empty channel or spatial axis, or a bad output_size.
    """
    x, unbatched = _prepare("adaptive_avg_pool2d", input)
    out_hw = _output_size("adaptive_avg_pool2d", output_size, x.shape[2:])
    rows, cols = (adaptive_bounds(n, m) for n, m in zip(x.shape[2:], out_hw))
    fast = dispatch.adaptive_avg_pool2d(x.data if isinstance(x, Tensor) else x, out_hw)
    y = (AdaptiveAvgPool2d(rows, cols) if fast is None else FastPath("AdaptiveAvgPool2d", fast))(x)
    return drop_batch(y, unbatched)


def adaptive_max_pool2d(input, output_size, return_indices: bool = False):
    """The maximum over adaptive windows, as ``torch.nn.functional.adaptive_max_pool2d``.

    Args:
        input: Tensor (or array), (N, C, H, W) or one sample (C, H, W).
        output_size: as ``adaptive_avg_pool2d``.
        return_indices: also return where each maximum came from.
    Returns:
        y Tensor, or (y, indices) with indices an int64 Tensor (no gradient) holding each
        maximum's flat position h * W + w in its input plane, as PyTorch's.

    Shapes: (N, C, H, W) -> (N, C, OH, OW); (C, H, W) -> (C, OH, OW); indices as y.
    Raises:
        ValueError as ``adaptive_avg_pool2d``.
    """
    x, unbatched = _prepare("adaptive_max_pool2d", input)
    out_hw = _output_size("adaptive_max_pool2d", output_size, x.shape[2:])
    rows, cols = (adaptive_bounds(n, m) for n, m in zip(x.shape[2:], out_hw))
    result = AdaptiveMaxPool2d(rows, cols, bool(return_indices))(x)
    if not return_indices:
        return drop_batch(result, unbatched)
    y, index = result
    return drop_batch(y, unbatched), drop_batch(index.detach(), unbatched)
