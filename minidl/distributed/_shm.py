"""Memory that the processes of one host share (MPI-3 shared windows), and flags to hand work over.

Processes on one machine need not send each other arrays through MPI messages:
``MPI_Win_allocate_shared`` maps one segment per process into every process of the
host, so each can read what the others write, with no copy. ``HostMemory`` wraps
that for NumPy: ``allocate`` returns every process's segment as a flat array.

Handing data over needs an order: a process writes its data, then raises a flag (a
counter in its own segment); a reader that sees the flag may read the data.
``MPI_Win_sync`` (``fence``) is the memory barrier that keeps the data's stores
before the flag's and the flag's load before the data's loads, on any CPU.

Flags carry the step they belong to, so they never need resetting: a reader waits
until every process's flag reached this step's number.
"""
from __future__ import annotations

import numpy as np

FLAGS = 64   # flag counters per process; each user takes a few (``claim_flags``)


class HostMemory:
    """Shared memory of the processes of ``comm``, which must all run on one host.

    Collective: every process of ``comm`` constructs it, and every process calls
    ``allocate`` and ``claim_flags`` in the same order.
    """

    def __init__(self, comm):
        from mpi4py import MPI
        self._mpi = MPI
        self.comm = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        if self.size != comm.Get_size():
            raise RuntimeError("HostMemory: the processes run on several hosts; shared memory needs one")
        self._windows = []
        self.flags = self.allocate(FLAGS * 8, np.int64)   # flags[q][i]: process q's counter i
        self.flags[self.rank][:] = -1
        self._next_flag = 0
        self.comm.Barrier()   # every process's flags are initialised before anyone reads them

    def allocate(self, nbytes: int, dtype) -> list:
        """Collective: a segment of ``nbytes`` from this process (sizes may differ between processes).

        Returns:
            [segment of process 0, segment of process 1, ...] as flat arrays of
            ``dtype``, each readable and writable from every process.
        """
        itemsize = np.dtype(dtype).itemsize
        sizes = self.comm.allgather(int(nbytes))
        window = self._mpi.Win.Allocate_shared(max(int(nbytes), itemsize), itemsize, comm=self.comm)
        window.Lock_all(self._mpi.MODE_NOCHECK)   # one passive epoch for the window's life: loads and stores
        self._windows.append(window)
        segments = []
        for q, size in enumerate(sizes):
            buffer, _ = window.Shared_query(q)
            segments.append(np.frombuffer(buffer, dtype=dtype)[:size // itemsize])
        return segments

    def claim_flags(self, count: int) -> range:
        """``count`` flag indices for one user (the same on every process: claimed in the same order)."""
        if self._next_flag + count > FLAGS:
            raise RuntimeError(f"HostMemory: out of flags ({FLAGS})")
        first, self._next_flag = self._next_flag, self._next_flag + count
        return range(first, first + count)

    def fence(self) -> None:
        """Memory barrier: this process's stores so far are visible before any later store or load."""
        self._windows[0].Sync()

    def raise_flag(self, index: int, step: int) -> None:
        """After this process's data for ``step`` is written: flag ``index`` says so."""
        self.fence()
        self.flags[self.rank][index] = step

    def all_raised(self, index: int, step: int) -> bool:
        """Whether every process raised flag ``index`` for ``step`` (then their data may be read)."""
        ready = all(int(flags[index]) >= step for flags in self.flags)
        if ready:
            self.fence()
        return ready
