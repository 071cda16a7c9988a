"""The world of data-parallel processes: how many there are, which one this is, who shares its host.

minidl trains data-parallel under an MPI launcher (``mpiexec -n 4 python ...``,
``srun``, a host file across machines): the launcher starts the same script N times
and tells each process its rank in environment variables that MPI reads. ``init``
finds that world. Started without a launcher, ``init`` returns a world of one
process and never imports mpi4py, so minidl without the ``distributed`` extra works
exactly as before.

    world = init()                 # once, early; later calls return the same world
    world.rank, world.size         # this process, and how many there are
    world.local_rank               # this process among those on the same host
                                   # (it picks the GPU: launch.device_for)

Only the main thread of a process talks to MPI: minidl's CPU worker threads and
data prefetch threads never do.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

# What the common launchers set in every process they start: MPICH/Hydra and Intel
# MPI (PMI_*), Open MPI (OMPI_COMM_WORLD_*), PMIx-based launchers (PMIX_RANK), MVAPICH.
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_LAUNCHER_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK")


class DistributedError(RuntimeError):
    """Data-parallel training cannot start or go on (a clear, one-line reason)."""


@dataclass
class World:
    """The processes of one data-parallel run.

    Attributes:
        rank: this process, 0 .. size-1; rank 0 is the main process.
        size: the number of processes.
        local_rank, local_size: this process among those on its host, and how many.
        comm: the mpi4py communicator of the run (a duplicate of COMM_WORLD), or
            None in a world of one process.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    comm: object = None
    gpu_comm: str = "auto"
    _transports: dict = field(default_factory=dict, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process has arrived here."""
        if self.comm is not None:
            self.comm.Barrier()

    def bcast_object(self, obj, root: int = 0):
        """A picklable object from ``root`` to every process (settings, small state)."""
        return obj if self.comm is None else self.comm.bcast(obj, root=root)

    def allgather_object(self, obj) -> list:
        """Every process's ``obj``, in rank order, on every process."""
        return [obj] if self.comm is None else self.comm.allgather(obj)

    def all_reduce(self, array, op: str = "sum"):
        """``minidl.distributed.all_reduce`` over this world: in place, returns ``array``.

        With it a World is a process group for ``nn.SyncBatchNorm(process_group=world)``.
        """
        from .collectives import all_reduce  # collectives builds on this module
        return all_reduce(array, op, world=self)

    def abort(self, code: int = 1) -> None:
        """End every process of the run now (a failed rank must not leave the others hanging)."""
        if self.comm is not None:
            self.comm.Abort(code)
        raise SystemExit(code)


_world: World | None = None


def launcher_size() -> int | None:
    """The number of processes an MPI launcher says it started, or None without a launcher."""
    for name in _LAUNCHER_SIZE_VARS:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    if any(os.environ.get(name) for name in _LAUNCHER_RANK_VARS):
        return -1  # a launcher that does not say the size: MPI will tell
    return None


def launcher_rank() -> int:
    """This process's rank as the launcher's environment says (0 without a launcher).

    For messages before MPI has started (e.g. when mpi4py is missing), so that only
    rank 0 reports a failure every process meets.
    """
    for name in _LAUNCHER_RANK_VARS:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def init(gpu_comm: str = "auto") -> World:
    """Find the world from the MPI launcher; a world of one process without one.

    Args:
        gpu_comm: how CuPy arrays are reduced: "nccl", "mpi" (CUDA-aware MPI when
            the library reports it, else staged through host buffers) or "auto"
            (NCCL where every process's CuPy can load it, else MPI, said in one
            line: ``collectives.resolve_gpu_comm``). Host arrays always go through MPI.
    Returns:
        the World (the same object on later calls).
    Raises:
        DistributedError when a launcher started several processes but mpi4py is
        missing, or gpu_comm is unknown.
    """
    global _world
    if gpu_comm not in ("auto", "mpi", "nccl"):
        raise DistributedError(f"distributed.init: gpu_comm must be 'auto', 'mpi' or 'nccl', got {gpu_comm!r}")
    if _world is not None:
        _world.gpu_comm = gpu_comm
        return _world
    size = launcher_size()
    if size is None or size == 1:  # no launcher, or one process: nothing to talk to
        _world = World(gpu_comm=gpu_comm)
    else:
        if not _mpi4py_available():
            raise DistributedError(
                "this process was started by an MPI launcher for data-parallel training, but mpi4py is not "
                "installed; install it with `pip install -e \".[distributed]\"` (or run without mpiexec)")
        comm = _mpi_world_comm()
        from mpi4py import MPI
        local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
        _world = World(rank=comm.Get_rank(), size=comm.Get_size(), local_rank=local.Get_rank(),
                       local_size=local.Get_size(), comm=comm, gpu_comm=gpu_comm)
        local.Free()
    return _world


def _mpi4py_available() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def _mpi_world_comm():
    """A private duplicate of COMM_WORLD (our messages never mix with the user's)."""
    # mpi4py's default thread level (MPI_THREAD_MULTIPLE) is kept although minidl
    # calls MPI from the main thread only: MPICH's large all-reduces ran several
    # times slower at FUNNELED (docs/distributed.md has the measurement).
    from mpi4py import MPI
    return MPI.COMM_WORLD.Dup()


def get_world() -> World:
    """The current world (``init()`` on first use)."""
    return _world if _world is not None else init()


def initialized() -> World | None:
    """The world if ``init`` has run, else None (never starts MPI)."""
    return _world


def rank() -> int:
    return get_world().rank


def world_size() -> int:
    return get_world().size


def local_rank() -> int:
    return get_world().local_rank


def is_main() -> bool:
    return get_world().is_main


def barrier() -> None:
    get_world().barrier()
