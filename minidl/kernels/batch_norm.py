"""Batch norm's fast path: the reference's formulas, with every pass over the activations fused.

The math is the reference's (``minidl.functional.normalization``); what differs is
how the activations are walked. The reference forms xhat, the products and the sums
as whole-array expressions; here four per-channel passes do all of it, each reading
its inputs once, and a device's ``passes`` module implements them:

    channel_sums(x)                                   sum over all but the channel axis
    channel_centered_dots(x, mean, other=None)        sum((x - mean) * other), other = x - mean
    channel_gradient_sums(x, mean, gy, gate=None)     both of backward's sums in one pass
    channel_centered_affine(x, mean, scale, shift, other=None, other_scale=None, gate=None)
                                                      (x - mean) * scale + shift [+ other] [* other_scale]
    channel_centered_affine_relu(x, mean, scale, shift)
                                                      relu of the same, and where it is > 0
    in_layout_of(x, a)                                a in x's memory layout

``cpu/channel_passes.py`` walks cache-sized chunks on the worker threads;
``cuda/channel_passes.py`` runs the affine maps as raw CUDA kernels. Nothing but the
centred statistics and x is kept for backward: xhat is recomputed chunk by chunk.

With ``relu`` the kernel is batch norm followed by a ReLU (``functional.fused.batch_norm_relu``,
for training): the forward's affine pass clips at 0 and notes where y > 0 (one byte per
value, where the ReLU would keep its four-byte output), and backward's two passes mask gy
with it (``gate``), so the ReLU costs no pass over memory of its own.
"""
from __future__ import annotations

from .. import backend


class BatchNormKernel:
    """Batch norm forward and backward on raw arrays; inputs x, then gamma and beta if given.

    Args:
        passes: the device's per-channel passes (module doc).
        training: batch statistics (updating the running ones in place) or running statistics.
        has_weight, has_bias: whether gamma and beta are inputs.
        eps, momentum: as ``F.batch_norm``.
        running_mean, running_var: the caller's (C,) buffers, or None (training only).
        channel_reduce: synchronised batch norm's sum over processes, or None.
        relu: followed by a ReLU (training only; module doc).
    """

    algorithm = "fused passes"   # what minidl.viz shows for the call

    def __init__(self, passes, training: bool, has_weight: bool, has_bias: bool, eps: float, momentum: float,
                 running_mean=None, running_var=None, channel_reduce=None, relu: bool = False):
        assert training or not relu, "batch norm + ReLU is fused for training only"
        self.relu = relu
        self.passes, self.training = passes, training
        self.has_weight, self.has_bias, self.eps, self.momentum = has_weight, has_bias, eps, momentum
        self.running_mean, self.running_var, self.channel_reduce = running_mean, running_var, channel_reduce

    def _total(self, values):
        """Per-channel totals of this process, summed over all processes when synchronised."""
        return values if self.channel_reduce is None else self.channel_reduce(values)

    def _scale(self, inv_std, gamma):
        return inv_std if gamma is None else inv_std * gamma

    def forward(self, x, *affine):
        # x (N,C,*S) -> mean, inv_std (C,) -> y = (x - mean) * gamma * inv_std + beta, in x's layout
        xp = backend.get_array_module(x)
        gamma = affine[0] if self.has_weight else None
        beta = affine[-1] if self.has_bias else None
        c = x.shape[1]
        if self.training:
            sums = self.passes.channel_sums(x)
            if self.channel_reduce is None:
                m = x.size // c
            else:   # the global count travels with the sums, as a 0-d array on x's device (no sync)
                totals = self._total(xp.concatenate([sums, xp.asarray([x.size // c], dtype=sums.dtype)]))
                sums, m = totals[:c], totals[c]
            mean = sums / m
            var = self._total(self.passes.channel_centered_dots(x, mean)) / m
            inv_std = 1.0 / xp.sqrt(var + self.eps)
            if self.running_mean is not None:
                mom = self.momentum
                self.running_mean *= 1.0 - mom
                self.running_mean += mom * mean
                self.running_var *= 1.0 - mom
                self.running_var += (mom * m / (m - 1)) * var
            self.m = m
        else:   # copies in x's dtype: a later training step changes the buffers in place
            mean = self.running_mean.astype(x.dtype)
            inv_std = 1.0 / xp.sqrt(self.running_var.astype(x.dtype) + self.eps)
        self.running_mean = self.running_var = None     # backward never needs the buffers
        self.x, self.mean, self.inv_std, self.gamma = x, mean, inv_std, gamma
        scale = self._scale(inv_std, gamma)
        if not self.relu:
            self.gate = None
            return self.passes.channel_centered_affine(x, mean, scale, beta)
        y, self.gate = self.passes.channel_centered_affine_relu(x, mean, scale, beta)   # gate: where y > 0
        return y

    def backward(self, gy, needs):
        x, mean, inv_std, gamma, passes = self.x, self.mean, self.inv_std, self.gamma, self.passes
        want_x = needs[0]
        want_gamma = self.has_weight and needs[1]
        want_beta = self.has_bias and needs[-1]
        gy = passes.in_layout_of(x, gy)
        gx = sum_gy = sum_gy_xhat = None
        if self.training and (want_x or want_gamma or self.relu or self.channel_reduce is not None):
            sum_gy, sum_gy_xc = passes.channel_gradient_sums(x, mean, gy, gate=self.gate)
            sum_gy_xhat = sum_gy_xc * inv_std
            global_gy, global_gy_xhat = sum_gy, sum_gy_xhat
            if self.channel_reduce is not None:
                # gamma and beta see this slice's rows only: their gradients are the local
                # sums. x's needs the global batch's, asked for by every process alike.
                xp = backend.get_array_module(x)
                c = x.shape[1]
                both = self._total(xp.concatenate([sum_gy, sum_gy_xhat]))
                global_gy, global_gy_xhat = both[:c], both[c:]
            if want_x:
                # gx = gamma * inv_std * (gy - mean(gy) - xhat * mean(gy * xhat)), in one pass:
                # (gy + (x - mean) * (-inv_std * mean(gy * xhat)) - mean(gy)) * gamma * inv_std
                gx = passes.channel_centered_affine(x, mean, -inv_std * global_gy_xhat / self.m,
                                                    -global_gy / self.m, other=gy,
                                                    other_scale=self._scale(inv_std, gamma), gate=self.gate)
        elif want_x:   # evaluation: a fixed per-channel affine map
            zero = backend.get_array_module(mean).zeros_like(mean)
            gx = passes.channel_centered_affine(gy, zero, self._scale(inv_std, gamma))
        if not self.training and want_gamma:
            sum_gy_xhat = passes.channel_centered_dots(x, mean, gy) * inv_std
        if want_beta and sum_gy is None:
            sum_gy = passes.channel_sums(gy)
        assert gx is None or gx.shape == x.shape
        grads = (gx,)
        if self.has_weight:
            grads += (sum_gy_xhat if want_gamma else None,)
        if self.has_bias:
            grads += (sum_gy if want_beta else None,)
        return grads
