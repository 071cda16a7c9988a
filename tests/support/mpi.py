"""Where tests find MPI: the ``mpiexec`` beside this Python, a skip mark for machines without MPI, and the
environment of the processes a test launches with it."""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

MPIEXEC = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")


def have_mpi() -> bool:
    """mpi4py importable and an executable mpiexec."""
    return importlib.util.find_spec("mpi4py") is not None and os.access(MPIEXEC, os.X_OK)


needs_mpi = pytest.mark.skipif(not have_mpi(), reason="mpi4py or mpiexec missing (pip install -e '.[distributed]')")


def mpi_env(**extra) -> dict:
    """os.environ for processes started under mpiexec: this checkout importable, and without the test-only
    write delay and the thread count, so that every process picks its own share of the cores."""
    from .commands import ROOT
    env = {k: v for k, v in os.environ.items() if k not in ("MINIDL_TEST_WRITE_DELAY", "MINIDL_NUM_THREADS")}
    return dict(env, PYTHONPATH=str(ROOT), **extra)
