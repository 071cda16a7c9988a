"""The one timing loop the benchmarks share: warm-up calls, then timed calls, their median.

Standard library only, so that a child process can use it before it decides which minidl
to import (``commits_ab.py``).
"""
from __future__ import annotations

import statistics
import time


def timed_runs(fn, warmup: int, runs: int) -> list:
    """Seconds of each of ``runs`` calls of ``fn()``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_ms(fn, warmup: int = 2, runs: int = 5) -> float:
    """The median of ``timed_runs`` in milliseconds."""
    return 1e3 * statistics.median(timed_runs(fn, warmup, runs))
