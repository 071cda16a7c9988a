"""The layers: thin modules that own parameters and call the kernels in minidl.functional.

Every layer with weights takes ``rng`` (a numpy Generator; a fixed seed when None)
and ``dtype`` (float32 by default). Difference from PyTorch, on purpose (all randomness
goes through explicit generators, so a run is reproducible from its own code, not from
what ran before it in the process): there is no global seed, so two layers of one shape
built without ``rng`` start with equal weights, and two Dropouts draw equal masks. Pass
one generator to every layer of a model, as minidl's models do:
``rng = np.random.default_rng(seed); nn.Linear(8, 8, rng=rng); nn.Linear(8, 8, rng=rng)``. Every layer also answers ``shape_info(shape)``:
the output shape for a per-sample input shape (no batch axis) and, for windows,
the size formula; model summaries are built from it without running the model.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..functional.conv_transpose import transposed_output_hw
from . import init
from ..window import check_padding, effective_kernel, int_pair, pool_window_output, window_output
from .batch_slice import current_batch_slice
from .batchnorm import BatchNorm1d, BatchNorm2d, SyncBatchNorm  # noqa: F401  (importable from here as before)
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


def _conv_parameters(shape, groups, bias_size, rng, dtype):
    """(weight, bias or None) with PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = shape[1] * KH * KW."""
    rng = _default_rng(rng)
    fan_in, _ = init.compute_fans(shape, groups)
    weight = Parameter(np.zeros(shape, dtype))
    init.default_uniform_(weight, fan_in, rng=rng)
    if not bias_size:
        return weight, None
    bias = Parameter(np.zeros(bias_size, dtype))
    init.default_uniform_(bias, fan_in, rng=rng)
    return weight, bias


class Conv2d(Module):
    """2-D convolution, weight (out_channels, in_channels/groups, KH, KW).

    Args:
        in_channels, out_channels: channel counts; both divisible by ``groups``.
        kernel_size, stride: int or (h, w).
        padding: int, (ph, pw), ((top, bottom), (left, right)), "valid" or "same" (TF rule).
        groups: split channels into independent groups ("streams"); group g's filters
            see only group g's input channels.
        bias: learn a per-filter bias.
        dilation: int or (h, w): gaps between the kernel's taps (keyword only, see below).
        padding_mode: "zeros" only (PyTorch's other modes: pad with ``F.pad`` first).
        rng, dtype: weights start as PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    Difference from PyTorch, on purpose (minidl's fixed public signature): the sixth positional argument is
    ``groups`` (PyTorch's is ``dilation``), so ``Conv2d(4, 8, 3, 1, 1, 2)`` is a grouped
    convolution here; pass ``dilation=`` by name.

    Shapes: x (N, in_channels, H, W) -> y (N, out_channels, OH, OW).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1, bias=True,
                 *, dilation=1, padding_mode="zeros", rng=None, dtype=np.float32):
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError(f"Conv2d: padding_mode {padding_mode!r} is not supported, only 'zeros'; pad the input "
                             f"with F.pad(x, pads, mode=...) and use padding=0")
        self.dilation = int_pair("Conv2d", "dilation", dilation)
        if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
                   for n in (in_channels, out_channels, groups)):
            raise ValueError(f"Conv2d: in_channels, out_channels and groups must be ints >= 1, got "
                             f"{in_channels!r}, {out_channels!r} and {groups!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                             f"divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = int_pair("Conv2d", "kernel_size", kernel_size)
        self.stride = int_pair("Conv2d", "stride", stride)
        self.padding = check_padding("Conv2d", padding)
        self._padding_arg = padding  # passed to the kernel exactly as the user wrote it
        shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight, self.bias = _conv_parameters(shape, groups, out_channels if bias else 0, rng, dtype)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self._padding_arg,
                        groups=self.groups, dilation=self.dilation)

    def shape_info(self, shape):
        c, h, w = _spatial(shape, "Conv2d")
        if c != self.in_channels:
            raise ValueError(f"Conv2d: expected {self.in_channels} input channels, got shape {tuple(shape)}")
        span = effective_kernel(self.kernel_size, self.dilation)
        (oh, ow), formula = window_output("Conv2d", (h, w), span, self.stride, self.padding)
        return (self.out_channels, oh, ow), formula

    def extra_repr(self):
        dilation = self.dilation
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self._padding_arg!r}, groups={self.groups}, bias={self.bias is not None}" +
                (f", dilation={dilation}" if dilation != (1, 1) else ""))


class ConvTranspose2d(Module):
    """Transposed convolution (learnable upsampling), weight (in_channels, out_channels/groups, KH, KW).

    PyTorch's ``nn.ConvTranspose2d``, with its argument order: in_channels, out_channels,
    kernel_size, stride, padding, output_padding, groups, bias, dilation (see
    ``F.conv_transpose2d``); padding_mode "zeros" only. rng, dtype: weights start as
    PyTorch's, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = out_channels/groups * KH * KW.

    Shapes: x (N, in_channels, H, W) -> y (N, out_channels, OH, OW),
    OH = (H - 1) * stride - 2 * padding + dilation * (KH - 1) + output_padding + 1.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros", *, rng=None, dtype=np.float32):
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError(f"ConvTranspose2d: padding_mode {padding_mode!r} is not supported, only 'zeros'")
        if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
                   for n in (in_channels, out_channels, groups)) or in_channels % groups or out_channels % groups:
            raise ValueError(f"ConvTranspose2d: in_channels, out_channels and groups must be ints >= 1, the "
                             f"channels divisible by groups, got {in_channels!r}, {out_channels!r}, {groups!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = int_pair("ConvTranspose2d", "kernel_size", kernel_size)
        self.stride = int_pair("ConvTranspose2d", "stride", stride)
        self.dilation = int_pair("ConvTranspose2d", "dilation", dilation)
        self.padding = padding if isinstance(padding, tuple) else (padding, padding)
        self.output_padding = output_padding if isinstance(output_padding, tuple) else (output_padding,) * 2
        shape = (in_channels, out_channels // groups) + self.kernel_size
        self.weight, self.bias = _conv_parameters(shape, groups, out_channels if bias else 0, rng, dtype)

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)

    def shape_info(self, shape):
        c, h, w = _spatial(shape, "ConvTranspose2d")
        if c != self.in_channels:
            raise ValueError(f"ConvTranspose2d: expected {self.in_channels} input channels, got shape {tuple(shape)}")
        oh, ow = transposed_output_hw((h, w), self.kernel_size, self.stride, self.padding, self.output_padding,
                                      self.dilation)
        (s, _), (p, _), (d, _), (k, _), (e, _) = (self.stride, self.padding, self.dilation, self.kernel_size,
                                                  self.output_padding)
        return (self.out_channels, oh, ow), f"({h} - 1) * {s} - 2 * {p} + {d} * ({k} - 1) + {e} + 1 = {oh}"   # rows

    def extra_repr(self):   # PyTorch's: the settings that differ from the defaults
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        for name, default in (("padding", (0, 0)), ("dilation", (1, 1)), ("output_padding", (0, 0))):
            if tuple(getattr(self, name)) != default:
                text += f", {name}={tuple(getattr(self, name))}"
        text += f", groups={self.groups}" if self.groups != 1 else ""
        return text + (", bias=False" if self.bias is None else "")


class MaxPool2d(Module):
    """Max pooling over KH x KW windows; padding (as Conv2d's) is filled with -inf.

    Args (PyTorch's, in its order): kernel_size, stride (default kernel_size), padding,
        dilation, return_indices (forward then returns (y, indices)), ceil_mode: as
        ``F.max_pool2d``.

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW).
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        self.kernel_size = int_pair("MaxPool2d", "kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else int_pair("MaxPool2d", "stride", stride)
        self.padding = check_padding("MaxPool2d", padding)
        self._padding_arg = padding
        self.dilation = int_pair("MaxPool2d", "dilation", dilation)
        self.return_indices, self.ceil_mode = bool(return_indices), bool(ceil_mode)

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self._padding_arg, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def shape_info(self, shape):
        c, h, w = _spatial(shape, "MaxPool2d")
        span = effective_kernel(self.kernel_size, self.dilation)   # a dilated window covers this much
        (oh, ow), formula = pool_window_output("MaxPool2d", (h, w), span, self.stride, self.padding,
                                               self.ceil_mode)
        return (c, oh, ow), formula

    def extra_repr(self):
        text = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self._padding_arg!r}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.return_indices:
            text += ", return_indices=True"
        return text + (", ceil_mode=True" if self.ceil_mode else "")


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
    """max(x, 0), elementwise. Shapes: any -> same.

    ``inplace`` is accepted for PyTorch's signature and changes nothing: minidl never
    overwrites a tensor (the result is always new; memory is no worse, since the input
    is freed as soon as nothing holds it).
    """

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x):
        return F.relu(x)

    def shape_info(self, shape):
        return tuple(shape), ""


class Dropout(Module):
    """Inverted dropout while training; the identity in eval mode.

    The mask comes from ``self.rng``, a numpy Generator owned by the layer: reseed it
    with ``layer.rng = np.random.default_rng(seed)``; save and restore it through
    ``layer.rng.bit_generator.state`` (a JSON-able dict), which checkpoints do.

    Under data parallelism the forward runs inside ``nn.batch_slice(start, total)``
    (``DataParallel.batch`` opens it): the input is then rows start.. of a global
    batch of ``total`` rows, and the mask is drawn for the whole global batch and
    this slice kept, so N processes apply exactly the masks of one process (see
    ``F.dropout``'s ``batch_slice``).

    Args:
        p: probability of zeroing an element, in [0, 1] (1 zeroes everything).
        inplace: accepted for PyTorch's signature; minidl always returns a new tensor.
        rng: the Generator; ``np.random.default_rng(0)`` when None.

    Shapes: any -> same.
    """

    def __init__(self, p=0.5, inplace=False, rng=None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p, self.inplace = p, bool(inplace)
        self.rng = _default_rng(rng)

    def forward(self, x):
        return F.dropout(x, self.p, training=self.training, rng=self.rng, batch_slice=current_batch_slice())

    def shape_info(self, shape):
        return tuple(shape), ""

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout2d(Dropout):
    """Channel dropout while training (whole (image, channel) maps), as ``torch.nn.Dropout2d``.

    Args and generator as ``Dropout``. Shapes: x (N, C, H, W) -> same.
    """

    def forward(self, x):
        return F.dropout2d(x, self.p, training=self.training, rng=self.rng, batch_slice=current_batch_slice())


class Linear(Module):
    """Fully connected: y = x @ weight.T + bias, weight (out_features, in_features).

    Args:
        rng, dtype: weights start as PyTorch's default U(-1/sqrt(in), 1/sqrt(in)).

    Shapes: x (N, in_features) -> y (N, out_features).
    """

    def __init__(self, in_features, out_features, bias=True, *, rng=None, dtype=np.float32):
        super().__init__()
        if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
                   for n in (in_features, out_features)):
            raise ValueError(f"Linear: feature counts must be ints >= 1, got {in_features!r} and {out_features!r}")
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
    """Dims ``start_dim`` .. ``end_dim`` merged: by default (N, C, H, W) -> (N, C*H*W), in (C, H, W) order."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)

    def shape_info(self, shape):
        # per-sample shape: the batch dim is not in it, so dims shift by one
        full = (None,) + tuple(shape)
        start, end = self.start_dim % len(full), self.end_dim % len(full)
        if start == 0:
            raise ValueError("Flatten.shape_info: a Flatten that merges the batch dim has no per-sample shape")
        return tuple(full[1:start]) + (int(np.prod(full[start:end + 1])),) + tuple(full[end + 1:]), ""

    def extra_repr(self):
        return "" if (self.start_dim, self.end_dim) == (1, -1) else f"start_dim={self.start_dim}, end_dim={self.end_dim}"
