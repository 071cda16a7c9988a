"""Which GPU each process of a data-parallel run takes, and how GPU arrays are reduced: on a fake CuPy.

Under ``mpiexec`` every process of a host sees all of its GPUs and takes the one of
its local rank, or its launcher gave it one GPU of its own (``CUDA_VISIBLE_DEVICES``
per rank, Slurm's ``--gpus-per-task=1``), which it sees as cuda:0. Either way no two
processes of a host may share a physical GPU, and each makes its GPU current once,
so that no process creates a context on GPU 0. ``--comm auto`` takes NCCL only where
every process's CuPy can load it, and says so when it falls back to MPI.
"""
import numpy as np
import pytest

from minidl import backend
from minidl.distributed import collectives
from minidl.distributed.launch import device_for
from minidl.distributed.world import DistributedError, World

from support import fake_cupy


class _Peers(World):
    """This process, ``rank`` of a world whose other processes' reports are given (in rank order)."""

    def __init__(self, reports, **kwargs):
        super().__init__(**kwargs)
        self.reports = reports

    def allgather_object(self, obj):
        return self.reports[:self.rank] + [obj] + self.reports[self.rank:]


def _world(rank, size, local_size, others, gpu_comm="auto"):
    return _Peers(others, rank=rank, size=size, local_rank=rank % local_size, local_size=local_size,
                  gpu_comm=gpu_comm)


class _FakeNccl(World):
    """Wraps a _Peers world: the first allgather is device_for's, later ones the NCCL availability check."""

    def __init__(self, inner, nccl_elsewhere):
        super().__init__(rank=inner.rank, size=inner.size, local_rank=inner.local_rank,
                         local_size=inner.local_size, gpu_comm=inner.gpu_comm)
        self.inner, self.nccl_elsewhere, self.calls = inner, nccl_elsewhere, 0

    def allgather_object(self, obj):
        self.calls += 1
        if self.calls == 1:
            return self.inner.allgather_object(obj)
        return [obj] + list(self.nccl_elsewhere)


def test_with_every_gpu_visible_each_process_takes_its_local_ranks_and_makes_it_current(monkeypatch):
    fake = fake_cupy.install(monkeypatch, device_count=2, nccl=True)
    host = __import__("socket").gethostname()
    world = _FakeNccl(_world(1, 2, 2, [(None, host, "0000:17:00")]), [True])   # rank 0 took GPU 0
    device = device_for("cuda", world)
    assert device == backend.Device("cuda:1")
    assert fake.contexts == {1} and fake.current() == 1   # current for good: no context on GPU 0
    assert world.gpu_comm == "nccl"


def test_one_gpu_per_process_is_each_processes_cuda_0(monkeypatch):
    """Slurm --gpus-per-task=1: local rank 1 sees one GPU (another physical one than rank 0's)."""
    fake = fake_cupy.install(monkeypatch, device_count=1, nccl=True)
    fake.pci = {0: (0, 0x65, 0)}
    host = __import__("socket").gethostname()
    world = _FakeNccl(_world(1, 2, 2, [(None, host, "0000:17:00")]), [True])
    assert device_for("cuda", world) == backend.Device("cuda:0")
    assert fake.contexts == {0} and world.gpu_comm == "nccl"


def test_processes_that_would_share_a_gpu_stop_together(monkeypatch):
    fake_cupy.install(monkeypatch, device_count=1, nccl=True)
    host = __import__("socket").gethostname()
    world = _world(1, 2, 2, [(None, host, "0000:17:00")])   # the same physical GPU as ours
    with pytest.raises(DistributedError, match=r"ranks 0 and 1 would share the GPU at 0000:17:00 on .*one process "
                                               r"per GPU"):
        device_for("cuda", world)
    other_host = _world(1, 2, 1, [(None, "elsewhere", "0000:17:00")])   # the same address on another host: fine
    assert device_for("cuda", _FakeNccl(other_host, [True])) == backend.Device("cuda:0")


def test_every_process_raises_the_first_failure(monkeypatch):
    fake_cupy.install(monkeypatch, device_count=2)
    world = _world(0, 2, 2, [("CUDA device cuda:1 was requested but only 1 GPU(s) are visible", "h", None)])
    with pytest.raises(DistributedError, match=r"^rank 1: CUDA device cuda:1 was requested"):
        device_for("cuda", world)
    with pytest.raises(DistributedError, match="pass --device cuda"):
        device_for("cuda:1", _world(0, 2, 2, [(None, "h", None)]))
    assert device_for("cpu", _world(1, 2, 2, [(None, "h", None)])) == backend.CPU


def test_one_process_makes_its_gpu_current(monkeypatch):
    fake = fake_cupy.install(monkeypatch, device_count=2)
    assert device_for("cuda:1", World()) == backend.Device("cuda:1")
    assert fake.contexts == {1}


class _LoopbackComm:
    """An MPI communicator of 2 processes with the same data: a sum doubles, a broadcast keeps."""

    def allgather(self, obj):
        return [obj, obj]

    def bcast(self, obj, root=0):
        return obj

    def Allreduce(self, _in_place, buffer, op=None):  # noqa: N802 (MPI's names)
        buffer *= 2

    def Iallreduce(self, _in_place, buffer, op=None):  # noqa: N802
        buffer *= 2
        return type("Done", (), {"Test": lambda self: True, "Wait": lambda self: None})()

    def Bcast(self, buffer, root=0):  # noqa: N802
        pass


@pytest.mark.parametrize("nccl", [False, True], ids=["wheel-without-nccl", "nccl"])
def test_comm_auto_falls_back_to_mpi_without_nccl(monkeypatch, capsys, nccl):
    """CuPy's wheels do not bring NCCL: --comm auto then reduces through MPI (staged) and says so once."""
    pytest.importorskip("mpi4py")
    monkeypatch.setenv("MINIDL_CUDA_AWARE_MPI", "0")
    fake_cupy.install(monkeypatch, device_count=1, nccl=nccl)
    world = World(rank=0, size=2, comm=_LoopbackComm(), gpu_comm="auto")
    array = backend.to_device(np.arange(4.0), "cuda:0")
    with backend.device_context(backend.Device("cuda:0")):
        collectives.all_reduce(array, world=world)
        collectives.all_reduce(array, world=world)
    np.testing.assert_array_equal(backend.to_numpy(array), 4 * np.arange(4.0))
    err = capsys.readouterr().err
    if nccl:
        assert world.gpu_comm == "nccl" and err == ""
    else:
        assert world.gpu_comm == "mpi"
        assert err.count("\n") == 1 and "cannot load NCCL" in err and "staged through host memory" in err


def test_nccl_missing_on_one_process_means_mpi_everywhere(monkeypatch):
    fake_cupy.install(monkeypatch, device_count=1, nccl=True)
    world = _world(0, 2, 1, [False])   # the other process's CuPy has no NCCL
    world.comm = _LoopbackComm()
    monkeypatch.setenv("MINIDL_CUDA_AWARE_MPI", "0")
    assert collectives.resolve_gpu_comm(world) == "mpi"
