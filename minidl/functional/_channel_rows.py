"""Per-channel passes over (N, C, *S) arrays, done row by row in cache-sized chunks.

Batch norm touches every activation a handful of times: a sum, a sum of squared
deviations, and an affine map (forward); two sums and a fused affine map of two
arrays (backward). Written as whole-array NumPy expressions, each step streams the
full array through memory and allocates a fresh temporary of the same size, and on
the CPU the page faults of those temporaries cost as much as the arithmetic.

Here the array is viewed as ``rows`` of shape (N*C, S): row r is channel r % C of
image r // C, contiguous. Every pass walks the rows in chunks of about 512 KB, so a
chunk's intermediate results stay in the core's cache and are recycled between
chunks, and each pass reads its inputs from memory once. Per-channel parameters are
expanded to one value per row, (N*C, 1), which broadcasts against a chunk.

Chunks write disjoint rows, so on the CPU minidl's worker threads share them out
(minidl._cpu_threads); per-row results are totalled per channel afterwards, in row
order, so the thread count never changes a result. On a GPU there is one chunk: the
device prefers few large kernels to many small ones; the affine maps are one raw
CUDA kernel each (``_cuda_kernels.centered_affine``), and the sums are plain
reductions, never matrix products, which ``--tf32`` would round to 10-bit mantissas.
"""
from __future__ import annotations

from .. import backend
from .._cpu_threads import map_pieces
from . import _cuda_kernels as cuda_kernels
from ._im2col import batch_slices

# Bytes per chunk on the CPU: half a core's 1 MB L2, so a chunk and its temporary fit.
_CHUNK_BYTES = 512 * 2**10


def rows_of(x):
    """x (N, C, *S) as rows (N*C, S): a view when x is contiguous, else a contiguous copy."""
    xp = backend.get_array_module(x)
    n, c = x.shape[:2]
    return xp.ascontiguousarray(x).reshape(n * c, -1)


def chunks(rows) -> list:
    """Row slices of about _CHUNK_BYTES each on the CPU, one slice covering all on a GPU."""
    return batch_slices(rows, rows.shape[1] * rows.itemsize, _CHUNK_BYTES, gpu_budget=2**62)


def per_row(values, n: int):
    """(C,) per-channel values as (N*C, 1) per-row values: row r gets values[r % C]."""
    xp = backend.get_array_module(values)
    return xp.tile(values.reshape(-1), n).reshape(-1, 1)


def channel_total(row_values, n: int):
    """(N*C,) per-row numbers summed over the images: (C,) per-channel totals."""
    return row_values.reshape(n, -1).sum(axis=0)


def row_sums(rows):
    """The sum of every row, (N*C,).

    On the CPU a matrix-vector product: BLAS streams the rows once, with all cores,
    and NumPy's ``sum(axis=1)`` is about three times slower here. On a GPU a plain
    reduction: a product could run in TF32 (``--tf32``, 10-bit mantissas), and batch
    statistics must stay full float32.
    """
    xp = backend.get_array_module(rows)
    if backend.device_of(rows).type != "cpu":
        return rows.sum(axis=1)
    return xp.matmul(rows, xp.ones(rows.shape[1], dtype=rows.dtype))


def centered_dots(rows, center_r, other=None):
    """Per row, sum((rows - center) * other), with other = rows - center when None.

    Args:
        rows: (R, S) array.
        center_r: (R, 1) value subtracted from each row (its channel's mean).
        other: optional (R, S) array multiplied with the centred rows.
    Returns:
        (R,) array: the centred sum of squares, or the centred dot product with other.

    Centring each chunk before the product (two-pass) avoids the cancellation of
    sum(x^2) - m * mean^2 when a channel's mean is large next to its spread. On the
    CPU ``einsum`` forms the row dot products without a product-sized temporary; on
    a GPU a product and a reduction, since CuPy's einsum may run as a batched matrix
    product, in TF32 with ``--tf32``.
    """
    xp = backend.get_array_module(rows)
    out = xp.empty(rows.shape[0], dtype=rows.dtype)
    on_cpu = backend.device_of(rows).type == "cpu"

    def work(part):
        d = rows[part] - center_r[part]
        o = d if other is None else other[part]
        out[part] = xp.einsum("ij,ij->i", d, o) if on_cpu else (d * o).sum(axis=1)

    map_pieces(rows, work, chunks(rows), nbytes=rows.nbytes)
    return out


def centered_affine(rows, center_r, scale_r, shift_r=None, other=None, other_scale_r=None):
    """Per row, (rows - center) * scale + shift, optionally added to other and rescaled.

    Args:
        rows: (R, S) array.
        center_r, scale_r: (R, 1) per-row values.
        shift_r: optional (R, 1) value added last.
        other: optional (R, S) array; then the result is
            (other + (rows - center) * scale + shift) * other_scale.
        other_scale_r: (R, 1), used with other only.
    Returns:
        a new (R, S) array.

    One read of each input and one write of the result; the intermediate steps run on a
    cache-resident chunk. On CUDA one raw kernel does it all
    (``_cuda_kernels.centered_affine``, same arithmetic, same result).
    """
    extra = (center_r, scale_r, shift_r, other, other_scale_r)
    if cuda_kernels.wanted(rows) and all(v is None or v.dtype == rows.dtype for v in extra):
        return cuda_kernels.centered_affine(rows, center_r, scale_r, shift_r, other, other_scale_r)
    xp = backend.get_array_module(rows)
    out = xp.empty_like(rows)

    def work(part):
        o = out[part]
        xp.subtract(rows[part], center_r[part], out=o)
        o *= scale_r[part]
        if shift_r is not None:
            o += shift_r[part]
        if other is not None:
            o += other[part]
            o *= other_scale_r[part]

    map_pieces(rows, work, chunks(rows), nbytes=rows.nbytes)
    return out
