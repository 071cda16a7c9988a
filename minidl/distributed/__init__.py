"""Data-parallel training over MPI (CPUs, any number of machines) and NCCL (GPUs).

Every process holds a full copy of the model and trains on its slice of each global
batch; gradients are averaged over the processes before every optimizer step, so
all copies stay equal. minidl's promise on top: a run on N processes is the same
run as on one process with the same global batch (same data order, augmentation,
dropout masks, batch-norm statistics, metrics), up to float rounding in the sums.

    from minidl import distributed as dist
    world = dist.init()              # rank, size, local_rank from the MPI launcher
    dist.all_reduce(array)           # in place, summed over all processes
    dist.broadcast(array, root=0)    # in place, root's values everywhere
    reducer = dist.GradientReducer(model.parameters())   # buckets, overlapped with backward
    loss.backward(); reducer.wait(); optimizer.step()

Modules: ``world`` (who is who), ``collectives`` (all-reduce and broadcast over the
``_mpi`` and ``_nccl`` transports), ``reducer`` (gradient buckets), ``factors`` (large
dense layers split over the processes of one host, through ``_shm``'s shared memory),
``data_parallel`` (what the trainer needs: sharded batches, sync batch norm, global
dropout masks, reduced metrics), ``launch`` (devices, start-up, failures). Only these
modules import mpi4py and CuPy's NCCL, lazily.
"""
from .collectives import all_reduce, broadcast, iall_reduce
from .reducer import DEFAULT_BUCKET_BYTES, GradientReducer
from .data_parallel import DataParallel
from .world import (DistributedError, World, barrier, get_world, init, initialized, is_main, local_rank, rank,
                    world_size)

__all__ = ["init", "get_world", "rank", "world_size", "local_rank", "is_main", "barrier", "all_reduce",
           "broadcast", "iall_reduce", "GradientReducer", "DEFAULT_BUCKET_BYTES", "DataParallel", "World",
           "DistributedError", "initialized"]
