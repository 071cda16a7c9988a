"""Batch normalisation layers: BatchNorm1d, BatchNorm2d, and SyncBatchNorm for data parallelism.

Each layer owns a learned scale and shift per channel (``weight``, ``bias``) and
the running statistics (``running_mean``, ``running_var`` buffers) and calls
``F.batch_norm``. state_dict keys are PyTorch's without ``num_batches_tracked``:
minidl's momentum is always a number (PyTorch's ``momentum=None``, a cumulative
average that needs the count, is not supported), so there is nothing to count.

``SyncBatchNorm`` takes its statistics over the global batch of a data-parallel run:
it hands ``F.batch_norm`` a ``channel_reduce`` that sums per-channel totals over the
processes of its ``process_group``. nn sits below ``minidl.distributed`` and never
imports it: the group is an object the caller passes in (``minidl.distributed.World``
or ``DataParallel``), at construction or through ``convert_sync_batchnorm``.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..functional.fused import batch_norm_relu
from .module import Module, Parameter


class _BatchNorm(Module):
    """Shared by the batch-norm layers (PyTorch's ``_BatchNorm``).

    Args:
        num_features: C, the number of channels (axis 1 of the input).
        eps: added to the variance before the square root.
        momentum: running = (1 - momentum) * running + momentum * batch statistic
            (PyTorch's convention; Keras's "decay 0.99" is momentum 0.01).
        affine: learn ``weight`` (gamma, ones) and ``bias`` (beta, zeros); without
            them the layer only normalises.
        track_running_stats: keep ``running_mean``/``running_var`` buffers and use
            them in eval mode; without them the layer normalises with the batch's
            own statistics in eval mode too (PyTorch's rule).
        dtype: of the parameters and buffers (float32 by default).
    """

    _ndims = ()   # the input ranks the layer accepts
    # PyTorch's step counter (used only when momentum=None, which minidl does not offer):
    # a PyTorch state_dict's counters are accepted and skipped by load_state_dict.
    _foreign_state = ("num_batches_tracked",)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, *,
                 dtype=np.float32):
        super().__init__()
        if num_features < 1 or eps <= 0 or momentum is None or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{type(self).__name__}: need num_features >= 1, eps > 0 and momentum in [0, 1], "
                             f"got {num_features}, {eps}, {momentum}")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        self.weight = Parameter(np.ones(num_features, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype)) if affine else None
        self.register_buffer("running_mean", np.zeros(num_features, dtype) if track_running_stats else None)
        self.register_buffer("running_var", np.ones(num_features, dtype) if track_running_stats else None)

    def _check_input(self, x) -> None:
        if x.ndim not in self._ndims or x.shape[1] != self.num_features:
            axes = " or ".join({2: "(N, C)", 3: "(N, C, L)", 4: "(N, C, H, W)"}[n] for n in self._ndims)
            raise ValueError(f"{type(self).__name__}: expected input {axes} with C={self.num_features}, "
                             f"got {tuple(x.shape)}")

    def _channel_reduce(self):
        """The sum over processes F.batch_norm gets (SyncBatchNorm's), or None: this batch alone."""
        return None

    def forward(self, x, *, relu: bool = False):
        """Normalise x (with batch statistics while training or without running ones).

        ``relu`` (minidl's, not PyTorch's): return relu(y) instead, computed in batch
        norm's own passes while training (``functional.fused.batch_norm_relu``: the same numbers as a
        ReLU layer after this one); ``nn.forward_chain`` asks for it.
        """
        self._check_input(x)
        batch_stats = self.training or self.running_mean is None
        normalize = batch_norm_relu if relu else F.batch_norm
        return normalize(x, self.weight, self.bias, self.running_mean, self.running_var, training=batch_stats,
                         momentum=self.momentum, eps=self.eps, channel_reduce=self._channel_reduce())

    def shape_info(self, shape):
        if len(shape) + 1 not in self._ndims or shape[0] != self.num_features:
            raise ValueError(f"{type(self).__name__}: input shape {tuple(shape)} does not have "
                             f"{self.num_features} channels first")
        return tuple(shape), ""

    def extra_repr(self):
        text = f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
        text += "" if self.affine else ", affine=False"
        return text + ("" if self.track_running_stats else ", track_running_stats=False")


class BatchNorm1d(_BatchNorm):
    """Batch norm over features. Shapes: x (N, C) or (N, C, L) -> the same (statistics over N, or N and L)."""
    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm per channel over (N, H, W). Shapes: x (N, C, H, W) -> same."""
    _ndims = (4,)


class SyncBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are those of the global batch of a data-parallel run.

    Every process normalises its slice with the mean and variance of all slices
    together, and backward uses the global batch's means too, so N processes train
    exactly as one process on the whole batch (PyTorch's ``nn.SyncBatchNorm``). Each
    forward and backward in training makes one all-reduce of per-channel sums:
    every process of the group must run the layer alike, also one whose slice is
    empty. In eval mode it is ``BatchNorm`` on the running statistics, which are the
    same on every process (they come from the same global statistics).

    Args:
        num_features, eps, momentum, affine, track_running_stats: as BatchNorm2d.
        process_group: the processes to synchronise over: any object with
            ``all_reduce(array, op="sum")`` that sums a 1-D array over them in place
            and returns it, e.g. ``minidl.distributed.get_world()`` or a
            ``DataParallel``. None (the default) normalises with this process's batch
            alone. Unlike PyTorch, where None means the default group: minidl's nn
            knows no processes, so the group comes from the caller
            (``convert_sync_batchnorm(model, world)``; ``DataParallel(model,
            sync_bn=True)`` does it).
        dtype: of the parameters and buffers.

    Shapes: x (N, C), (N, C, L) or (N, C, H, W) -> same.
    """

    _ndims = (2, 3, 4)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None, *, dtype=np.float32):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype=dtype)
        if process_group is not None and not callable(getattr(process_group, "all_reduce", None)):
            raise ValueError(f"SyncBatchNorm: process_group must have an all_reduce(array, op) method "
                             f"(e.g. minidl.distributed.get_world()), got {type(process_group).__name__}")
        self.process_group = process_group

    def _channel_sum(self, values):
        """The channel_reduce handed to F.batch_norm: per-channel totals summed over the group."""
        return self.process_group.all_reduce(values, "sum")

    def _channel_reduce(self):
        synchronised = self.process_group is not None and (self.training or self.running_mean is None)
        return self._channel_sum if synchronised else None

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """Replace every batch-norm layer of ``module`` by a SyncBatchNorm over ``process_group``.

        As PyTorch's: the layers are found recursively; each new layer takes over
        the old one's Parameter objects and buffer arrays (so an optimizer built
        before keeps working, and device and dtype stay), its settings and its
        training flag, and takes the old one's place among its parent's children
        (so parameter order and state_dict keys are unchanged). SyncBatchNorm
        layers are converted too, to the new group.

        Args:
            module: a Module (changed in place).
            process_group: as ``SyncBatchNorm``'s.
        Returns:
            ``module``, or a new SyncBatchNorm when ``module`` itself is a batch-norm layer.
        """
        output = module
        if isinstance(module, _BatchNorm):
            output = cls(module.num_features, module.eps, module.momentum, module.affine,
                         module.track_running_stats, process_group)
            output.weight, output.bias = module.weight, module.bias
            output.register_buffer("running_mean", module.running_mean)
            output.register_buffer("running_var", module.running_var)
            output.training = module.training
        for name, child in list(module.named_children()):
            setattr(output, name, cls.convert_sync_batchnorm(child, process_group))
        return output

    def extra_repr(self):
        return super().extra_repr() + ("" if self.process_group is None else ", synchronised")
