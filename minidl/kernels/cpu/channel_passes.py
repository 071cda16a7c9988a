"""Batch norm's per-channel passes on the CPU, in cache-sized chunks, for either memory layout.

Batch norm touches every activation a handful of times: a sum, a sum of squared
deviations and an affine map (forward); two sums and a fused affine map of two
arrays (backward). Written as whole-array NumPy expressions (the reference,
``minidl.functional.normalization``), each step streams the full array through
memory and allocates a fresh temporary of the same size, and the page faults of
those temporaries cost as much as the arithmetic. Here every pass walks the array in
chunks of CHANNEL_CHUNK_BYTES (``slices.py``), so a chunk's intermediate results stay
in cache and each pass reads its inputs from memory once. How to walk the memory
depends on where the channel axis lies:

  - NCHW (C-contiguous): each (image, channel) pair is one contiguous row of S
    values. The array is seen as ``rows`` (N*C, S); per-channel values are expanded
    to one per row, (N*C, 1), which broadcasts against a chunk of rows; per-row
    results are totalled per channel afterwards.
  - channels-last (the CPU fast paths' layout for 4-D activations, see layout.py)
    and 2-D (N, C) arrays: each pixel is a contiguous run of C values, one per
    channel. Rows of k whole pixels (k*C values) are walked, the channels'
    parameters repeated k times along a row, and column sums are a vector-matrix
    product (BLAS streams the chunk once; NumPy's sum over axis 0 is several times
    slower), folded to C channels at the end.

Results come back in the input's layout. Chunks write disjoint rows, so they are
shared over the worker threads; partial sums are added in chunk order, so the thread
count never changes a result.
"""
from __future__ import annotations

import numpy as np

from .layout import as_nchw, is_channels_last, nhwc
from .slices import CHANNEL_CHUNK_BYTES, CHANNEL_ROW_VALUES, batch_slices
from .threads import map_pieces


def _chunks(rows) -> list:
    """Row slices of about CHANNEL_CHUNK_BYTES each."""
    return batch_slices(rows.shape[0], rows.shape[1] * rows.itemsize, CHANNEL_CHUNK_BYTES)


def _by_columns(x) -> bool:
    """Whether x's channels are columns of contiguous pixel rows: 2-D, or channels-last 4-D."""
    return x.ndim == 2 or is_channels_last(x)


def in_layout_of(x, a):
    """``a`` (x's shape) in x's memory layout, so that chunk passes can walk both alike."""
    if _by_columns(x):
        return a if a.ndim == 2 else as_nchw(nhwc(a))
    return np.ascontiguousarray(a)


# ---- NCHW: rows of one (image, channel) each ---------------------------------------------

def _rows_of(x):
    """x (N, C, *S) as rows (N*C, S): a view when x is contiguous, else a contiguous copy."""
    n, c = x.shape[:2]
    return np.ascontiguousarray(x).reshape(n * c, int(np.prod(x.shape[2:])))   # no -1: N may be 0


def _per_row(values, n: int):
    """(C,) per-channel values as (N*C, 1) per-row values: row r gets values[r % C]."""
    return np.tile(values.reshape(-1), n).reshape(-1, 1)


def _channel_total(row_values, n: int, c: int):
    """(N*C,) per-row numbers summed over the images: (C,) per-channel totals (zeros when N = 0)."""
    return row_values.reshape(n, c).sum(axis=0)


def _row_sums(rows):
    """The sum of every row, (N*C,): a matrix-vector product, so BLAS streams the rows once."""
    return np.matmul(rows, np.ones(rows.shape[1], dtype=rows.dtype))


def _row_centered_dots(rows, center_r, other=None):
    """Per row, sum((rows - center) * other), other = rows - center when None: (R,).

    Centring each chunk before the product (two-pass) avoids the cancellation of
    sum(x^2) - m * mean^2 when a channel's mean is large next to its spread; ``einsum``
    forms the row dot products without a product-sized temporary.
    """
    out = np.empty(rows.shape[0], dtype=rows.dtype)

    def work(part):
        d = rows[part] - center_r[part]
        out[part] = np.einsum("ij,ij->i", d, d if other is None else other[part])

    map_pieces(rows, work, _chunks(rows), nbytes=rows.nbytes)
    return out


def _affine(rows, center, scale, shift=None, other=None, other_scale=None, per=lambda v, part: v,
            relu_mask=None, gate=None):
    """(rows - center) * scale + shift per row chunk, optionally (other + that) * other_scale.

    ``per(value, part)`` picks the part of a per-row (or per-column) value a chunk needs.
    ``relu_mask``: rows-shaped bools that receive result > 0, the result then clipped at 0.
    ``gate``: rows-shaped bools; other counts only where they are True. One read of each
    input and one write of the result; the steps run on a cached chunk.
    """
    out = np.empty_like(rows)

    def work(part):
        o = out[part]
        np.subtract(rows[part], per(center, part), out=o)
        o *= per(scale, part)
        if shift is not None:
            o += per(shift, part)
        if relu_mask is not None:
            np.greater(o, 0, out=relu_mask[part])
            np.maximum(o, 0, out=o)
        if other is not None:
            o += other[part] if gate is None else other[part] * gate[part]
            o *= per(other_scale, part)

    map_pieces(rows, work, _chunks(rows), nbytes=rows.nbytes)
    return out


# ---- channels-last and 2-D: rows of k whole pixels --------------------------------------

def _pixels_per_row(pixels: int, c: int) -> int:
    """The most pixels k that divide ``pixels`` with k*C <= CHANNEL_ROW_VALUES (at least 1)."""
    for k in range(max(1, min(pixels, CHANNEL_ROW_VALUES // c)), 1, -1):
        if pixels % k == 0:
            return k
    return 1


def _pixel_rows(x):
    """x (N, C) or channels-last (N, C, H, W) as rows of k whole pixels: (pixels / k, k*C), and k.

    A view (a copy for other layouts). Channel c is every column j with j % C == c.
    """
    c = x.shape[1]
    flat = x if x.ndim == 2 else nhwc(x).reshape(x.size // c, c)
    k = _pixels_per_row(flat.shape[0], c)
    return flat.reshape(-1, k * c), k


def _from_pixel_rows(rows, shape):
    """The inverse of _pixel_rows: rows back to the (N, C, *S) shape, channels-last."""
    if len(shape) == 2:
        return rows.reshape(shape)
    n, c, h, w = shape
    return as_nchw(rows.reshape(n, h, w, c))


def _per_column(values, k: int):
    """(C,) per-channel values as one value per column of k-pixel rows: (k*C,)."""
    out = np.empty((k, values.size), dtype=values.dtype)   # a broadcast copy: faster than tile
    out[...] = values.reshape(-1)
    return out.reshape(-1)


def _column_sum(block):
    """Column sums of a (rows, k*C) block, as a vector-matrix product."""
    return np.matmul(np.ones(block.shape[0], dtype=block.dtype), block)


def _column_totals(rows, k, partial, count=None):
    """Per-channel totals: ``partial(row slice)`` summed over the chunks in order, then folded.

    partial returns (k*C,) column sums, or (count, k*C) for several at once; the
    result is (C,), or (count, C).
    """
    parts = map_pieces(rows, partial, _chunks(rows), nbytes=rows.nbytes)
    shape = (rows.shape[1],) if count is None else (count, rows.shape[1])
    total = np.zeros(shape, dtype=rows.dtype) if not parts else parts[0]
    for p in parts[1:]:
        total = total + p
    return total.reshape(total.shape[:-1] + (k, -1)).sum(axis=-2)


# ---- the passes batch norm asks for ----------------------------------------------------

def channel_sums(x):
    """Sum of every channel over the batch and the spatial positions. Shapes: (N, C, *S) -> (C,)."""
    if _by_columns(x):
        rows, k = _pixel_rows(x)
        return _column_totals(rows, k, lambda part: _column_sum(rows[part]))
    return _channel_total(_row_sums(_rows_of(x)), *x.shape[:2])


def channel_centered_dots(x, mean, other=None):
    """Per channel, sum((x - mean) * other), with other = x - mean when None (two-pass variance).

    Shapes: x, other (N, C, *S), mean (C,) -> (C,).
    """
    if not _by_columns(x):
        n = x.shape[0]
        other_rows = None if other is None else _rows_of(other)
        return _channel_total(_row_centered_dots(_rows_of(x), _per_row(mean, n), other_rows), n, x.shape[1])
    rows, k = _pixel_rows(x)
    other_rows = None if other is None else _pixel_rows(other)[0]
    mean_c = _per_column(mean, k)

    def partial(part):
        d = rows[part] - mean_c
        d *= d if other_rows is None else other_rows[part]
        return _column_sum(d)
    return _column_totals(rows, k, partial)


def channel_gradient_sums(x, mean, gy, gate=None):
    """Batch norm backward's two per-channel sums, (sum(gy), sum((x - mean) * gy)), each (C,).

    Shapes: x, gy (N, C, *S) in the same layout, mean (C,). One pass over x and gy.
    ``gate``: None, or bools of x's shape and layout (a ReLU's mask, from
    ``channel_centered_affine_relu``): gy counts only where they are True.
    """
    if not _by_columns(x):
        if gate is not None:
            gy = gy * gate
        return channel_sums(gy), channel_centered_dots(x, mean, gy)
    rows, k = _pixel_rows(x)
    g_rows = _pixel_rows(gy)[0]
    gate_rows = None if gate is None else _pixel_rows(gate)[0]
    mean_c = _per_column(mean, k)

    def partial(part):
        g = g_rows[part] if gate_rows is None else g_rows[part] * gate_rows[part]
        d = rows[part] - mean_c
        d *= g
        return np.stack([_column_sum(g), _column_sum(d)])

    sums = _column_totals(rows, k, partial, count=2)
    return sums[0], sums[1]


def channel_centered_affine(x, mean, scale, shift=None, other=None, other_scale=None, gate=None):
    """(x - mean) * scale + shift per channel; with other, (other + that) * other_scale.

    Args:
        x: (N, C, *S); mean, scale: (C,); shift, other_scale: (C,) or None;
        other: None or an array of x's shape in x's layout (``in_layout_of``).
        gate: None, or bools of x's shape and layout: other counts only where they are
            True (batch norm + ReLU's backward, with the mask ``channel_centered_affine_relu``
            gave).
    Returns:
        a new array of x's shape, in x's layout (channels-last stays channels-last).
    """
    return _centered_affine(x, mean, scale, shift, other, other_scale, gate=gate)[0]


def channel_centered_affine_relu(x, mean, scale, shift=None):
    """relu((x - mean) * scale + shift) per channel, and where that is > 0, in one pass.

    Shapes: x (N, C, *S); mean, scale, shift (C,) -> y and a bool mask, both x's shape
    and layout.
    """
    return _centered_affine(x, mean, scale, shift, relu=True)


def _centered_affine(x, mean, scale, shift=None, other=None, other_scale=None, relu=False, gate=None):
    """(y, mask) for the two public affine passes: mask None unless ``relu``."""
    values = (mean, scale, shift, other_scale)
    if not _by_columns(x):
        n = x.shape[0]
        center, scale, shift, other_scale = (None if v is None else _per_row(v, n) for v in values)
        rows = _rows_of(x)
        other, gate = (None if a is None else _rows_of(a) for a in (other, gate))
        mask = np.empty(rows.shape, bool) if relu else None
        out = _affine(rows, center, scale, shift, other, other_scale, per=lambda v, part: v[part],
                      relu_mask=mask, gate=gate)
        return out.reshape(x.shape), None if mask is None else mask.reshape(x.shape)
    rows, k = _pixel_rows(x)
    center, scale, shift, other_scale = (None if v is None else _per_column(v, k) for v in values)
    other, gate = (None if a is None else _pixel_rows(a)[0] for a in (other, gate))
    mask = np.empty(rows.shape, bool) if relu else None
    out = _affine(rows, center, scale, shift, other, other_scale, relu_mask=mask, gate=gate)
    return _from_pixel_rows(out, x.shape), None if mask is None else _from_pixel_rows(mask, x.shape)
