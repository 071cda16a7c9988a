"""Elementwise passes on the CPU: the flat memory of arrays in cache-sized chunks, on the worker threads.

NumPy runs an elementwise ufunc on one core, and a chain of them streams the whole array
through memory once per step. ``chunked`` walks the flat memory of its arrays in chunks of
ELEMENTWISE_CHUNK_BYTES that the worker threads share, each chunk going through every step
while it sits in cache. The arrays may lie in either layout, NCHW or channels-last, as long
as they share it (an activation and its gradient usually do); otherwise the callers run
the reference. The activations built on it are in activations.py.
"""
from __future__ import annotations

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
