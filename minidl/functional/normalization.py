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

Local response normalisation (Krizhevsky et al., 2012, section 3.3) divides each
activation by a power of the energy of its neighbouring channels at the same pixel:

    b_c = a_c / (k + alpha * sum_{j = c - size//2}^{c + (size-1)//2} a_j^2) ** beta

with channels outside [0, C) left out of the sum. This is the paper's formula:
PyTorch's ``local_response_norm`` divides alpha by ``size``, so minidl with
``alpha`` equals PyTorch with ``alpha * size``. For an odd size the window is
centred; for an even size it reaches one channel further down than up (the same
window as PyTorch's).
"""
from __future__ import annotations

import numbers

from .. import backend
from ..autograd import Function, Tensor
from ._per_channel import (channel_centered_affine, channel_centered_dots, channel_gradient_sums, channel_sums,
                           in_layout_of)


# ---------------------------------------------------------------------------
# Batch normalisation
# ---------------------------------------------------------------------------

def _per_channel(array, ndim: int):
    """A (C,) array reshaped to (1, C, 1, ...) so that it broadcasts against (N, C, ...)."""
    return array.reshape((1, -1) + (1,) * (ndim - 2))


class _BatchNorm(Function):
    """What training and evaluation batch norm share: the optional affine inputs.

    The Function's inputs are x followed by gamma (if given) and beta (if given);
    ``has_weight`` and ``has_bias`` say which of the two are present.
    """

    def __init__(self, has_weight: bool, has_bias: bool, eps: float):
        self.has_weight, self.has_bias, self.eps = has_weight, has_bias, eps

    def _split(self, affine):
        gamma = affine[0] if self.has_weight else None
        beta = affine[-1] if self.has_bias else None
        return gamma, beta

    def _grads(self, gx, sum_gy_xhat, sum_gy):
        """The gradients (x, gamma?, beta?) in input order: d gamma = sum(gy * xhat), d beta = sum(gy).

        The sums are (C,) arrays or None (not wanted).
        """
        grads = (gx,)
        if self.has_weight:
            grads += (None if sum_gy_xhat is None else sum_gy_xhat.reshape(-1),)
        if self.has_bias:
            grads += (None if sum_gy is None else sum_gy.reshape(-1),)
        return grads

    @staticmethod
    def _scale(inv_std, gamma):
        """The (C,) factor that multiplies x - mean: gamma * inv_std, or inv_std without gamma."""
        return inv_std if gamma is None else inv_std * gamma

    def _wants(self):
        """Whether the gradients of x, gamma and beta are wanted (False for absent inputs)."""
        wants = self.needs_input_grad
        want_gamma = self.has_weight and wants[1]
        want_beta = self.has_bias and wants[-1]
        return wants[0], want_gamma, want_beta


class BatchNormTraining(_BatchNorm):
    # x (N,C,*S) -> mean, var (C,) over the m = N*prod(S) values of each channel
    #   -> y = (x - mean) * gamma * inv_std + beta (N,C,*S), in x's memory layout
    # Saved for backward: x (the graph keeps it alive anyway, so it costs nothing),
    # mean and inv_std (per channel) and gamma. Backward recomputes x - mean chunk by
    # chunk instead of keeping an activation-sized xhat alive until then. The passes
    # run over cache-sized chunks (see _per_channel).
    #
    # Synchronised batch norm (data parallelism): with ``channel_reduce``, x is this
    # process's slice of a global batch and the statistics are the global batch's.
    # Every per-channel total goes through channel_reduce (a sum over the processes)
    # before it is used: forward the sums and the count, then the squared deviations
    # from the global mean; backward the two sums. m is then the global count.
    def __init__(self, has_weight, has_bias, eps, running_mean, running_var, momentum, channel_reduce=None):
        super().__init__(has_weight, has_bias, eps)
        self.running_mean, self.running_var, self.momentum = running_mean, running_var, momentum
        self.channel_reduce = channel_reduce

    def _total(self, values):
        """Per-channel totals of this process, summed over all processes when synchronised."""
        return values if self.channel_reduce is None else self.channel_reduce(values)

    def forward(self, x, *affine):
        xp = backend.get_array_module(x)
        gamma, beta = self._split(affine)
        c = x.shape[1]
        sums = channel_sums(x)
        if self.channel_reduce is None:
            m = x.size // c
        else:
            # The global count travels with the sums (processes may hold unequal
            # slices). It stays a 0-d array on x's device, so that no host
            # synchronisation stalls a GPU here; float32 counts are exact to 2**24.
            totals = self._total(xp.concatenate([sums, xp.asarray([x.size // c], dtype=sums.dtype)]))
            sums, m = totals[:c], totals[c]
        self.m = m
        mean = sums / m
        # Two-pass variance (mean of squared deviations): no cancellation, unlike E[x^2] - E[x]^2.
        var = self._total(channel_centered_dots(x, mean)) / m
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        y = channel_centered_affine(x, mean, self._scale(inv_std, gamma), beta)
        if self.running_mean is not None:
            # In place: these are the caller's buffers. Unbiased variance, as PyTorch.
            mom = self.momentum
            self.running_mean *= 1.0 - mom
            self.running_mean += mom * mean
            self.running_var *= 1.0 - mom
            self.running_var += (mom * m / (m - 1)) * var
        self.running_mean = self.running_var = None     # backward never needs the buffers
        self.save_for_backward(x, mean, inv_std, gamma)
        return y

    def backward(self, gy):
        x, mean, inv_std, gamma = self.saved_arrays
        want_x, want_gamma, want_beta = self._wants()
        c = x.shape[1]
        gy = in_layout_of(x, gy)
        m = self.m
        if self.channel_reduce is not None:
            # gamma and beta act on this slice's rows only: their gradients are the
            # local sums (the gradient reducer adds the processes' parts). x's
            # gradient needs the global batch's sums, both in one reduction, asked
            # for by every process whatever it wants, so the collectives match.
            xp = backend.get_array_module(x)
            sum_gy, sum_gy_xc = channel_gradient_sums(x, mean, gy)
            sum_gy_xhat = sum_gy_xc * inv_std
            both = self._total(xp.concatenate([sum_gy, sum_gy_xhat]))
            global_gy, global_gy_xhat = both[:c], both[c:]
        else:
            if not (want_x or want_gamma):
                return self._grads(None, None, channel_sums(gy) if want_beta else None)
            sum_gy, sum_gy_xc = channel_gradient_sums(x, mean, gy)   # one pass over x and gy
            sum_gy_xhat = sum_gy_xc * inv_std
            global_gy, global_gy_xhat = sum_gy, sum_gy_xhat
        gx = None
        if want_x:
            # With g = gamma * gy, the closed form is
            #   dx = inv_std / m * (m * g - sum(g) - xhat * sum(g * xhat)),
            # i.e. gamma * inv_std * (gy - mean(gy) - xhat * mean(gy * xhat)): the mean
            # and the scale of the batch depend on every x, which removes from gy its
            # per-channel mean and its component along xhat. As one fused pass:
            #   (gy + (x - mean) * (-inv_std * mean(gy * xhat)) - mean(gy)) * gamma * inv_std.
            gx = channel_centered_affine(x, mean, -inv_std * global_gy_xhat / m, -global_gy / m, other=gy,
                                         other_scale=self._scale(inv_std, gamma))
            assert gx.shape == x.shape
        return self._grads(gx, sum_gy_xhat, sum_gy)


class BatchNormInference(_BatchNorm):
    # x (N,C,*S), running mean/var (C,) -> y = (x - mean) * gamma * inv_std + beta
    # (N,C,*S): a fixed per-channel affine map, in x's memory layout.
    def __init__(self, has_weight, has_bias, eps, running_mean, running_var):
        super().__init__(has_weight, has_bias, eps)
        self.running_mean, self.running_var = running_mean, running_var

    def forward(self, x, *affine):
        xp = backend.get_array_module(x)
        gamma, beta = self._split(affine)
        # Copies in x's dtype: a later training step updates the buffers in place, and
        # this call's backward must still see the statistics its forward used.
        mean = self.running_mean.astype(x.dtype)
        inv_std = 1.0 / xp.sqrt(self.running_var.astype(x.dtype) + self.eps)
        self.running_mean = self.running_var = None
        y = channel_centered_affine(x, mean, self._scale(inv_std, gamma), beta)
        self.save_for_backward(x, mean, inv_std, gamma)
        return y

    def backward(self, gy):
        x, mean, inv_std, gamma = self.saved_arrays
        want_x, want_gamma, want_beta = self._wants()
        gx = None
        if want_x:
            gx = gy * _per_channel(self._scale(inv_std, gamma), x.ndim)
            assert gx.shape == x.shape
        sum_gy_xhat = channel_centered_dots(x, mean, in_layout_of(x, gy)) * inv_std if want_gamma else None
        sum_gy = channel_sums(gy) if want_beta else None
        return self._grads(gx, sum_gy_xhat, sum_gy)


def _data(value):
    return value.data if isinstance(value, Tensor) else value


def _prod(values) -> int:
    result = 1
    for v in values:
        result *= int(v)
    return result


def _check_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps, synchronized=False):
    """Raise ValueError, naming batch_norm, for anything the kernels cannot handle."""
    shape = tuple(x.shape)
    if len(shape) not in (2, 3, 4):
        raise ValueError(f"batch_norm: expected x of shape (N, C), (N, C, L) or (N, C, H, W), got {shape}")
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
        m = shape[0] * int(_prod(shape[2:]))
        if m < 2 and not synchronized:  # synchronised: the global batch counts, not this slice
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


def batch_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, running_mean, running_var,
               training: bool, momentum: float = 0.1, eps: float = 1e-5, channel_reduce=None) -> Tensor:
    """Batch normalisation over every axis but the channel axis 1.

    Args:
        x: input Tensor, (N, C), (N, C, L) or (N, C, H, W).
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
            None (the default) uses x's own statistics. No effect in evaluation.
    Returns:
        y, a Tensor with x's shape.
    Shapes:
        x (N, C, *S), weight/bias/running stats (C,) -> y (N, C, *S).
    Raises:
        ValueError for a wrong rank, a channel mismatch, arrays on another device,
        a single value per channel in training, or missing running statistics in
        evaluation.
    """
    _check_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps,
                      synchronized=channel_reduce is not None)
    affine = [t for t in (weight, bias) if t is not None]
    flags = (weight is not None, bias is not None, float(eps))
    if training:
        rm = None if running_mean is None else _data(running_mean)
        rv = None if running_var is None else _data(running_var)
        return BatchNormTraining(*flags, rm, rv, float(momentum), channel_reduce)(x, *affine)
    return BatchNormInference(*flags, _data(running_mean), _data(running_var))(x, *affine)


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
    # x (N,C,H,W) -> d = k + alpha * window_sum_C(x^2) (N,C,H,W) -> y = x * d^-beta (N,C,H,W)
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
        x: input Tensor (N, C, H, W).
        size: number of channels in the window, a positive int.
        alpha: scale of the sum of squares, >= 0.
        beta: exponent.
        k: additive constant, > 0 (so the denominator is never zero).
    Returns:
        b, a Tensor with x's shape.
    Shapes:
        x (N, C, H, W) -> b (N, C, H, W).
    """
    shape = tuple(x.shape)
    if len(shape) != 4:
        raise ValueError(f"local_response_norm: expected x of shape (N, C, H, W), got {shape}")
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"local_response_norm: size must be a positive int, got {size!r}")
    if not k > 0:
        raise ValueError(f"local_response_norm: k must be positive, got {k}")
    if not alpha >= 0:
        raise ValueError(f"local_response_norm: alpha must be >= 0, got {alpha}")
    return LocalResponseNorm(int(size), float(alpha), float(beta), float(k))(x)
