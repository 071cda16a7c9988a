"""Elementwise ops on the CPU: one pass over cache-sized chunks, shared over the worker threads.

NumPy runs an elementwise ufunc on one core. ReLU's forward (max(x, 0)) and backward
(gy where y > 0) are single passes over memory, so here they walk the flat memory of
their arrays in chunks of ELEMENTWISE_CHUNK_BYTES that the worker threads share. The
arrays may lie in either layout, NCHW or channels-last, as long as they share it (an
activation and its gradient usually do); otherwise the reference runs.
"""
from __future__ import annotations

import numpy as np

from .layout import is_channels_last, nhwc
from .slices import ELEMENTWISE_CHUNK_BYTES, flat_chunks
from .threads import map_pieces


def flat_memory(a):
    """The contiguous memory behind ``a`` as a 1-D view (C order or channels-last), else None."""
    if a.flags.c_contiguous:
        return a.reshape(-1)
    if is_channels_last(a):
        return nhwc(a).reshape(-1)
    return None


def same_flat_layout(*arrays) -> bool:
    """Whether every array lies in one contiguous layout (C order or channels-last) with the same strides."""
    return all(flat_memory(a) is not None for a in arrays) and all(a.strides == arrays[0].strides for a in arrays)


def chunked(work, out, *arrays) -> None:
    """work(out chunk, *chunks) over cache-sized chunks of arrays laid out as ``out`` (``same_flat_layout``)."""
    flats = [flat_memory(a) for a in (out,) + arrays]
    parts = flat_chunks(flats[0].size, max(1, ELEMENTWISE_CHUNK_BYTES // out.itemsize))
    map_pieces(out, lambda part: work(*(f[part] for f in flats)), parts, nbytes=out.nbytes)


class ChunkedReLU:
    # x (any shape) -> y = max(x, 0) in x's layout; backward gx = gy * (y > 0), keeping only y.
    algorithm = "chunked"   # what minidl.viz shows for the call

    def forward(self, x):
        y = np.empty_like(x)   # x's memory layout (channels-last stays channels-last)
        chunked(lambda y_c, x_c: np.maximum(x_c, 0, out=y_c), y, x)
        self.y = y
        return y

    def backward(self, gy, needs):
        y = self.y
        if not same_flat_layout(y, gy):
            return (gy * (y > 0),)

        def mask_times_gy(gx_c, y_c, gy_c):
            np.greater(y_c, 0, out=gx_c)   # 1.0 where y > 0, else 0.0
            gx_c *= gy_c

        gx = np.empty_like(y)
        chunked(mask_times_gy, gx, y, gy)
        return (gx,)
