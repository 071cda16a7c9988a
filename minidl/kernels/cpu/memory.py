"""Keep freed work buffers inside the process instead of handing them back to the OS.

Why: a training step allocates and frees the same few-megabyte temporaries hundreds
of times (im2col columns, Winograd tiles, batch slices of every kernel). glibc's
malloc serves blocks above a threshold with a fresh ``mmap`` and returns them with
``munmap`` on free, and trims the heap's free top back to the OS; the next
allocation of the same size then page-faults every 4 KB page in again, with the
kernel zeroing each one (docs/performance.md has what that cost a convolution).

So, on Linux with glibc, minidl raises the mmap threshold to its maximum (32 MB:
larger blocks still come straight from the OS) and switches off trimming, once,
when a CPU kernel first runs. The peak memory does not grow (freed blocks are
reused, not added); memory freed at the end of a step stays reserved by the process
for the next one, as PyTorch's and CuPy's caching allocators do.
``MINIDL_MALLOC_TUNING=0`` leaves the allocator as it is.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

import numpy as np

_M_TRIM_THRESHOLD = -1   # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 2**20   # glibc's ceiling on 64-bit systems

_done = False


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as the module doc says (once per process); True if it was tuned.

    A no-op (False) on other C libraries, or with ``MINIDL_MALLOC_TUNING=0``.
    """
    global _done
    if _done:
        return False
    _done = True
    if os.environ.get("MINIDL_MALLOC_TUNING", "1").strip() == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    # The largest int: never trim (a negative value would not mean "never").
    ok = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1 and ok
    return ok


class ThreadScratch:
    """Two flat scratch arrays per (dtype, thread), grown as needed and reused across calls.

    The fused optimizer updates run their chunks on the worker threads; each thread gets
    its own pair, so the chunks never share a temporary and a step allocates nothing once
    the pairs exist.
    """

    def __init__(self):
        self._pairs = {}   # (dtype, thread) -> two flat arrays

    def pair(self, like, size: int):
        """Two arrays of ``size`` elements in ``like``'s dtype, this thread's own."""
        key = (like.dtype.str, threading.get_ident())
        pair = self._pairs.get(key)
        if pair is None or pair[0].size < size:
            pair = self._pairs[key] = (np.empty(size, like.dtype), np.empty(size, like.dtype))
        return pair[0][:size], pair[1][:size]
