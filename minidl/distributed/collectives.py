"""The collectives the trainer uses: all-reduce and broadcast of arrays, in place.

Each call picks its transport from the array: host (NumPy) arrays go through MPI;
GPU (CuPy) arrays through NCCL, or through MPI when the world was initialised with
``gpu_comm="mpi"``. With ``gpu_comm="auto"`` the first GPU collective decides, on
every process alike: NCCL when every process's CuPy can load it (CuPy's wheels do
not bring the NCCL library), else MPI, and rank 0 says so in one line. In a world
of one process every call returns at once, so code written for N processes runs
unchanged on one.

Every process must make the same calls in the same order with arrays of the same
shape and dtype: that is what a collective is. A call that one process skips leaves
the others waiting.
"""
from __future__ import annotations

import sys

from .. import backend
from ._mpi import MPITransport, Request
from .world import World, get_world as _current_world

OPS = ("sum", "max", "min")


def resolve_gpu_comm(world: World) -> str:
    """``world.gpu_comm`` with "auto" settled to "nccl" or "mpi" (collective while it is "auto").

    NCCL when every process's CuPy can load it; else MPI (CUDA-aware when the MPI
    library reports it, else staged through host memory), said in one line by rank 0.
    """
    if world.gpu_comm == "auto":
        from ._nccl import nccl_available
        everywhere = all(world.allgather_object(nccl_available()))
        world.gpu_comm = "nccl" if everywhere else "mpi"
        if not everywhere and world.is_main:
            how = "CUDA-aware" if MPITransport(world.comm).cuda_aware else "staged through host memory"
            print(f"minidl: CuPy cannot load NCCL on every process; --comm auto reduces GPU arrays with MPI "
                  f"instead ({how}); install NCCL (pip install nvidia-nccl-cu12) for NCCL", file=sys.stderr,
                  flush=True)
    return world.gpu_comm


def transport(array, world: World):
    """The transport that reduces ``array`` in ``world`` (created on first use)."""
    device = backend.device_of(array)
    if device.type == "cpu" or resolve_gpu_comm(world) == "mpi":
        if "mpi" not in world._transports:
            world._transports["mpi"] = MPITransport(world.comm)
        return world._transports["mpi"]
    key = str(device)
    if key not in world._transports:
        from ._nccl import NCCLTransport
        world._transports[key] = NCCLTransport(world, device)
    return world._transports[key]


def _check(name: str, array, op: str = "sum") -> None:
    if not backend.is_array(array):
        raise TypeError(f"{name}: expected a NumPy or CuPy array, got {type(array).__name__}")
    if op not in OPS:
        raise ValueError(f"{name}: op must be one of {OPS}, got {op!r}")


def _in_place(array, run):
    """Run a collective on ``array``; a non-contiguous array goes through a contiguous copy."""
    if array.flags.c_contiguous:
        return run(array)
    xp = backend.get_array_module(array)
    contiguous = xp.ascontiguousarray(array)
    result = run(contiguous)
    array[...] = contiguous
    return result


def all_reduce(array, op: str = "sum", world: World | None = None):
    """Reduce ``array`` over all processes, in place: afterwards every process holds the result.

    Args:
        array: a NumPy or CuPy array, the same shape and dtype on every process.
        op: "sum", "max" or "min".
        world: the World (default: the current one).
    Returns:
        ``array`` itself.
    """
    _check("all_reduce", array, op)
    world = world or _current_world()
    if world.size > 1 and array.size:
        _in_place(array, lambda a: transport(a, world).all_reduce(a, op))
    return array


def iall_reduce(array, op: str = "sum", world: World | None = None) -> Request:
    """Start ``all_reduce`` of a contiguous array without waiting; ``.wait()`` the returned Request.

    The array must not be read or written until the request has been waited for.
    """
    _check("iall_reduce", array, op)
    if not array.flags.c_contiguous:
        raise ValueError("iall_reduce: expected a contiguous array (it is reduced in place while you go on)")
    world = world or _current_world()
    if world.size == 1 or array.size == 0:
        return Request()
    return transport(array, world).iall_reduce(array, op)


def broadcast(array, root: int = 0, world: World | None = None):
    """Copy ``array`` of process ``root`` into ``array`` of every other process, in place.

    Returns:
        ``array`` itself.
    """
    _check("broadcast", array)
    world = world or _current_world()
    if not 0 <= root < world.size:
        raise ValueError(f"broadcast: root must be a rank in [0, {world.size}), got {root}")
    if world.size > 1 and array.size:
        _in_place(array, lambda a: transport(a, world).broadcast(a, root))
    return array
