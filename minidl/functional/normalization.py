"""Normalisation layers: batch normalisation and local response normalisation.

Batch norm (Ioffe & Szegedy, 2015) standardises every channel over the batch (and
the spatial positions), then applies a learned per-channel affine map:

    xhat = (x - mean) / sqrt(var + eps),    y = gamma * xhat + beta

In training, mean and var are the batch's own (var biased, i.e. divided by m, the
number of values per channel), and the running statistics a module keeps for
evaluation are updated in place with PyTorch's rule, r = (1 - momentum) * r +
momentum * batch_stat, where the variance that enters is the unbiased one (divided
by m - 1). In evaluation the running statistics replace the batch's, so y is a
fixed affine map of x.

Backward in training: mean and var depend on every x of the channel, so the gradient
is not just gamma * inv_std * gy. With g = gy per channel and xhat as above,

    dx = gamma * inv_std * (g - mean(g) - xhat * mean(g * xhat))

(the batch removes from gy its per-channel mean and its component along xhat);
d gamma = sum(g * xhat), d beta = sum(g).

Synchronised batch norm (data parallelism): with ``channel_reduce`` every process
holds a slice of a global batch, and every per-channel total goes through
``channel_reduce`` (a sum over the processes) before it is used, so the statistics
and dx's two means are the global batch's.

Local response normalisation (Krizhevsky et al., 2012, section 3.3) divides each
activation by a power of the energy of its neighbouring channels at the same pixel:

    b_c = a_c / (k + alpha * sum_{j = c - size//2}^{c + (size-1)//2} a_j^2) ** beta

with channels outside [0, C) left out of the sum. This is the paper's formula:
PyTorch's ``local_response_norm`` divides alpha by ``size``, so minidl with
``alpha`` equals PyTorch with ``alpha * size``. For an odd size the window is
centred; for an even size it reaches one channel further down than up (the same
window as PyTorch's).

This module holds the reference implementations. ``batch_norm`` asks
``minidl.kernels.dispatch`` for a fast path first (the same formulas with every pass
over the activations fused); LRN has none.
"""
from __future__ import annotations

import math
import numbers

from .. import backend
from ..autograd import Function, Tensor
from ..kernels import dispatch
from .fast_path import FastPath


# ---------------------------------------------------------------------------
# Batch normalisation
# ---------------------------------------------------------------------------

def _channel_axes(x) -> tuple:
    """Every axis but the channel axis 1: the axes batch norm averages over."""
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(values, ndim: int):
    """A (C,) array reshaped to (1, C, 1, ...) so that it broadcasts against (N, C, ...)."""
    return values.reshape((1, -1) + (1,) * (ndim - 2))


class BatchNorm(Function):
    # x (N,C,*S) -> mean, var (C,) over the m = N*prod(S) values of each channel (training)
    #   or the running statistics (evaluation)
    #   -> xhat = (x - mean) * inv_std -> y = gamma * xhat + beta (N,C,*S)
    # Inputs: x, then gamma if has_weight, then beta if has_bias.
    def __init__(self, training: bool, has_weight: bool, has_bias: bool, eps: float, momentum: float,
                 running_mean=None, running_var=None, channel_reduce=None):
        self.training, self.has_weight, self.has_bias = training, has_weight, has_bias
        self.eps, self.momentum = eps, momentum
        self.running_mean, self.running_var, self.channel_reduce = running_mean, running_var, channel_reduce

    def _total(self, values):
        """Per-channel totals of this process, summed over all processes when synchronised."""
        return values if self.channel_reduce is None else self.channel_reduce(values)

    def forward(self, x, *affine):
        xp = backend.get_array_module(x)
        gamma = affine[0] if self.has_weight else None
        beta = affine[-1] if self.has_bias else None
        axes, c = _channel_axes(x), x.shape[1]
        if self.training:
            sums, m = x.sum(axis=axes), x.size // c
            if self.channel_reduce is not None:   # the global batch: every process's sums and count
                totals = self.channel_reduce(xp.concatenate([sums, xp.asarray([m], dtype=sums.dtype)]))
                sums, m = totals[:c], totals[c]
            mean = sums / m
            centered = x - _per_channel(mean, x.ndim)
            var = self._total((centered * centered).sum(axis=axes)) / m   # two passes: no cancellation
            if self.running_mean is not None:   # the caller's buffers, in place; unbiased variance
                self.running_mean *= 1.0 - self.momentum
                self.running_mean += self.momentum * mean
                self.running_var *= 1.0 - self.momentum
                self.running_var += self.momentum * m / (m - 1) * var
            self.m = m
        else:   # copies in x's dtype: a later training step changes the buffers in place
            mean, var = self.running_mean.astype(x.dtype), self.running_var.astype(x.dtype)
            centered = x - _per_channel(mean, x.ndim)
        self.running_mean = self.running_var = None   # backward never needs them
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        xhat = centered * _per_channel(inv_std, x.ndim)
        y = xhat if gamma is None else xhat * _per_channel(gamma, x.ndim)
        if beta is not None:
            y = y + _per_channel(beta, x.ndim)
        self.save_for_backward(xhat, inv_std, gamma)
        return y

    def backward(self, gy):
        xhat, inv_std, gamma = self.saved_arrays
        xp = backend.get_array_module(gy)
        axes, c, ndim = _channel_axes(gy), gy.shape[1], gy.ndim
        sum_gy, sum_gy_xhat = gy.sum(axis=axes), (gy * xhat).sum(axis=axes)
        scale = inv_std if gamma is None else gamma * inv_std
        if self.training:
            # gamma and beta act on this process's rows only (their sums stay local);
            # x's gradient needs the global batch's means.
            both = self._total(xp.concatenate([sum_gy, sum_gy_xhat]))
            mean_gy, mean_gy_xhat = both[:c] / self.m, both[c:] / self.m
            gx = _per_channel(scale, ndim) * (gy - _per_channel(mean_gy, ndim) - xhat * _per_channel(mean_gy_xhat, ndim))
        else:   # a fixed affine map of x
            gx = gy * _per_channel(scale, ndim)
        assert gx.shape == xhat.shape
        grads = (gx,)
        if self.has_weight:
            grads += (sum_gy_xhat,)
        if self.has_bias:
            grads += (sum_gy,)
        return grads


def _data(value):
    return value.data if isinstance(value, Tensor) else value


def _check_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps, synchronized=False):
    """Raise ValueError, naming batch_norm, for anything the kernels cannot handle."""
    shape = tuple(x.shape)
    if len(shape) < 2:
        raise ValueError(f"batch_norm: expected x of shape (N, C, *S): (N, C), (N, C, L), (N, C, H, W), ..., "
                         f"got {shape}")
    c = shape[1]
    for name, value in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                        ("running_var", running_var)):
        if value is None:
            continue
        if tuple(value.shape) != (c,):
            raise ValueError(f"batch_norm: expected {name} of shape ({c},) for x of shape {shape} "
                             f"with {c} channels, got {tuple(value.shape)}")
        if backend.device_of(_data(value)) != backend.device_of(_data(x)):
            raise ValueError(f"batch_norm: {name} is on {backend.device_of(_data(value))} "
                             f"but x is on {backend.device_of(_data(x))}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: give both running_mean and running_var, or neither")
    if not training and running_mean is None:
        raise ValueError("batch_norm: evaluation mode (training=False) needs running_mean and running_var")
    if training:
        m = shape[0] * math.prod(int(n) for n in shape[2:])
        # Synchronised: the global batch counts, not this slice. An empty batch is
        # PyTorch's exception: an empty result, the running statistics untouched.
        if m == 1 and not synchronized:
            raise ValueError(f"batch_norm: training needs more than one value per channel, "
                             f"got x of shape {shape}")
        for name, buf in (("running_mean", running_mean), ("running_var", running_var)):
            if buf is not None and _data(buf).dtype.kind != "f":
                raise ValueError(f"batch_norm: {name} must be a floating-point array to be updated "
                                 f"in place, got dtype {_data(buf).dtype}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"batch_norm: momentum must be in [0, 1], got {momentum}")
    if not eps > 0:
        raise ValueError(f"batch_norm: eps must be positive, got {eps}")


def batch_norm(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, running_mean=None,
               running_var=None, training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
               channel_reduce=None) -> Tensor:
    """Batch normalisation over every axis but the channel axis 1.

    Args:
        x: input Tensor, (N, C, *S): (N, C), (N, C, L), (N, C, H, W), (N, C, D, H, W), ...
            N may be 0 (see below).
        weight: gamma, a (C,) Tensor, or None for no scaling.
        bias: beta, a (C,) Tensor, or None for no shift.
        running_mean, running_var: (C,) raw float arrays on x's device (a module's
            buffers; Tensors are accepted and their data used). In training they are
            updated in place, running_var with the unbiased batch variance; they may
            both be None in training (then nothing is tracked). Evaluation needs them.
        training: True normalises with the batch's mean and biased variance; False
            with the running statistics.
        momentum: weight of the new batch statistic in the running average
            (PyTorch's convention; Keras's decay 0.99 is momentum 0.01).
        eps: added to the variance before the square root.
        channel_reduce: for synchronised batch norm under data parallelism, a
            function that sums a 1-D array of per-channel totals over all processes
            and returns the sums (``minidl.distributed`` provides one). x is then
            this process's slice of a global batch, training uses the global
            batch's statistics, and every process must call batch_norm alike.
            A process with no rows (N = 0) contributes zero sums and a count of 0,
            and calls channel_reduce as often as the others (twice forward, once
            backward), so the collectives match. None (the default) uses x's own
            statistics. No effect in evaluation.
    Returns:
        y, a Tensor with x's shape.
    Shapes:
        x (N, C, *S), weight/bias/running stats (C,) -> y (N, C, *S).

    Empty batches: in evaluation, and in synchronised training, N = 0 runs as any
    other batch. In unsynchronised training an empty x gives an empty y and leaves
    the running statistics as they are (PyTorch's rule); weight and bias get zero
    gradients.

    Differences from PyTorch, on purpose: the positional order is minidl's (x,
    weight, bias, running_mean, running_var, training, ...) where PyTorch's is
    (input, running_mean, running_var, weight, bias, training, ...); the keyword
    names are the same, so keyword calls mean the same in both.
    Raises:
        ValueError for a wrong rank, a channel mismatch, arrays on another device,
        a single value per channel in training, or missing running statistics in
        evaluation.
    """
    settings, affine = batch_norm_settings(x, weight, bias, running_mean, running_var, training, momentum, eps,
                                           channel_reduce)
    fast = dispatch.batch_norm(_data(x), *settings)
    return (BatchNorm(*settings) if fast is None else FastPath("BatchNorm", fast))(x, *affine)


def batch_norm_settings(x, weight, bias, running_mean, running_var, training, momentum, eps,
                        channel_reduce) -> tuple:
    """``batch_norm``'s arguments checked, as (the BatchNorm Function's settings, its affine inputs).

    Raises:
        ValueError as ``batch_norm``.
    """
    _check_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps,
                      synchronized=channel_reduce is not None)
    if training and channel_reduce is None and x.size == 0:
        # Nothing to normalise and no statistics to learn: y = gamma * xhat + beta of no
        # values, which is what evaluation with any statistics computes.
        xp = backend.get_array_module(_data(x))
        with backend.device_context(backend.device_of(_data(x))):
            running_mean, running_var = xp.zeros(x.shape[1], x.dtype), xp.ones(x.shape[1], x.dtype)
        training = False
    affine = [t for t in (weight, bias) if t is not None]
    settings = (bool(training), weight is not None, bias is not None, float(eps), float(momentum),
                None if running_mean is None else _data(running_mean),
                None if running_var is None else _data(running_var), channel_reduce if training else None)
    return settings, affine


# ---------------------------------------------------------------------------
# Local response normalisation
# ---------------------------------------------------------------------------

def _channel_window_sum(a, below: int, above: int):
    """out[:, c] = sum of a[:, j] for j in [c - below, c + above] within [0, C).

    One shifted, in-place slice add per offset: ``below + above + 1`` passes, each
    adding exactly the terms of the window (no running cumulative sum, whose
    differences would cancel catastrophically next to large channels).
    """
    # a (N,C,*S) -> out (N,C,*S)
    channels = a.shape[1]
    out = a.copy()
    for offset in range(1, min(above, channels - 1) + 1):  # channel c gathers c + offset
        out[:, :channels - offset] += a[:, offset:]
    for offset in range(1, min(below, channels - 1) + 1):  # channel c gathers c - offset
        out[:, offset:] += a[:, :channels - offset]
    return out


def _negative_power(xp, d, beta: float):
    """d ** -beta for d > 0, a new array.

    ``power`` is several times slower than ``sqrt``, and AlexNet's beta = 0.75 is
    1 / sqrt(d * sqrt(d)), so that case (and beta = 0.5, 1) avoid it.
    """
    if beta == 0.75:
        r = xp.sqrt(d)
        r *= d
        xp.sqrt(r, out=r)
        return xp.reciprocal(r, out=r)
    if beta == 0.5:
        r = xp.sqrt(d)
        return xp.reciprocal(r, out=r)
    if beta == 1.0:
        return xp.reciprocal(d)
    return xp.power(d, -beta)


class LocalResponseNorm(Function):
    # x (N,C,*S) -> d = k + alpha * window_sum_C(x^2) (N,C,*S) -> y = x * d^-beta (N,C,*S)
    # window of channel c: [c - size//2, c + (size-1)//2], clipped to [0, C).
    # Saved for backward: x (kept alive by the graph anyway) and d.
    def __init__(self, size, alpha, beta, k):
        self.below, self.above = size // 2, (size - 1) // 2
        self.alpha, self.beta, self.k = alpha, beta, k

    def forward(self, x):
        xp = backend.get_array_module(x)
        d = _channel_window_sum(xp.square(x), self.below, self.above)
        d *= self.alpha
        d += self.k
        y = _negative_power(xp, d, self.beta)
        y *= x
        self.save_for_backward(x, d)
        return y

    def backward(self, gy):
        # y_c = x_c d_c^-beta and d_c depends on x_j for j in window(c), so
        #   dx_j = gy_j d_j^-beta - 2 alpha beta x_j * sum_{c : j in window(c)} gy_c y_c / d_c.
        # {c : j in window(c)} = [j - above, j + below]: the mirrored window, so the
        # same window sum with below and above swapped is the transpose we need.
        x, d = self.saved_arrays
        xp = backend.get_array_module(x)
        scale = _negative_power(xp, d, self.beta)       # d^-beta
        t = gy * x
        t *= scale
        t /= d                                          # gy * y / d
        back = _channel_window_sum(t, self.above, self.below)
        del t
        back *= x
        back *= 2.0 * self.alpha * self.beta
        gx = scale
        gx *= gy
        gx -= back
        assert gx.shape == x.shape
        return gx


def local_response_norm(x: Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 2.0) -> Tensor:
    """Local response normalisation across channels, with the paper's formula.

    b_c = a_c / (k + alpha * sum_{j=c-size//2}^{c+(size-1)//2} a_j^2) ** beta, channels
    outside [0, C) left out. Unlike PyTorch, alpha is NOT divided by size:
    ``F.local_response_norm(x, n, alpha)`` equals ``torch.nn.functional.
    local_response_norm(x, n, alpha * n)``. An even size's window reaches size//2
    channels down and size//2 - 1 up (PyTorch's choice too).

    Args:
        x: input Tensor (N, C, *S) with at least one spatial axis: (N, C, L),
            (N, C, H, W), (N, C, D, H, W), ... As in PyTorch, a 3-D x is (N, C, L), a
            batch of 1-D signals, not one (C, H, W) image: normalise one image as
            x.reshape(1, C, H, W). Any axis may be empty.
        size: number of channels in the window, a positive int.
        alpha: scale of the sum of squares, >= 0.
        beta: exponent.
        k: additive constant, > 0 (so the denominator is never zero).
    Returns:
        b, a Tensor with x's shape.
    Shapes:
        x (N, C, *S) -> b (N, C, *S).

    Differences from PyTorch, on purpose: alpha (above), and the defaults size=5,
    k=2.0 are the paper's (PyTorch's size has no default and its k is 1.0).
    """
    shape = tuple(x.shape)
    if len(shape) < 3:
        raise ValueError(f"local_response_norm: expected x of shape (N, C, *S) with at least 3 axes "
                         f"((N, C, L), (N, C, H, W), ...), got {shape}")
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"local_response_norm: size must be a positive int, got {size!r}")
    if not k > 0:
        raise ValueError(f"local_response_norm: k must be positive, got {k}")
    if not alpha >= 0:
        raise ValueError(f"local_response_norm: alpha must be >= 0, got {alpha}")
    return LocalResponseNorm(int(size), float(alpha), float(beta), float(k))(x)
