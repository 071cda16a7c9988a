"""Max pooling on the CPU: the reference's running maximum, in batch slices, in either memory layout.

The algorithm is the reference's (``minidl.functional.pooling``): a running maximum
over the KH*KW kernel taps, each tap one strided slice of the padded input, with the
winning tap recorded as one small integer per output; backward sends each output's
gradient to its window's winner. Two things make it fast here:

* the batch is cut into slices whose padded input fits in cache across the KH*KW
  passes, and the slices run on the worker threads;
* a channels-last input is walked as its (N, H, W, C) memory, so every strided slice
  moves runs of C values instead of rows of OW values; y, argmax and gx keep the
  input's layout.
"""
from __future__ import annotations

import numpy as np

from ...window import output_hw, pad2d, tap_slice
from .layout import as_nchw, is_channels_last, nhwc
from .slices import POOLING_BYTES, worker_slices
from .threads import map_pieces


def index_dtype(taps: int):
    """The smallest signed int dtype that can number ``taps`` window offsets."""
    for dtype in (np.int8, np.int16, np.int32):
        if taps <= np.iinfo(dtype).max:
            return dtype
    return np.int64


def _spatial_view(x):
    """x (N, C, H, W) as the array the loops walk, and where its H and W axes are.

    Channels-last x: its (N, H, W, C) memory, axes 1 and 2; otherwise x itself, axes 2 and 3.
    """
    if is_channels_last(x):
        return nhwc(x), (1, 2)
    return x, (2, 3)


def _index(axes, rows, cols):
    """An index selecting ``rows`` and ``cols`` on the spatial ``axes`` of a 4-D array."""
    index = [slice(None)] * 4
    index[axes[0]], index[axes[1]] = rows, cols
    return tuple(index)


def _as_layout(a, axes):
    """A result computed on a _spatial_view back as (N, C, H, W)."""
    return as_nchw(a) if axes == (1, 2) else a


class SlicedMaxPool2d:
    # For each batch slice of n images (channels-last ones walked as (n,H,W,C)):
    # x (n,C,H,W) -> xpad padded with -inf -> y (n,C,OH,OW), and
    # argmax (n,C,OH,OW): the winning tap kh*KW + kw within each window (1 byte).
    algorithm = "batch slices"   # what minidl.viz shows for the call

    def __init__(self, kernel: tuple, stride: tuple, pads: tuple):
        self.kernel, self.stride, self.pads = kernel, stride, pads

    def _slices(self, x_shape, x):
        (top, bottom), (left, right) = self.pads
        padded = x_shape[1] * (x_shape[2] + top + bottom) * (x_shape[3] + left + right)
        return worker_slices(x, padded * x.itemsize, POOLING_BYTES)

    def forward(self, x):
        (kh_size, kw_size), (sh, sw) = self.kernel, self.stride
        oh, ow = output_hw("max_pool2d", x.shape[2:], self.kernel, self.stride, self.pads)
        self.x_shape = x.shape
        a, axes = _spatial_view(x)
        self.axes = axes
        out_shape = list(a.shape)
        out_shape[axes[0]], out_shape[axes[1]] = oh, ow
        y = np.empty(out_shape, dtype=x.dtype)
        argmax = np.zeros(y.shape, dtype=index_dtype(kh_size * kw_size))

        def work(part):
            xpad = pad2d(a[part], self.pads, -np.inf, axes)
            y_part, argmax_part = y[part], argmax[part]
            candidate = np.empty_like(y_part)
            for kh in range(kh_size):
                for kw in range(kw_size):
                    # Copy the strided slice once, so the three passes below run on
                    # contiguous memory (several times faster than on strided views).
                    candidate[...] = xpad[_index(axes, tap_slice(kh, sh, oh), tap_slice(kw, sw, ow))]
                    k = kh * kw_size + kw
                    if k == 0:
                        y_part[...] = candidate
                        continue
                    # Strictly larger: on a tie the earlier tap keeps the gradient.
                    better = (candidate > y_part).astype(argmax.dtype)
                    # "argmax = k where better": taps come in increasing order, so
                    # this is a maximum, and arithmetic beats a masked assignment.
                    better *= k
                    np.maximum(argmax_part, better, out=argmax_part)
                    np.maximum(y_part, candidate, out=y_part)

        map_pieces(x, work, self._slices(x.shape, x), nbytes=x.nbytes)
        self.argmax = argmax  # 1 byte per output: all that backward needs besides shapes
        return _as_layout(y, axes)

    def backward(self, gy, needs):
        (kh_size, kw_size), (sh, sw) = self.kernel, self.stride
        (top, bottom), (left, right) = self.pads
        axes = self.axes
        g = nhwc(gy) if axes == (1, 2) else np.ascontiguousarray(gy)   # gy in argmax's layout
        oh, ow = gy.shape[2:]
        h, w = self.x_shape[2:]
        gx_shape = list(g.shape)
        gx_shape[axes[0]], gx_shape[axes[1]] = h, w
        gx = np.empty(gx_shape, dtype=gy.dtype)

        def work(part):
            gy_part, argmax_part = g[part], self.argmax[part]
            pad_shape = list(gy_part.shape)
            pad_shape[axes[0]], pad_shape[axes[1]] = top + h + bottom, left + w + right
            gxpad = np.zeros(pad_shape, dtype=gy.dtype)
            mine, sent = np.empty(gy_part.shape, dtype=bool), np.empty_like(gy_part)
            for kh in range(kh_size):
                for kw in range(kw_size):
                    # Outputs whose maximum sat at this tap send their gradient
                    # there; the += accumulates where windows overlap.
                    np.equal(argmax_part, kh * kw_size + kw, out=mine)
                    np.multiply(gy_part, mine, out=sent)
                    gxpad[_index(axes, tap_slice(kh, sh, oh), tap_slice(kw, sw, ow))] += sent
            gx[part] = gxpad[_index(axes, slice(top, top + h), slice(left, left + w))]

        map_pieces(gy, work, self._slices(self.x_shape, gy), nbytes=gx.nbytes)
        gx = _as_layout(gx, axes)
        assert gx.shape == tuple(self.x_shape)
        return (gx,)
