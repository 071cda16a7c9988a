"""Where tests find MPI: the ``mpiexec`` beside this Python, and a skip mark for machines without MPI."""
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
