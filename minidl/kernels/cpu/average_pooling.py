"""Average pooling on the CPU: the reference's tap walk in batch slices, and the global average.

``SlicedAvgPool2d`` runs the algorithm of the reference (``minidl.functional.average_pooling``):
the sum of the KH*KW kernel taps, each one strided slice of the zero-padded input, divided
by each window's divisor; backward spreads gy / divisor back over the taps. Like the
max pooling kernel (``pooling.py``) it is fast because

* the batch is cut into slices whose padded input fits in cache across the KH*KW
  passes, and the slices run on the worker threads;
* a channels-last input is walked as its (N, H, W, C) memory, so every strided slice
  moves runs of C values; y and gx keep the input's layout.

It adds the taps in the reference's order and divides the same way, so its results are
the reference's to the last bit.

``GlobalAvgPool2d`` is adaptive average pooling to 1 x 1, the end of every ResNet: the
mean over each channel's H x W pixels. Forward sums the input where it lies, without a
copy, as one matrix product per image with a row of ones; it keeps only the input's
shape and layout for backward, which writes gy / (H * W) into a gradient laid out as the
input was, in one pass, so the batch norm and ReLU backward that follow run on their
own layout.
"""
from __future__ import annotations

import numpy as np

from ...window import pad2d, tap_slice
from .layout import as_nchw, is_channels_last, nhwc
from .slices import POOLING_BYTES, worker_slices
from .threads import map_pieces


def _spatial_view(x):
    """x (N, C, H, W) as the array the loops walk, and where its H and W axes are.

    Channels-last x: its (N, H, W, C) memory, axes 1 and 2; otherwise x itself (made
    contiguous), axes 2 and 3.
    """
    if is_channels_last(x):
        return nhwc(x), (1, 2)
    return np.ascontiguousarray(x), (2, 3)


def _index(axes, rows, cols):
    """An index selecting ``rows`` and ``cols`` on the spatial ``axes`` of a 4-D array."""
    index = [slice(None)] * 4
    index[axes[0]], index[axes[1]] = rows, cols
    return tuple(index)


def _with_spatial(shape, axes, h, w):
    shape = list(shape)
    shape[axes[0]], shape[axes[1]] = h, w
    return shape


class SlicedAvgPool2d:
    # For each batch slice of n images (channels-last ones walked as (n,H,W,C)):
    # x (n,C,H,W) -> xpad zero-padded -> the sum of the KH*KW taps -> y (n,C,OH,OW) = sum / divisor.
    algorithm = "batch slices"   # what minidl.viz shows for the call

    def __init__(self, kernel: tuple, stride: tuple, pads: tuple, divisor):
        self.kernel, self.stride, self.pads = kernel, stride, pads
        self.divisor = divisor   # (OH, OW), each window's divisor

    def _divisor(self, dtype, axes):
        """The divisor shaped to broadcast over the walked array."""
        divisor = self.divisor.astype(dtype)
        return divisor[:, :, None] if axes == (1, 2) else divisor

    def _slices(self, x_shape, x):
        (top, bottom), (left, right) = self.pads
        padded = x_shape[1] * (x_shape[2] + top + bottom) * (x_shape[3] + left + right)
        return worker_slices(x, padded * x.itemsize, POOLING_BYTES)

    def forward(self, x):
        (kh_size, kw_size), (sh, sw) = self.kernel, self.stride
        oh, ow = self.divisor.shape
        self.x_shape = x.shape
        a, axes = _spatial_view(x)
        self.axes = axes
        y = np.empty(_with_spatial(a.shape, axes, oh, ow), dtype=x.dtype)
        divisor = self._divisor(x.dtype, axes)

        def work(part):
            xpad = pad2d(a[part], self.pads, 0.0, axes)
            total = y[part]
            for kh in range(kh_size):
                for kw in range(kw_size):
                    tap = xpad[_index(axes, tap_slice(kh, sh, oh), tap_slice(kw, sw, ow))]
                    if kh == kw == 0:
                        total[...] = tap
                    else:
                        total += tap
            total /= divisor

        map_pieces(x, work, self._slices(x.shape, x), nbytes=x.nbytes)
        return as_nchw(y) if axes == (1, 2) else y

    def backward(self, gy, needs):
        (kh_size, kw_size), (sh, sw) = self.kernel, self.stride
        (top, bottom), (left, right) = self.pads
        axes = self.axes
        g = nhwc(gy) if axes == (1, 2) else np.ascontiguousarray(gy)   # gy in the walked layout
        oh, ow = self.divisor.shape
        h, w = self.x_shape[2:]
        gx = np.empty(_with_spatial(g.shape, axes, h, w), dtype=gy.dtype)
        divisor = self._divisor(gy.dtype, axes)

        # Windows that tile the input exactly (stride = kernel, no padding, nothing left
        # over) send each cell one share: the taps write gx directly, nothing to zero or add.
        tiled = (kh_size, kw_size) == (sh, sw) and (oh * sh, ow * sw) == (h, w) and top == left == 0

        def work(part):
            share = g[part] / divisor   # what each cell of a window receives
            if tiled:
                gx_part = gx[part]
                for kh in range(kh_size):
                    for kw in range(kw_size):
                        gx_part[_index(axes, tap_slice(kh, sh, oh), tap_slice(kw, sw, ow))] = share
                return
            gxpad = np.zeros(_with_spatial(share.shape, axes, top + h + bottom, left + w + right), dtype=gy.dtype)
            for kh in range(kh_size):
                for kw in range(kw_size):
                    gxpad[_index(axes, tap_slice(kh, sh, oh), tap_slice(kw, sw, ow))] += share
            gx[part] = gxpad[_index(axes, slice(top, top + h), slice(left, left + w))]

        map_pieces(gy, work, self._slices(self.x_shape, gy), nbytes=gx.nbytes)
        gx = as_nchw(gx) if axes == (1, 2) else gx
        assert gx.shape == tuple(self.x_shape)
        return (gx,)


class GlobalAvgPool2d:
    # x (N,C,H,W), either layout -> y (N,C,1,1), the mean of each channel's H*W pixels.
    # Backward: gy (N,C,1,1) -> gx (N,C,H,W) = gy / (H*W) everywhere, in x's layout.
    algorithm = "global"

    def forward(self, x):
        n, c, h, w = x.shape
        self.x_shape, self.channels_last = x.shape, is_channels_last(x)
        # The sums as products with a row of ones, one small product per image: BLAS adds
        # long runs where NumPy's reduction would loop over rows of only C values.
        ones = np.ones((1, h * w), dtype=x.dtype)
        if self.channels_last:   # (N, H*W, C) memory: (1, H*W) @ (H*W, C) per image
            total = np.matmul(ones, nhwc(x).reshape(n, h * w, c))
        else:                    # (N, C, H*W): (C, H*W) @ (H*W, 1) per image
            total = np.matmul(x.reshape(n, c, h * w), ones.T)
        total /= h * w
        return total.reshape(n, c, 1, 1)

    def backward(self, gy, needs):
        n, c, h, w = self.x_shape
        share = gy.reshape(n, c) / (h * w)
        if self.channels_last:
            gx = np.empty((n, h, w, c), dtype=gy.dtype)
            gx[...] = share[:, None, None, :]
            gx = as_nchw(gx)
        else:
            gx = np.empty((n, c, h, w), dtype=gy.dtype)
            gx[...] = share[:, :, None, None]
        assert gx.shape == tuple(self.x_shape)
        return (gx,)
