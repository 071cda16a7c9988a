"""The spatial axes of (N, C, H, W) arrays in either memory layout: what the CPU's pooling loops share.

A channels-last array is walked as its (N, H, W, C) memory, spatial axes 1 and 2, so that
every strided slice of a kernel tap moves runs of C values; an NCHW array as itself,
spatial axes 2 and 3. Results computed on the walked array go back to the (N, C, H, W)
shape in the input's layout, and the batch is cut into slices whose padded input fits in
cache across the KH*KW taps.
"""
from __future__ import annotations

import numpy as np

from .layout import as_nchw, is_channels_last, nhwc
from .slices import POOLING_BYTES, worker_slices


def spatial_view(x, contiguous: bool = False):
    """x (N, C, H, W) as the array the loops walk, and where its H and W axes are.

    Channels-last x: its (N, H, W, C) memory, axes (1, 2); otherwise x itself (a contiguous
    copy when ``contiguous`` and x is a strided view), axes (2, 3).
    """
    if is_channels_last(x):
        return nhwc(x), (1, 2)
    return (np.ascontiguousarray(x) if contiguous else x), (2, 3)


def spatial_index(axes, rows, cols) -> tuple:
    """An index selecting ``rows`` and ``cols`` on the spatial ``axes`` of a 4-D array."""
    index = [slice(None)] * 4
    index[axes[0]], index[axes[1]] = rows, cols
    return tuple(index)


def with_spatial(shape, axes, h: int, w: int) -> list:
    """``shape`` with its spatial ``axes`` set to (h, w)."""
    shape = list(shape)
    shape[axes[0]], shape[axes[1]] = h, w
    return shape


def as_layout(a, axes):
    """A result computed on a ``spatial_view`` back as (N, C, H, W), in the walked layout."""
    return as_nchw(a) if axes == (1, 2) else a


def in_walked_layout(gy, axes):
    """A gradient (N, C, OH, OW) in the layout the loops walk (``spatial_view``'s ``axes``)."""
    return nhwc(gy) if axes == (1, 2) else np.ascontiguousarray(gy)


def pooling_slices(x_shape, pads, x) -> list:
    """Batch slices of ``x`` for a pooling loop: POOLING_BYTES of padded input per slice."""
    (top, bottom), (left, right) = pads
    padded = x_shape[1] * (x_shape[2] + top + bottom) * (x_shape[3] + left + right)
    return worker_slices(x, padded * x.itemsize, POOLING_BYTES)
