"""Array collectives over NCCL for CuPy arrays, one communicator per GPU.

NCCL is NVIDIA's collective library: it moves GPU memory between GPUs over NVLink,
PCIe or the network without staging through the host, and runs each collective as
a kernel on a CUDA stream. A communicator needs a shared unique id; rank 0 makes
one and MPI broadcasts it (the bootstrap), then every rank joins with its rank on
its own GPU (cuda:<local rank>).

Collectives run on the array's current stream, so they are ordered with the kernels
around them: a reduction launched during backward needs no host wait, and the
optimizer kernels queued after it read its result. ``Request.wait`` is therefore a
no-op for the host.

This path has been written against the same interface as the MPI one and checked
without a GPU only by reading; it has not yet run on NCCL hardware.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ._mpi import Request


def _nccl():
    try:
        from cupy.cuda import nccl  # CuPy's NCCL bindings, imported only when NCCL is used
    except ImportError as exc:
        raise RuntimeError("NCCL collectives need CuPy built with NCCL (cupy.cuda.nccl could not be "
                           f"imported: {exc}); use --comm mpi") from None
    return nccl


def _dtype_code(nccl, dtype) -> int:
    codes = {np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.float32): nccl.NCCL_FLOAT32,
             np.dtype(np.float64): nccl.NCCL_FLOAT64, np.dtype(np.int32): nccl.NCCL_INT32,
             np.dtype(np.int64): nccl.NCCL_INT64, np.dtype(np.uint8): nccl.NCCL_UINT8}
    code = codes.get(np.dtype(dtype))
    if code is None:
        raise ValueError(f"NCCL collectives: unsupported dtype {dtype}")
    return code


class NCCLTransport:
    """Collectives over one NCCL communicator on ``device``.

    Args:
        world: the World (its MPI communicator carries the bootstrap id).
        device: this rank's GPU.
    """

    def __init__(self, world, device):
        nccl = self._nccl = _nccl()
        uid = world.bcast_object(nccl.get_unique_id() if world.is_main else None)
        self.device = device
        with backend.device_context(device):
            self.comm = nccl.NcclCommunicator(world.size, uid, world.rank)

    @staticmethod
    def _stream() -> int:
        from cupy.cuda import get_current_stream
        return get_current_stream().ptr

    def all_reduce(self, array, op: str = "sum") -> None:
        nccl = self._nccl
        code = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}[op]
        with backend.device_context(self.device):
            self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, _dtype_code(nccl, array.dtype), code,
                                self._stream())

    def iall_reduce(self, array, op: str = "sum") -> Request:
        self.all_reduce(array, op)   # queued on the stream: the host does not wait
        return Request()

    def broadcast(self, array, root: int = 0) -> None:
        with backend.device_context(self.device):
            self.comm.bcast(array.data.ptr, array.size, _dtype_code(self._nccl, array.dtype), root, self._stream())
