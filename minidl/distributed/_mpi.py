"""Array collectives over MPI (mpi4py): host arrays directly, GPU arrays CUDA-aware or staged.

MPI reads and writes memory by address. A NumPy array is handed over as it is. A
CuPy array is handed over as it is only when the MPI library is CUDA-aware (built
with CUDA and able to read device memory, which it reports through
``MPIX_Query_cuda_support``); otherwise it is staged: copied into a host buffer,
reduced there, copied back. Staging buffers are kept per device array and reused,
so a training run allocates them once.

MPI does not know CUDA streams: before it touches device memory the GPU must have
finished the kernels that write it, so every GPU collective starts with a
synchronisation of the array's device.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np

from .. import backend


class Request:
    """A collective in flight: ``test()`` drives it on, ``wait()`` finishes it (then ``finish``)."""

    def __init__(self, request=None, finish=None):
        self._request, self._finish = request, finish

    def test(self) -> bool:
        """True once the collective has completed (calling it lets MPI make progress)."""
        return self._request is None or self._request.Test()

    def wait(self) -> None:
        if self._request is not None:
            self._request.Wait()
            self._request = None
        if self._finish is not None:
            finish, self._finish = self._finish, None
            finish()


def _mpi_op(op: str):
    from mpi4py import MPI
    return {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]


def _library_reports_cuda() -> bool:
    """Whether the loaded MPI library says it can read CUDA device memory.

    Open MPI and MPICH export ``MPIX_Query_cuda_support()``; mpi4py loads the library
    at run time, so look it up among the libraries this process has mapped.
    ``MINIDL_CUDA_AWARE_MPI=0/1`` overrides the answer.
    """
    forced = os.environ.get("MINIDL_CUDA_AWARE_MPI", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libmpi" in line}
    except OSError:
        return False
    for path in paths:
        try:
            query = getattr(ctypes.CDLL(path), "MPIX_Query_cuda_support", None)
        except OSError:
            continue
        if query is not None:
            query.restype = ctypes.c_int
            return bool(query())
    return False


class MPITransport:
    """Collectives over one mpi4py communicator."""

    def __init__(self, comm):
        self.comm = comm
        self._cuda_aware = None
        self._staging = {}  # (device pointer, nbytes, dtype) -> host buffer reused across steps

    @property
    def cuda_aware(self) -> bool:
        if self._cuda_aware is None:
            self._cuda_aware = _library_reports_cuda()
        return self._cuda_aware

    def _host_buffer(self, array) -> np.ndarray:
        key = (array.data.ptr, array.nbytes, str(array.dtype))
        buffer = self._staging.get(key)
        if buffer is None:
            buffer = self._staging[key] = np.empty(array.shape, dtype=array.dtype)
        return buffer.reshape(array.shape)

    def _on_host(self, array):
        """(what MPI reads and writes, a function that brings the result back) for ``array``."""
        device = backend.device_of(array)
        if device.type == "cpu":
            return array, None
        backend.synchronize(device)      # MPI reads memory, not streams: finish the writers
        if self.cuda_aware:
            return array, None
        host = self._host_buffer(array)
        array.get(out=host)
        return host, lambda: array.set(host)

    def iall_reduce(self, array, op: str = "sum") -> Request:
        """Start an in-place all-reduce of a contiguous array; returns its Request."""
        from mpi4py import MPI
        buffer, back = self._on_host(array)
        return Request(self.comm.Iallreduce(MPI.IN_PLACE, buffer, op=_mpi_op(op)), back)

    def all_reduce(self, array, op: str = "sum") -> None:
        """In-place all-reduce of a contiguous array (blocking)."""
        from mpi4py import MPI
        buffer, back = self._on_host(array)
        self.comm.Allreduce(MPI.IN_PLACE, buffer, op=_mpi_op(op))
        if back is not None:
            back()

    def broadcast(self, array, root: int = 0) -> None:
        """``array`` of process ``root`` copied into ``array`` of every process (in place)."""
        buffer, back = self._on_host(array)
        self.comm.Bcast(buffer, root=root)
        if back is not None:
            back()
