"""Batch norm's per-channel passes, for either memory layout of (N, C, *S) arrays.

Three passes make batch norm: per-channel sums, per-channel sums of centred products,
and a per-channel affine map of the centred values. How to walk the memory depends
on where the channel axis lies:

  - NCHW (C-contiguous): each (image, channel) pair is one contiguous row of S
    values; ``_channel_rows`` walks those rows in cache-sized chunks.
  - channels-last (the CPU's layout for 4-D activations, see _layout.py) and 2-D
    (N, C) arrays: each pixel is a contiguous run of C values, one per channel. Here
    rows of k whole pixels (k*C values) are walked in cache-sized chunks, the
    channels' parameters repeated k times along a row, and column sums are a
    vector-matrix product (BLAS streams the chunk once; NumPy's sum over axis 0 is
    several times slower), folded to C channels at the end.

Results come back in the input's layout. Chunks write disjoint rows, so on the CPU
they are shared over minidl's worker threads; partial sums are added in chunk
order, so the thread count never changes a result. On a GPU there is one chunk,
and sums are plain reductions (a product could run in TF32 there, and batch
statistics must stay full float32).
"""
from __future__ import annotations

from .. import backend
from .._cpu_threads import map_pieces
from ._channel_rows import centered_affine, centered_dots, channel_total, chunks, per_row, row_sums, rows_of
from ._layout import as_nchw, is_channels_last, nhwc


# Values per row for the column layout: a few pixels side by side, so that NumPy's inner
# loops run over hundreds of values instead of C (32 for the CIFAR net's first layers,
# where (pixels, C) rows made the affine pass 4x slower).
_ROW_VALUES = 2048


def _by_columns(x) -> bool:
    """Whether x's channels are columns of contiguous pixel rows: 2-D, or channels-last 4-D."""
    return x.ndim == 2 or is_channels_last(x)


def _pixels_per_row(pixels: int, c: int) -> int:
    """The most pixels k that divide ``pixels`` with k*C <= _ROW_VALUES (at least 1)."""
    for k in range(max(1, min(pixels, _ROW_VALUES // c)), 1, -1):
        if pixels % k == 0:
            return k
    return 1


def _pixel_rows(x):
    """x (N, C) or channels-last (N, C, H, W) as rows of k whole pixels: (pixels / k, k*C), and k.

    A view (a copy for other layouts). Channel c is every column j with j % C == c.
    """
    c = x.shape[1]
    flat = x if x.ndim == 2 else nhwc(x).reshape(-1, c)
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
    xp = backend.get_array_module(values)
    out = xp.empty((k, values.size), dtype=values.dtype)   # a broadcast copy: 3x faster than tile
    out[...] = values.reshape(-1)
    return out.reshape(-1)


def _column_totals(rows, k, partial, count=None):
    """Per-channel totals: ``partial(row slice)`` summed over the chunks in order, then folded.

    partial returns (k*C,) column sums, or (count, k*C) for several at once; the
    result is (C,), or (count, C).
    """
    xp = backend.get_array_module(rows)
    parts = map_pieces(rows, partial, chunks(rows), nbytes=rows.nbytes)
    shape = (rows.shape[1],) if count is None else (count, rows.shape[1])
    total = xp.zeros(shape, dtype=rows.dtype) if not parts else parts[0]
    for p in parts[1:]:
        total = total + p
    return total.reshape(total.shape[:-1] + (k, -1)).sum(axis=-2)


def _column_sum(block):
    """Column sums of a (rows, k*C) block: BLAS on the CPU, a plain reduction on a GPU."""
    xp = backend.get_array_module(block)
    if backend.device_of(block).type != "cpu":
        return block.sum(axis=0)
    return xp.matmul(xp.ones(block.shape[0], dtype=block.dtype), block)


def in_layout_of(x, a):
    """``a`` (x's shape) in x's memory layout, so that chunk passes can walk both alike."""
    xp = backend.get_array_module(a)
    if _by_columns(x):
        return a if a.ndim == 2 else as_nchw(nhwc(a))
    return xp.ascontiguousarray(a)


def channel_sums(x):
    """Sum of every channel over the batch and the spatial positions. Shapes: (N, C, *S) -> (C,)."""
    if _by_columns(x):
        rows, k = _pixel_rows(x)
        return _column_totals(rows, k, lambda part: _column_sum(rows[part]))
    return channel_total(row_sums(rows_of(x)), x.shape[0])


def channel_centered_dots(x, mean, other=None):
    """Per channel, sum((x - mean) * other), with other = x - mean when None (two-pass variance).

    Shapes: x, other (N, C, *S), mean (C,) -> (C,).
    """
    if _by_columns(x):
        rows, k = _pixel_rows(x)
        other_rows = None if other is None else _pixel_rows(other)[0]
        mean_c = _per_column(mean, k)

        def partial(part):
            d = rows[part] - mean_c
            d *= d if other_rows is None else other_rows[part]
            return _column_sum(d)
        return _column_totals(rows, k, partial)
    n = x.shape[0]
    return channel_total(centered_dots(rows_of(x), per_row(mean, n), None if other is None else rows_of(other)), n)


def channel_gradient_sums(x, mean, gy):
    """Batch norm backward's two per-channel sums in one pass over x and gy.

    Returns:
        (sum(gy), sum((x - mean) * gy)), each (C,). Shapes: x, gy (N, C, *S), mean (C,).
    """
    if not _by_columns(x):
        return channel_sums(gy), channel_centered_dots(x, mean, gy)
    xp = backend.get_array_module(x)
    rows, k = _pixel_rows(x)
    g_rows = _pixel_rows(gy)[0]
    mean_c = _per_column(mean, k)

    def partial(part):
        g = g_rows[part]
        d = rows[part] - mean_c
        d *= g
        return xp.stack([_column_sum(g), _column_sum(d)])

    sums = _column_totals(rows, k, partial, count=2)
    return sums[0], sums[1]


def channel_centered_affine(x, mean, scale, shift=None, other=None, other_scale=None):
    """(x - mean) * scale + shift per channel; with other, (other + that) * other_scale.

    Args:
        x: (N, C, *S); mean, scale: (C,); shift, other_scale: (C,) or None;
        other: None or an array of x's shape (any layout).
    Returns:
        a new array of x's shape, in x's layout (channels-last stays channels-last).
    """
    if not _by_columns(x):
        n = x.shape[0]
        out = centered_affine(rows_of(x), per_row(mean, n), per_row(scale, n),
                              None if shift is None else per_row(shift, n),
                              None if other is None else rows_of(other),
                              None if other_scale is None else per_row(other_scale, n))
        return out.reshape(x.shape)
    xp = backend.get_array_module(x)
    rows, k = _pixel_rows(x)
    other_rows = None if other is None else _pixel_rows(other)[0]
    mean, scale = _per_column(mean, k), _per_column(scale, k)
    shift = None if shift is None else _per_column(shift, k)
    other_scale = None if other_scale is None else _per_column(other_scale, k)
    out = xp.empty_like(rows)

    def work(part):
        o = out[part]
        xp.subtract(rows[part], mean, out=o)
        o *= scale
        if shift is not None:
            o += shift
        if other_rows is not None:
            o += other_rows[part]
            o *= other_scale

    map_pieces(rows, work, chunks(rows), nbytes=rows.nbytes)
    return _from_pixel_rows(out, x.shape)
