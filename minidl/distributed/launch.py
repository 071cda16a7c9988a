"""Starting and stopping a data-parallel run so that it never hangs.

A collective waits for every process. So a process that fails on its own (a
missing file, no GPU for its local rank, different settings) must not simply
exit: the others would wait for it forever. Two rules keep a run from hanging:

* at start-up, every process reports its outcome in one collective (``agree``);
  if any failed, all of them stop there together, with the same one-line reason
  (naming the rank when the reason is not rank 0's);
* once training runs, a process that fails on its own ends the whole run
  (``MPI.COMM_WORLD.Abort`` through ``World.abort``); failures that every process
  meets at the same step (a non-finite loss, which is summed over all processes)
  end every process normally.

Also here: which device and how many CPU threads each process takes.
"""
from __future__ import annotations

import os
import socket

from .. import backend
from ..kernels.cpu import threads as cpu_threads
from .world import DistributedError, World


class StartupError(RuntimeError):
    """Raised on every process alike when any process could not start (see ``agree``)."""


def agree(world: World, error: str | None, facts: dict | None = None) -> None:
    """Collective: stop every process together if any failed or they disagree.

    Args:
        world: the World.
        error: this process's failure message, or None.
        facts: settings that must be equal on every process (JSON-able values), or None.
    Raises:
        StartupError on every process (the same message) when some process reported
        an error (the lowest such rank's; prefixed with its rank unless it is rank 0),
        or when a process's facts differ from rank 0's (naming the rank and key).
    """
    reports = world.allgather_object((error, facts))
    for rank, (message, _) in enumerate(reports):
        if message:
            raise StartupError(message if rank == 0 else f"rank {rank}: {message}")
    reference = reports[0][1] or {}
    for rank, (_, other) in enumerate(reports[1:], start=1):
        other = other or {}
        for key in sorted(set(reference) | set(other)):
            if reference.get(key) != other.get(key):
                raise StartupError(f"rank {rank} disagrees with rank 0 on {key}: {other.get(key)!r} vs "
                                   f"{reference.get(key)!r}; every process must run with the same settings and data")


def rank0_first(world: World, work, errors=(Exception,)):
    """``work()`` on rank 0, then on the other processes; a failure anywhere stops all together.

    For start-up work that must not run everywhere at once, such as a download into
    a cache that the processes share: rank 0 fills it, then the others read it.
    Each turn ends with ``agree``, so a failure (one of ``errors``) on any process
    raises StartupError on every process.

    Returns:
        what ``work()`` returned on this process.
    """
    result, error = None, None
    for turn in (True, False):  # rank 0's turn, then everyone else's
        if world.is_main == turn:
            try:
                result = work()
            except errors as exc:
                error = str(exc)
        agree(world, error)
    return result


def device_for(spec: str, world: World) -> backend.Device:
    """This process's device, made its current one (``backend.use_device``, in the calling thread).

    One process: ``spec`` as ``backend.parse_device`` reads it. Under MPI, ``cuda``
    (or ``auto`` with GPUs present) means this process's own GPU: the one whose index
    is its rank among the processes on its host when every process sees all the
    host's GPUs, or the one GPU it sees when its launcher gave each process its own
    (``CUDA_VISIBLE_DEVICES`` per rank, e.g. Slurm's ``--gpus-per-task=1``: every
    process's GPU is then its cuda:0). Either way the processes of a host must end
    on different physical GPUs: each reports its GPU's PCI address, and two the same
    stop the run. With CUDA and ``--comm auto`` this also settles NCCL or MPI
    (``collectives.resolve_gpu_comm``).

    Collective with several processes: every process calls it, and every process
    raises the same error.

    Raises:
        DistributedError for an explicit ``cuda:N`` with several processes, for
        processes that would share a GPU; backend.DeviceError as parse_device.
    """
    if world.size == 1:
        device = backend.parse_device(spec)
        backend.use_device(device)
        return device
    text = str(spec).strip().lower()
    device, error, identity = None, None, None
    try:
        if text.startswith("cuda:"):
            raise DistributedError(f"--device {spec}: with {world.size} processes each takes its own GPU; pass "
                                   "--device cuda")
        if text == "auto" and not backend.is_cuda_available():
            device = backend.CPU
        elif text in ("cuda", "auto"):
            count = backend.cuda_device_count()
            if count == 0:
                backend.parse_device("cuda")  # a clear DeviceError when CuPy or the driver is missing
            # all the host's GPUs visible: take the local rank's; fewer (one per process): take ours
            device = backend.parse_device(f"cuda:{world.local_rank if count >= world.local_size else 0}")
            identity = backend.device_identity(device.index)
        else:
            device = backend.parse_device(spec)
    except (backend.DeviceError, DistributedError) as exc:
        error = str(exc)
    reports = world.allgather_object((error, socket.gethostname(), identity))
    for rank, (message, _, _) in enumerate(reports):
        if message:
            raise DistributedError(message if rank == 0 else f"rank {rank}: {message}")
    taken = {}
    for rank, (_, host, gpu) in enumerate(reports):
        if gpu is not None and (host, gpu) in taken:
            raise DistributedError(f"ranks {taken[host, gpu]} and {rank} would share the GPU at {gpu} on {host}: "
                                   "start at most one process per GPU (per host: as many as it has GPUs), or "
                                   "give each process its own (CUDA_VISIBLE_DEVICES)")
        taken[host, gpu] = rank
    backend.use_device(device)
    if device.type == "cuda":
        from .collectives import resolve_gpu_comm
        resolve_gpu_comm(world)
    return device


def share_cpu_cores(world: World) -> int:
    """Give this process its share of the host's cores: cores / processes on the host.

    ``MINIDL_NUM_THREADS``, when set, wins. BLAS goes single-threaded either way:
    with several processes per host, each process's BLAS threads would fight the
    others' for the same cores.

    Returns:
        the number of worker threads this process will use.
    """
    if world.size == 1:
        return cpu_threads.num_threads()
    if not os.environ.get("MINIDL_NUM_THREADS", "").strip():
        os.environ["MINIDL_NUM_THREADS"] = str(max(1, cpu_threads.num_threads() // world.local_size))
    cpu_threads.pin_blas_to_one_thread()
    return cpu_threads.num_threads()
