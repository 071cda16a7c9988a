"""What a training loop needs to train one model data-parallel, in one object.

    parallel = DataParallel(model)            # broadcasts rank 0's weights, syncs batch norm
    loader = DataLoader(..., shard=parallel.shard)
    for x, y in loader:                       # this process's slice of the global batch
        start, _, total = loader.batch_rows(step)
        with parallel.batch(start, total):    # Dropout draws the global batch's mask
            outputs = model(x)
        loss = loss_fn(outputs, y) if len(y) else None
        parallel.backward(loss, outputs, len(y), total)   # the global batch's mean gradient
        optimizer.step()

``minidl.train.Trainer`` does exactly this (and sums its metrics with
``parallel.all_reduce``); it uses a DataParallel over a world of one process when
it is given none, where every method reduces to the plain one-process step.

The pieces that make N processes run the one-process run (minidl's promise):

* batches: rank r takes its contiguous slice of every global batch, and random
  augmentation is drawn for the global batch (``DataLoader(shard=...)``);
* dropout: the forward runs inside ``nn.batch_slice(start, total)`` (``batch``):
  every Dropout layer draws the global batch's mask and keeps its slice, so the
  dropout generators stay equal on all processes;
* batch norm: statistics of the global batch (``sync_bn=True``: every batch-norm
  layer becomes an ``nn.SyncBatchNorm`` over this world, through
  ``SyncBatchNorm.convert_sync_batchnorm``); with ``sync_bn=False`` each process
  normalises its own slice, as PyTorch DDP does by default, and the running
  statistics of rank 0 are the ones kept (``sync_buffers`` before evaluating or saving);
* gradients: each process's loss is its slice's mean loss times slice size *
  processes / global batch (1 for equal slices; ``backward`` does it), so that the
  reducer's mean over processes is the gradient of the global batch's mean loss;
  when every process runs on one host, the large dense layers' weight gradients
  are formed from every process's factors in shared memory instead of all-reduced
  (``factors.py``: the same products one process computes, far fewer bytes);
* a process whose slice is empty (a last batch smaller than the number of
  processes) still runs forward and backward on its empty slice, so it takes part
  in every collective (sync batch norm's sums, the gradient buckets), and
  contributes zeros;
* metrics: sums over all processes (``all_reduce``).
"""
from __future__ import annotations

import contextlib

from .. import nn
from . import factors as _factors
from .collectives import all_reduce, broadcast
from .reducer import DEFAULT_BUCKET_BYTES, GradientReducer
from .world import DistributedError, World, get_world as _current_world


class DataParallel:
    """Data-parallel training of ``model`` over the processes of ``world``.

    Args:
        model: an ``nn.Module``, built identically on every process (on this
            process's device).
        world: the World (default: the current one, ``minidl.distributed.init()``).
        sync_bn: batch-norm statistics over the global batch (True: the model's
            batch-norm layers are replaced, in place, by ``nn.SyncBatchNorm`` layers
            over ``world`` that keep their parameters and buffers) or per process.
        bucket_bytes, overlap: see ``GradientReducer``.
        share_factors: form the weight gradients of the dense layers with at least
            ``FACTOR_MIN_WEIGHTS`` weights from every process's factors in the host's
            shared memory (``factors.py``) instead of all-reducing them: True, False,
            or None (the default) for "when it can": every process on one host, the
            model on the CPU. Such layers become ``FactorSharedLinear`` (same
            parameters, names and state_dict keys) and must run once per step.

    In a world of one process nothing is changed and every method reduces to the
    plain one-process step, so a training loop written with it runs bit-identically
    to one written without.
    """

    def __init__(self, model, world: World | None = None, sync_bn: bool = True,
                 bucket_bytes: int = DEFAULT_BUCKET_BYTES, overlap: bool = True, share_factors: bool | None = None):
        self.model, self.world, self.sync_bn = model, world or _current_world(), bool(sync_bn)
        self.reducer = self.factors = None
        if self.world.size == 1:
            return
        self._check_same_model()
        self.broadcast_state()
        if self.sync_bn:  # the same Parameter objects: an optimizer built before keeps working
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=self.world)
        shared = self._share_factors(share_factors)
        self.reducer = GradientReducer([p for p in model.parameters() if id(p) not in shared], bucket_bytes=bucket_bytes,
                                       overlap=overlap, world=self.world, factors=self.factors)

    def _share_factors(self, wanted) -> set:
        """Convert the large dense layers to FactorSharedLinear when wanted and possible; ids of their weights."""
        one_host = self.world.local_size == self.world.size and self.world.comm is not None
        on_cpu = all(p.device.type == "cpu" for p in self.model.parameters())
        if wanted and not (one_host and on_cpu):
            raise DistributedError("DataParallel(share_factors=True) needs every process on one host and the model "
                                   "on the CPU; pass share_factors=False (or None: where it can)")
        if wanted is False or not (one_host and on_cpu):
            return set()
        found = [(parent, name, child) for _, parent in self.model.named_modules()
                 for name, child in parent.named_children()
                 if type(child) is nn.Linear and child.weight.data.size >= _factors.FACTOR_MIN_WEIGHTS
                 and child.weight.requires_grad]
        if not found:
            return set()
        self.factors = _factors.FactorSharing(self.world, [child for _, _, child in found])
        for index, (parent, name, child) in enumerate(found):
            new = _factors.FactorSharedLinear.convert(child, self.factors, index)
            self.factors.layers[index] = new
            setattr(parent, name, new)
        return {id(child.weight) for _, _, child in found}

    # ---- who holds what -----------------------------------------------------------
    @property
    def shard(self):
        """``(rank, size)`` for ``DataLoader(shard=...)``, or None in a world of one process."""
        return None if self.world.size == 1 else (self.world.rank, self.world.size)

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
    def batch(self, start: int, total: int):
        """The context for the forward of rows ``start..`` of a global batch of ``total`` rows.

        ``nn.batch_slice(start, total)`` with several processes (Dropout draws the
        global batch's mask and keeps these rows; the dense layers split over the
        host's processes compute their outputs together); nothing with one.
        """
        if self.world.size == 1:
            return contextlib.nullcontext()
        if self.factors is not None:   # the split dense layers' forward runs within the step
            self.factors.prepare(total)
        return nn.batch_slice(start, total)

    def backward(self, loss, outputs, rows: int, total: int) -> None:
        """Backward of this process's share of the global batch's mean loss; then the reducer's wait.

        Afterwards every ``p.grad`` is, on every process, the gradient of the mean
        loss over the ``total`` rows of the global batch.

        Args:
            loss: the mean loss over this process's ``rows`` rows (a scalar Tensor),
                or None when ``rows`` is 0.
            outputs: the model's output Tensor for these rows. A process with no
                rows backpropagates zeros through it: its backward must make the
                same collectives as the others' (sync batch norm's sums, the
                gradient buckets), and contributes nothing.
            rows: this process's rows; total: the global batch's.

        The loss is scaled by rows * processes / total (1 when the batch splits
        evenly): the reducer's mean over processes of these gradients is then the
        global batch's, also for a short last batch split unevenly.
        """
        if self.factors is not None:
            self.factors.prepare(total)
        if rows:
            scale = rows * self.world.size / total
            loss.backward(None if scale == 1.0 else scale)
        else:
            (outputs.sum() * 0.0).backward()
        self.finish_gradients()

    def finish_gradients(self) -> None:
        """Wait for the gradient buckets: every ``p.grad`` is then the mean over all processes."""
        if self.reducer is not None:
            self.reducer.wait()

    # ---- state and metrics ----------------------------------------------------------
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
