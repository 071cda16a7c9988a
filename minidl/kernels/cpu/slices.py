"""How the fast kernels cut their work: batch slices and chunks, and every budget in one place.

Why slices. A kernel that streams big temporaries (im2col columns, Winograd tiles,
padded pooling inputs) runs faster on the CPU slice by slice: a small buffer stays
in cache between the passes over it and is recycled by the allocator, where a fresh
100 MB buffer page-faults in on every call; the peak memory drops too. The slices
are independent, so the worker threads (``threads.py``) take them one at a time.
A GPU prefers few large operations, so there the budget is large.

The budgets below are bytes of work buffers per slice unless the name says otherwise;
docs/performance.md has the measurements that chose them.
"""
from __future__ import annotations

from ... import backend
from .threads import workers

# Convolution by im2col, channels-last (conv.py): column bytes per slice, so that a
# slice's columns and outputs stay in cache between the copy and the product; but at
# least CONV_MIN_PIXELS output pixels (product rows), so that big kernels' products
# stay near BLAS's peak.
CONV_COLUMN_BYTES = 1 * 2**20
CONV_MIN_PIXELS = 1024
# Winograd (winograd.py): transformed inputs and products per slice, but at least
# WINOGRAD_MIN_TILES tiles, so that each tile position's product has rows enough.
WINOGRAD_BYTES = 2 * 2**20
WINOGRAD_MIN_TILES = 64
# Max and average pooling (pooling.py, average_pooling.py): padded input per slice, so
# the KH*KW passes run in cache.
POOLING_BYTES = 2 * 2**20
# Batch norm's per-channel passes (channel_passes.py): half a core's L2 per chunk, so
# a chunk and its temporary fit; rows of about CHANNEL_ROW_VALUES values, so that
# NumPy's inner loops run over hundreds of values even when C is small.
CHANNEL_CHUNK_BYTES = 512 * 2**10
CHANNEL_ROW_VALUES = 2048
# Elementwise passes (ReLU, elementwise.py; sigmoid, leaky ReLU, GELU, activations.py):
# bytes of one array per chunk.
ELEMENTWISE_CHUNK_BYTES = 256 * 2**10
# The SGD update (sgd.py): elements per chunk; the weights, gradient, momentum and two
# scratch pieces of a chunk fit in the L3 cache, and chunks are few enough that
# Python's cost per chunk stays small.
SGD_CHUNK_ELEMENTS = 512 * 1024
# The Adam update (adam.py): elements per chunk; up to five arrays of a parameter (weights,
# gradient, two moments, the amsgrad maximum) and two scratch pieces per chunk.
ADAM_CHUNK_ELEMENTS = 256 * 1024
# On a GPU: one slice unless the work buffers would pass this.
GPU_BYTES = 512 * 2**20


def batch_slices(n: int, per_item_bytes: int, budget: int) -> list:
    """Split range(n) into consecutive slices of at most ``budget`` bytes (at least one item each)."""
    step = max(1, budget // max(per_item_bytes, 1))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def balanced_slices(n: int, per_item_bytes: int, budget: int) -> list:
    """Split range(n) into slices of at most ``budget`` bytes, their count a multiple of the workers.

    Args:
        n: number of items (images).
        per_item_bytes: temporary bytes one item needs.
        budget: bytes allowed per slice (at least one item per slice).
    Returns:
        contiguous slices covering 0..n, sizes differing by at most one, so that
        the workers finish together when no other process interferes.
    """
    if n == 0:
        return []
    per_slice = max(1, budget // max(per_item_bytes, 1))
    count = -(-n // per_slice)
    w = min(workers(), n)
    count = min(n, -(-count // w) * w)
    bounds = [n * i // count for i in range(count + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def worker_slices(x, per_item_bytes: int, budget: int, units_per_item: int = 1, min_units: int = 0) -> list:
    """Batch slices of ``x`` (N, ...) for a kernel's pieces: balanced on the CPU, few on a GPU.

    Args:
        x: the batch; its device picks the rule.
        per_item_bytes: work-buffer bytes one image needs.
        budget: CPU bytes per slice; raised to hold at least ``min_units`` units
            (output pixels, tiles) when one image has ``units_per_item`` of them.
    Returns:
        slices covering 0..N: ``balanced_slices`` on the CPU, else slices of GPU_BYTES.
    """
    n = x.shape[0]
    if backend.device_of(x).type != "cpu":
        return batch_slices(n, per_item_bytes, GPU_BYTES)
    if min_units:
        budget = max(budget, -(-min_units // max(units_per_item, 1)) * per_item_bytes)
    return balanced_slices(n, per_item_bytes, budget)


def flat_chunks(size: int, chunk: int) -> list:
    """Slices of range(size), ``chunk`` long (the last one shorter)."""
    return [slice(i, min(i + chunk, size)) for i in range(0, size, chunk)]
