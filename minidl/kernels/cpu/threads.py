"""Independent CPU pieces of a kernel on all cores, with BLAS single-threaded.

Why: BLAS runs a matrix product on every core, but NumPy runs each of the
memory-bound passes around it (im2col copies, col2im adds, layout transposes) on
one. The CPU kernels process their batch in independent slices anyway (see
``slices.py``), so W worker threads can take them one at a time, each with a
single-threaded matrix product: then every core is busy through the copies as well
as the products. NumPy and BLAS release Python's GIL inside their loops, so the
threads really do run in parallel (though each NumPy call still takes the GIL on its way
in and out, and short calls run measurably slower in two threads of one process than in
two processes: for networks of many short calls, data parallelism over processes uses the
cores better; "Threads against processes" in docs/performance.md). Workers pull the
next slice when they are free, so when another process takes a core for a while, the
other worker simply does more of the slices instead of waiting for it. The calling
thread is one of the W workers (W - 1 pool threads join it), so a region costs one
hand-off fewer.

BLAS runs single-threaded: the first time the workers are used, minidl sets
NumPy's BLAS to one thread for the rest of the process (through threadpoolctl),
and the large products that are not already split by batch slices (dense layers)
are split into blocks over the workers here (``matmul``). Two reasons. Each
worker's product would otherwise start W BLAS threads of its own; and OpenBLAS's
threads keep spinning for a while after every multi-threaded product, so a 2-thread
product anywhere (a dense layer, a reduction) leaves a core busy that the workers
then fight over (docs/performance.md has the measurement). ``MINIDL_NUM_THREADS=1``
leaves BLAS as it was and runs minidl's kernels serially; so does a missing
threadpoolctl.

Determinism: each item's result depends only on the item, and results come back
in item order, so callers that combine them (a weight gradient summed over slices)
add them in that order: the result never depends on thread timing or on the number
of threads.

Settings: ``MINIDL_NUM_THREADS`` (default: the CPUs this process may run on). The
first CPU kernel also tunes the C allocator (``memory.py``).
"""
from __future__ import annotations

import contextlib
import contextvars
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as _np

from ... import backend
from .memory import keep_freed_memory

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_controller = None          # threadpoolctl.ThreadpoolController, False if unavailable
_blas_libs = []             # its BLAS libraries
_region = threading.Lock()  # one parallel region at a time: BLAS limits are process-wide
_inside = threading.local()  # set in worker threads: nested regions run serially
_blas_pinned = False        # BLAS set to one thread for good (see the module docstring)

# Products with fewer multiply-adds than this are not split: the hand-offs would cost more.
_SPLIT_MACS = 2**22

# Kernels that walk at most this much data run their pieces in the calling thread
# (``map_pieces``' nbytes): waking the workers costs more than a second core saves
# on a pass over a small activation.
SERIAL_BYTES = 2**20


def _forget_pool_after_fork() -> None:
    """A forked child has none of the parent's threads: start a fresh pool there."""
    global _pool, _pool_size, _region
    _pool, _pool_size, _region = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def num_threads() -> int:
    """Worker threads for CPU kernels: ``MINIDL_NUM_THREADS``, else the usable CPUs.

    Raises:
        ValueError when MINIDL_NUM_THREADS is set to anything but a positive integer.
    """
    value = os.environ.get("MINIDL_NUM_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"MINIDL_NUM_THREADS must be a positive integer, got {value!r}")
        return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _blas_controller():
    """A threadpoolctl controller that sees a BLAS library, or None."""
    global _controller, _blas_libs
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController
            controller = ThreadpoolController()
            _blas_libs = controller.select(user_api="blas").lib_controllers
            _controller = controller if _blas_libs else False
        except Exception:  # not installed, or it cannot inspect this process's libraries
            _controller = False
    return _controller or None


def workers() -> int:
    """How many threads ``parallel_map`` would use right now (1 means serial)."""
    count = num_threads()
    if count <= 1 or getattr(_inside, "active", False) or _blas_controller() is None:
        return 1
    return count


def pin_blas_to_one_thread() -> None:
    """Set BLAS to one thread for the rest of the process (once; see the module docstring).

    Also used by data-parallel processes that share a host's cores. A no-op without
    threadpoolctl.
    """
    global _blas_pinned
    if not _blas_pinned and _blas_controller() is not None:
        _blas_controller().limit(limits=1, user_api="blas")  # not a context: the limit stays
        _blas_pinned = True


def _worker(fn, items, results, next_index, lock, stop):
    """Take items by index until none is left (or one failed); store fn(item) at its index."""
    _inside.active = True
    try:
        while not stop.is_set():
            with lock:
                i = next(next_index)
            if i >= len(items):
                return
            try:
                results[i] = fn(items[i])
            except BaseException:
                stop.set()         # the other workers stop taking items
                raise
    finally:
        _inside.active = False


def parallel_map(fn, items) -> list:
    """``[fn(item) for item in items]``, with the items spread over the worker threads.

    Args:
        fn: processes one item; it must only write memory that no other item writes.
        items: the pieces of work (e.g. batch slices).
    Returns:
        fn's results in item order. An exception from any item is raised here
        (after the other workers have stopped).
    """
    items = list(items)
    count = min(workers(), len(items))
    if count <= 1 or not _region.acquire(blocking=False):
        return [fn(item) for item in items]
    global _pool, _pool_size
    try:
        if _pool is None or _pool_size < count:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(count, thread_name_prefix="minidl-cpu"), count
        results = [None] * len(items)
        next_index, lock, stop = itertools.count(), threading.Lock(), threading.Event()
        pin_blas_to_one_thread()
        # Also for this region alone, in case the caller raised BLAS threads since (asking
        # is cheap, setting and restoring the limit is not, so only when needed).
        single = all(lib.num_threads == 1 for lib in _blas_libs)
        with contextlib.nullcontext() if single else _blas_controller().limit(limits=1, user_api="blas"):
            # Each worker runs in a copy of the caller's context, so that context-local
            # settings such as np.errstate (floating-point warnings) hold there too.
            # The calling thread takes items as well: one hand-off fewer per region.
            futures = [_pool.submit(contextvars.copy_context().run, _worker, fn, items, results,
                                    next_index, lock, stop) for _ in range(count - 1)]
            try:
                _worker(fn, items, results, next_index, lock, stop)
            finally:
                for f in futures:
                    f.exception()      # wait for every worker before raising anything
            for f in futures:
                f.result()
        return results
    finally:
        _region.release()


def map_pieces(array, work, items, nbytes: int | None = None) -> list:
    """``[work(item) for item in items]`` for pieces of a kernel working on ``array``.

    On the CPU the pieces are spread over the worker threads (``parallel_map``),
    unless ``nbytes`` (the size of the data the pieces walk, e.g. the activation) is
    at most ``SERIAL_BYTES``: then they run in order in this thread. On a GPU they
    always run in order in this thread, since CuPy's current device and stream are per
    thread and the GPU runs each piece in parallel anyway. The results are the same
    either way (each depends only on its piece).
    """
    if backend.device_of(array).type != "cpu":
        return [work(item) for item in items]
    keep_freed_memory()  # once: work buffers stay in the process (see _cpu_memory)
    if nbytes is not None and nbytes <= SERIAL_BYTES:
        return [work(item) for item in items]
    return parallel_map(work, items)


def matmul(a, b):
    """``a @ b`` for 2-D arrays; on the CPU cut into blocks of the result's longer side over the workers.

    With BLAS single-threaded, a large product must be spread over the cores by
    minidl itself: each block is one BLAS call writing its own rows or columns of
    the result (views of ``a`` and ``b``, no copies). Small products, any product
    when the workers are off, and GPU arrays (cuBLAS) are one plain call.

    Shapes: a (M, K), b (K, N) -> (M, N).
    """
    m, k = a.shape
    n = b.shape[1]
    count = workers()
    if count == 1 or m * n * k < _SPLIT_MACS or backend.device_of(a).type != "cpu":
        return a @ b
    out = _np.empty((m, n), dtype=_np.result_type(a, b))
    blocks = 2 * count        # a few more blocks than workers: a slowed worker takes fewer
    if n >= m:
        bounds = [n * i // blocks for i in range(blocks + 1)]
        work = lambda part: _np.matmul(a, b[:, part], out=out[:, part])  # noqa: E731
    else:
        bounds = [m * i // blocks for i in range(blocks + 1)]
        work = lambda part: _np.matmul(a[part], b, out=out[part])  # noqa: E731
    parallel_map(work, [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:]) if hi > lo])
    return out
