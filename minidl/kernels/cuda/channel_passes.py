"""Batch norm's per-channel passes on a GPU: plain reductions, and the affine maps as raw kernels.

The passes ``minidl.kernels.batch_norm`` asks for (see there), for NCHW arrays. The sums
are CuPy reductions, never matrix products: with ``--tf32`` a product would round its
inputs to 10-bit mantissas, and batch statistics must stay full float32. The affine
maps run as one raw kernel each over the (N*C, S) rows of x (``launches.centered_affine``),
where the reference takes three to five passes over memory.
"""
from __future__ import annotations

from ... import backend
from . import launches


def _axes(x) -> tuple:
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(values, ndim: int):
    """(C,) values as (1, C, 1, ...), to broadcast against (N, C, *S)."""
    return values.reshape((1, -1) + (1,) * (ndim - 2))


def in_layout_of(x, a):
    """``a`` as a contiguous NCHW array, the layout the raw kernels index."""
    return backend.get_array_module(a).ascontiguousarray(a)


def channel_sums(x):
    """Sum of every channel over the batch and the spatial positions. Shapes: (N, C, *S) -> (C,)."""
    return x.sum(axis=_axes(x))


def channel_centered_dots(x, mean, other=None):
    """Per channel, sum((x - mean) * other), with other = x - mean when None. Shapes: -> (C,)."""
    d = x - _per_channel(mean, x.ndim)
    d *= d if other is None else other
    return d.sum(axis=_axes(x))


def channel_gradient_sums(x, mean, gy, gate=None):
    """(sum(gy), sum((x - mean) * gy)) per channel, each (C,); ``gate`` (bools) masks gy, as the CPU pass's."""
    if gate is not None:
        gy = gy * gate
    return channel_sums(gy), channel_centered_dots(x, mean, gy)


def centered_affine_xp(x, mean, scale, shift=None, other=None, other_scale=None):
    """The raw kernel's xp twin: the same steps, each rounded on its own (any dtypes)."""
    y = (x - _per_channel(mean, x.ndim)) * _per_channel(scale, x.ndim)
    if shift is not None:
        y += _per_channel(shift, x.ndim)
    return y if other is None else (other + y) * _per_channel(other_scale, x.ndim)


def channel_centered_affine(x, mean, scale, shift=None, other=None, other_scale=None, gate=None):
    """(x - mean) * scale + shift per channel; with other, (other + that) * other_scale.

    One raw kernel when every array shares x's dtype, else ``centered_affine_xp``.
    ``gate`` (bools of x's shape) masks other first, one more pass here.
    Shapes: x, other (N, C, *S); mean, scale, shift, other_scale (C,) -> (N, C, *S), NCHW.
    """
    xp = backend.get_array_module(x)
    if gate is not None:
        other = other * gate
    if any(v is not None and v.dtype != x.dtype for v in (mean, scale, shift, other_scale, other)):
        return centered_affine_xp(x, mean, scale, shift, other, other_scale)
    n, c = x.shape[:2]
    size = 1
    for extent in x.shape[2:]:
        size *= extent
    rows = xp.ascontiguousarray(x).reshape(n * c, size)   # no -1: N may be 0

    def per_row(values):   # (C,) -> (N*C, 1): row r is channel r % C
        return None if values is None else xp.tile(values.reshape(-1), n).reshape(-1, 1)

    other_rows = None if other is None else xp.ascontiguousarray(other).reshape(n * c, size)
    y = launches.centered_affine(rows, per_row(mean), per_row(scale), per_row(shift), other_rows,
                                 per_row(other_scale))
    return y.reshape(x.shape)


def channel_centered_affine_relu(x, mean, scale, shift=None):
    """relu((x - mean) * scale + shift) and where that is > 0 (bools): the affine kernel, then two passes."""
    xp = backend.get_array_module(x)
    y = channel_centered_affine(x, mean, scale, shift)
    mask = y > 0
    return xp.maximum(y, 0, out=y), mask
