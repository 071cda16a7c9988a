"""The layers: thin modules that own parameters and call the kernels in minidl.functional.

Every layer with weights takes ``rng`` (a numpy Generator; a fixed seed when None)
and ``dtype`` (float32 by default). Every layer also answers ``shape_info(shape)``:
the output shape for a per-sample input shape (no batch axis) and, for windows,
the size formula; model summaries are built from it without running the model.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from . import init
from ..window import check_padding, int_pair, window_output
from .module import Module, Parameter


def _default_rng(rng):
    if rng is None:
        return np.random.default_rng(0)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"expected a numpy.random.Generator or None as rng, got {rng!r}")
    return rng


def _spatial(shape, name):
    if len(shape) != 3:
        raise ValueError(f"{name}: expected a per-sample shape (C, H, W), got {tuple(shape)}")
    return shape


class Conv2d(Module):
    """2-D convolution, weight (out_channels, in_channels/groups, KH, KW).

    Args:
        in_channels, out_channels: channel counts; both divisible by ``groups``.
        kernel_size, stride: int or (h, w).
        padding: int, (ph, pw), ((top, bottom), (left, right)), "valid" or "same" (TF rule).
        groups: split channels into independent groups ("streams"); group g's filters
            see only group g's input channels.
        bias: learn a per-filter bias.
        rng, dtype: weights start as PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    Shapes: x (N, in_channels, H, W) -> y (N, out_channels, OH, OW).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1, bias=True,
                 *, rng=None, dtype=np.float32):
        super().__init__()
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                             f"divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = int_pair("Conv2d", "kernel_size", kernel_size)
        self.stride = int_pair("Conv2d", "stride", stride)
        self.padding = check_padding("Conv2d", padding)
        self._padding_arg = padding  # passed to the kernel exactly as the user wrote it
        rng = _default_rng(rng)
        shape = (out_channels, in_channels // groups) + self.kernel_size
        fan_in, _ = init.compute_fans(shape, groups)
        self.weight = Parameter(np.zeros(shape, dtype))
        init.default_uniform_(self.weight, fan_in, rng=rng)
        self.bias = None
        if bias:
            self.bias = Parameter(np.zeros(out_channels, dtype))
            init.default_uniform_(self.bias, fan_in, rng=rng)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self._padding_arg,
                        groups=self.groups)

    def shape_info(self, shape):
        c, h, w = _spatial(shape, "Conv2d")
        if c != self.in_channels:
            raise ValueError(f"Conv2d: expected {self.in_channels} input channels, got shape {tuple(shape)}")
        (oh, ow), formula = window_output("Conv2d", (h, w), self.kernel_size, self.stride, self.padding)
        return (self.out_channels, oh, ow), formula

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self._padding_arg!r}, groups={self.groups}, bias={self.bias is not None}")


class MaxPool2d(Module):
    """Max pooling over KH x KW windows; padding (as Conv2d's) is filled with -inf.

    Args:
        kernel_size: int or (h, w); stride defaults to kernel_size.

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW).
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = int_pair("MaxPool2d", "kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else int_pair("MaxPool2d", "stride", stride)
        self.padding = check_padding("MaxPool2d", padding)
        self._padding_arg = padding

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self._padding_arg)

    def shape_info(self, shape):
        c, h, w = _spatial(shape, "MaxPool2d")
        (oh, ow), formula = window_output("MaxPool2d", (h, w), self.kernel_size, self.stride, self.padding)
        return (c, oh, ow), formula

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self._padding_arg!r}"


class _BatchNorm(Module):
    """Shared by BatchNorm1d/2d: a learned scale and shift per channel plus running statistics.

    ``momentum`` follows PyTorch: running = (1 - momentum) * running + momentum * batch
    (Keras's "decay 0.99" is momentum 0.01).
    """

    _expected_ndim = None
    # PyTorch's step counter (used only when momentum=None, which minidl does not offer):
    # a PyTorch state_dict's counters are accepted and skipped by load_state_dict.
    _foreign_state = ("num_batches_tracked",)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, *, dtype=np.float32):
        super().__init__()
        if num_features < 1 or eps <= 0 or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{type(self).__name__}: need num_features >= 1, eps > 0 and momentum in [0, 1], "
                             f"got {num_features}, {eps}, {momentum}")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(np.ones(num_features, dtype))
        self.bias = Parameter(np.zeros(num_features, dtype))
        self.register_buffer("running_mean", np.zeros(num_features, dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype))
        # Synchronised batch norm: a function summing per-channel totals over the
        # data-parallel processes (see F.batch_norm); None uses this batch alone.
        self.channel_reduce = None

    def forward(self, x):
        if x.ndim != self._expected_ndim or x.shape[1] != self.num_features:
            axes = "(N, C)" if self._expected_ndim == 2 else "(N, C, H, W)"
            raise ValueError(f"{type(self).__name__}: expected input {axes} with C={self.num_features}, "
                             f"got {tuple(x.shape)}")
        return F.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var,
                            training=self.training, momentum=self.momentum, eps=self.eps,
                            channel_reduce=self.channel_reduce)

    def shape_info(self, shape):
        if len(shape) != self._expected_ndim - 1 or shape[0] != self.num_features:
            raise ValueError(f"{type(self).__name__}: input shape {tuple(shape)} does not have "
                             f"{self.num_features} channels first")
        return tuple(shape), ""

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    """Batch norm over features. Shapes: x (N, C) -> y (N, C)."""
    _expected_ndim = 2


class BatchNorm2d(_BatchNorm):
    """Batch norm per channel over (N, H, W). Shapes: x (N, C, H, W) -> same."""
    _expected_ndim = 4


class LocalResponseNorm(Module):
    """The paper's across-channel LRN: b = a / (k + alpha * sum of a^2 over ``size`` channels)^beta.

    Note: alpha is not divided by size (PyTorch divides; minidl follows the paper).
    Shapes: x (N, C, H, W) -> same.
    """

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=2.0):
        super().__init__()
        if size < 1:
            raise ValueError(f"LocalResponseNorm: size must be >= 1, got {size}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def shape_info(self, shape):
        return tuple(shape), ""

    def extra_repr(self):
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class ReLU(Module):
    """max(x, 0), elementwise. Shapes: any -> same."""

    def forward(self, x):
        return F.relu(x)

    def shape_info(self, shape):
        return tuple(shape), ""


class Dropout(Module):
    """Inverted dropout while training; the identity in eval mode.

    The mask comes from ``self.rng``, a numpy Generator owned by the layer: reseed it
    with ``layer.rng = np.random.default_rng(seed)``; save and restore it through
    ``layer.rng.bit_generator.state`` (a JSON-able dict), which checkpoints do.

    Under data parallelism set ``batch_slice = (start, total)`` before a forward:
    the input is then rows start.. of a global batch of ``total`` rows, and the mask
    is drawn for the whole global batch and this slice kept, so N processes apply
    exactly the masks of one process (see F.dropout).

    Args:
        p: probability of zeroing an element, in [0, 1).
        rng: the Generator; ``np.random.default_rng(0)`` when None.

    Shapes: any -> same.
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p
        self.rng = _default_rng(rng)
        self.batch_slice = None

    def forward(self, x):
        return F.dropout(x, self.p, training=self.training, rng=self.rng, batch_slice=self.batch_slice)

    def shape_info(self, shape):
        return tuple(shape), ""

    def extra_repr(self):
        return f"p={self.p}"


class Linear(Module):
    """Fully connected: y = x @ weight.T + bias, weight (out_features, in_features).

    Args:
        rng, dtype: weights start as PyTorch's default U(-1/sqrt(in), 1/sqrt(in)).

    Shapes: x (N, in_features) -> y (N, out_features).
    """

    def __init__(self, in_features, out_features, bias=True, *, rng=None, dtype=np.float32):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Linear: feature counts must be >= 1, got {in_features} and {out_features}")
        self.in_features, self.out_features = in_features, out_features
        rng = _default_rng(rng)
        self.weight = Parameter(np.zeros((out_features, in_features), dtype))
        init.default_uniform_(self.weight, in_features, rng=rng)
        self.bias = None
        if bias:
            self.bias = Parameter(np.zeros(out_features, dtype))
            init.default_uniform_(self.bias, in_features, rng=rng)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def shape_info(self, shape):
        if tuple(shape) != (self.in_features,):
            raise ValueError(f"Linear: expected ({self.in_features},) features per sample, got {tuple(shape)}")
        return (self.out_features,), ""

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W), in (C, H, W) order (NumPy's C order)."""

    def forward(self, x):
        return F.flatten(x)

    def shape_info(self, shape):
        return (int(np.prod(shape)),), ""
