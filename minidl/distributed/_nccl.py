"""Array collectives over NCCL for CuPy arrays, one communicator per GPU.

NCCL is NVIDIA's collective library: it moves GPU memory between GPUs over NVLink,
PCIe or the network without staging through the host, and runs each collective as
a kernel on a CUDA stream. A communicator needs a shared unique id; rank 0 makes
one and MPI broadcasts it (the bootstrap), then every rank joins with its rank on
its own GPU (cuda:<local rank>).

Every collective of a communicator runs on one CUDA stream of its own, beside the
stream that computes (``backend.new_stream``: non-blocking, so the legacy default
stream and it never wait for each other): a bucket's all-reduce, started during
backward, then runs while backward's kernels go on. Events order it: the collective
waits for the work the computing stream had queued when it was called (the kernels
that wrote the array), and the computing stream waits for the collective before
what it queues after ``wait()`` (the optimizer step) or, for a blocking call, before
the caller's next kernel. The host waits for none of it. One stream for all of a
communicator's collectives keeps them in the order every process calls them.

This path has been written against CuPy's documented NCCL and stream interface and
checked without a GPU on a fake CuPy that records every kernel's stream
(tests/test_current_device.py); it has not yet run on NCCL hardware.
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
    if not getattr(nccl, "available", True):
        raise RuntimeError("NCCL collectives need the NCCL library, which this CuPy cannot load "
                           "(cupy.cuda.nccl.available is False); install it (pip install nvidia-nccl-cu12) "
                           "or use --comm mpi")
    return nccl


def _dtype_code(nccl, dtype) -> int:
    codes = {np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.float32): nccl.NCCL_FLOAT32,
             np.dtype(np.float64): nccl.NCCL_FLOAT64, np.dtype(np.int32): nccl.NCCL_INT32,
             np.dtype(np.int64): nccl.NCCL_INT64, np.dtype(np.uint8): nccl.NCCL_UINT8}
    code = codes.get(np.dtype(dtype))
    if code is None:
        raise ValueError(f"NCCL collectives: unsupported dtype {dtype}")
    return code


def nccl_available() -> bool:
    """Whether CuPy can run NCCL here (its wheels import ``cupy.cuda.nccl`` but may lack the library)."""
    try:
        from cupy.cuda import nccl
    except ImportError:
        return False
    return bool(getattr(nccl, "available", True))


class NCCLTransport:
    """Collectives over one NCCL communicator on ``device``, on a stream of their own.

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
        self.stream = backend.new_stream(device)

    def _launch(self, collective):
        """Queue ``collective(stream_ptr)`` on the communication stream after the current stream's work so far.

        Returns:
            the event of its end.
        """
        with backend.device_context(self.device):
            backend.wait_event(backend.record_event(), self.stream)   # after the kernels that wrote the array
            collective(self.stream.ptr)
            return backend.record_event(self.stream)

    def _ordered(self, done) -> None:
        with backend.device_context(self.device):
            backend.wait_event(done)   # the current stream's next kernels read the result

    def iall_reduce(self, array, op: str = "sum") -> Request:
        """Start an in-place all-reduce; its Request's ``wait()`` orders the current stream after it."""
        nccl = self._nccl
        code = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}[op]
        done = self._launch(lambda stream: self.comm.allReduce(array.data.ptr, array.data.ptr, array.size,
                                                               _dtype_code(nccl, array.dtype), code, stream))
        return Request(finish=lambda: self._ordered(done))

    def all_reduce(self, array, op: str = "sum") -> None:
        self.iall_reduce(array, op).wait()   # the host never waits: the current stream does

    def broadcast(self, array, root: int = 0) -> None:
        done = self._launch(lambda stream: self.comm.bcast(array.data.ptr, array.size,
                                                           _dtype_code(self._nccl, array.dtype), root, stream))
        self._ordered(done)
