"""What a training loop needs to train one model data-parallel, in one object.

    parallel = DataParallel(model)            # broadcasts rank 0's weights, wires sync BN
    loader = DataLoader(..., shard=parallel.shard)
    for x, y in loader:                       # this process's slice of the global batch
        parallel.set_batch_slice(start, total)
        loss = ...; loss.backward(scale)      # scale: slice size * processes / total
        parallel.finish_gradients()           # the mean gradient over all processes
        optimizer.step()

The pieces that make N processes run the one-process run (minidl's promise):

* batches: rank r takes its contiguous slice of every global batch, and random
  augmentation is drawn for the global batch (``DataLoader(shard=...)``);
* dropout: every Dropout layer draws the global batch's mask and keeps its slice
  (``set_batch_slice``), so the dropout generators stay equal on all processes;
* batch norm: statistics of the global batch (``sync_bn=True``, PyTorch's
  SyncBatchNorm); with ``sync_bn=False`` each process normalises its own slice, as
  PyTorch DDP does by default, and the running statistics of rank 0 are the ones
  kept (``sync_buffers`` before evaluating or saving);
* gradients: each process's loss is its slice's mean loss times slice size *
  processes / global batch (1 for equal slices; the Trainer does it), so that the
  reducer's mean over processes is the gradient of the global batch's mean loss;
* metrics: sums over all processes (``all_reduce``).
"""
from __future__ import annotations

from .collectives import all_reduce, broadcast
from .reducer import DEFAULT_BUCKET_BYTES, GradientReducer
from .world import DistributedError, World, get_world as _current_world


class DataParallel:
    """Data-parallel training of ``model`` over the processes of ``world``.

    Args:
        model: an ``nn.Module``, built identically on every process (on this
            process's device).
        world: the World (default: the current one, ``minidl.distributed.init()``).
        sync_bn: batch-norm statistics over the global batch (True) or per process.
        bucket_bytes, overlap: see ``GradientReducer``.

    In a world of one process every method is a no-op and nothing is changed, so a
    training loop written with it runs bit-identically to one written without.
    """

    def __init__(self, model, world: World | None = None, sync_bn: bool = True,
                 bucket_bytes: int = DEFAULT_BUCKET_BYTES, overlap: bool = True):
        self.model, self.world, self.sync_bn = model, world or _current_world(), bool(sync_bn)
        self.reducer = None
        if self.world.size == 1:
            return
        self._check_same_model()
        self.broadcast_state()
        if self.sync_bn:
            for module in self._modules_with("channel_reduce"):
                module.channel_reduce = self._channel_sum
        self.reducer = GradientReducer(model.parameters(), bucket_bytes=bucket_bytes, overlap=overlap,
                                       world=self.world)

    # ---- who holds what -----------------------------------------------------------
    @property
    def shard(self):
        """``(rank, size)`` for ``DataLoader(shard=...)``, or None in a world of one process."""
        return None if self.world.size == 1 else (self.world.rank, self.world.size)

    def _modules_with(self, attribute: str) -> list:
        return [m for m in self.model.modules() if hasattr(m, attribute)]

    def _check_same_model(self) -> None:
        """Every process must hold the same parameters: else the buckets would not line up."""
        layout = [(name, tuple(p.shape), str(p.dtype)) for name, p in self.model.named_parameters()]
        for rank, other in enumerate(self.world.allgather_object(layout)):
            if other != layout:
                diff = next((f"{a} vs {b}" for a, b in zip(layout, other) if a != b),
                            f"{len(layout)} vs {len(other)} parameters")
                raise DistributedError(f"DataParallel: rank {rank} holds a different model than rank "
                                       f"{self.world.rank} ({diff})")

    # ---- one step -------------------------------------------------------------------
    def set_batch_slice(self, start: int, total: int) -> None:
        """Tell the Dropout layers that the next forward holds rows start.. of ``total``."""
        if self.world.size > 1:
            for module in self._modules_with("batch_slice"):
                module.batch_slice = (int(start), int(total))

    def finish_gradients(self) -> None:
        """Wait for the gradient buckets: every ``p.grad`` is then the mean over all processes."""
        if self.reducer is not None:
            self.reducer.wait()

    # ---- state and metrics ----------------------------------------------------------
    def _channel_sum(self, values):
        return all_reduce(values, "sum", world=self.world)

    def all_reduce(self, array, op: str = "sum"):
        """Sum (or max/min) ``array`` over all processes in place; returns it."""
        return all_reduce(array, op, world=self.world)

    def broadcast_state(self) -> None:
        """Copy rank 0's parameters and buffers into every process's model, in place."""
        for p in self.model.parameters():
            broadcast(p.data, 0, world=self.world)
        self.sync_buffers(force=True)

    def sync_buffers(self, force: bool = False) -> None:
        """Without sync BN, give every process rank 0's running statistics (before eval or save).

        With sync BN they are equal already: every process computes them from the
        same global statistics.
        """
        if self.world.size > 1 and (force or not self.sync_bn):
            for array in self.model.buffers():
                broadcast(array, 0, world=self.world)
