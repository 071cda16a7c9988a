"""Identity, sigmoid, tanh, leaky ReLU, GELU and the ReLU family as layers (ReLU is in ``layers.py``).

Thin modules over ``minidl.functional``, with PyTorch's names and constructor signatures.
None has parameters or buffers, so their state_dicts are empty, as PyTorch's are; each
answers ``shape_info(shape)`` like the layers in ``layers.py``.
"""
from __future__ import annotations

from .. import functional as F
from .module import Module


class _SameShape(Module):
    """A layer whose output has its input's shape: ``shape_info`` once for all of this file's layers."""

    def shape_info(self, shape):
        return tuple(shape), ""


class Identity(_SameShape):
    """Returns its input, as ``torch.nn.Identity``: a placeholder (e.g. a replaced classifier).

    Any arguments are accepted and ignored, as PyTorch's are. Shapes: any -> same.
    """

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Sigmoid(_SameShape):
    """1 / (1 + exp(-x)), elementwise. Shapes: any -> same."""

    def forward(self, x):
        return F.sigmoid(x)


class Tanh(_SameShape):
    """tanh(x), elementwise. Shapes: any -> same."""

    def forward(self, x):
        return F.tanh(x)


class LeakyReLU(_SameShape):
    """x where x > 0, else negative_slope * x, as ``torch.nn.LeakyReLU``.

    Args:
        negative_slope: the slope for x <= 0.
        inplace: accepted for PyTorch's signature; minidl never overwrites the input.

    Shapes: any -> same.
    """

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, bool(inplace)

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class GELU(_SameShape):
    """x * Phi(x), Phi the standard normal CDF, as ``torch.nn.GELU``.

    Args:
        approximate: "none" (exact) or "tanh" (the tanh approximation); see ``F.gelu``.

    Shapes: any -> same.
    """

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Softmax(_SameShape):
    """softmax along ``dim``, as ``torch.nn.Softmax`` (minidl's default dim is the last: PyTorch warns
    and guesses when dim is left out). Shapes: any -> same."""

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, dim=self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """log_softmax along ``dim`` (before ``NLLLoss``), as ``torch.nn.LogSoftmax``. Shapes: any -> same."""

    def forward(self, x):
        return F.log_softmax(x, dim=self.dim)


class _Elementwise(_SameShape):
    """A parameter-free elementwise layer over ``function``; ``inplace`` is accepted, never used.

    minidl never overwrites a layer's input (autograd may still need it), so an
    ``inplace=True`` layer returns a new Tensor, as ``F.relu`` explains. Shapes: any -> same.
    """
    function = None   # the minidl.functional function a subclass applies

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x):
        return type(self).function(x)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class ReLU6(_Elementwise):
    """min(max(x, 0), 6), as ``torch.nn.ReLU6`` (MobileNet). Shapes: any -> same."""
    function = F.relu6


class Hardsigmoid(_Elementwise):
    """clip(x / 6 + 1/2, 0, 1), as ``torch.nn.Hardsigmoid`` (MobileNetV3). Shapes: any -> same."""
    function = F.hardsigmoid


class Hardswish(_Elementwise):
    """x * hardsigmoid(x), as ``torch.nn.Hardswish`` (MobileNetV3). Shapes: any -> same."""
    function = F.hardswish


class SiLU(_Elementwise):
    """x * sigmoid(x) (swish), as ``torch.nn.SiLU`` (EfficientNet). Shapes: any -> same."""
    function = F.silu


class Mish(_Elementwise):
    """x * tanh(softplus(x)), as ``torch.nn.Mish``. Shapes: any -> same."""
    function = F.mish


class SELU(_Elementwise):
    """scale * elu(x, alpha) with fixed constants, as ``torch.nn.SELU``. Shapes: any -> same."""
    function = F.selu


class Hardtanh(_SameShape):
    """clip(x, min_val, max_val), as ``torch.nn.Hardtanh``. Shapes: any -> same.

    Args:
        min_val, max_val: the bounds (min_val <= max_val).
        inplace: accepted for PyTorch's signature; minidl never overwrites the input.
    """

    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False):
        super().__init__()
        if min_val > max_val:
            raise ValueError(f"Hardtanh: min_val must not exceed max_val, got min_val={min_val}, max_val={max_val}")
        self.min_val, self.max_val, self.inplace = min_val, max_val, bool(inplace)

    def forward(self, x):
        return F.hardtanh(x, self.min_val, self.max_val)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}" + (", inplace=True" if self.inplace else "")


class ELU(_SameShape):
    """x where x > 0, else alpha (exp(x) - 1), as ``torch.nn.ELU``. Shapes: any -> same.

    Args:
        alpha: the negative branch's scale.
        inplace: accepted for PyTorch's signature; minidl never overwrites the input.
    """

    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha, self.inplace = alpha, bool(inplace)

    def forward(self, x):
        return F.elu(x, self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class Softplus(_SameShape):
    """log(1 + exp(beta x)) / beta, linear past ``threshold``, as ``torch.nn.Softplus``. Shapes: any -> same."""

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        if not beta > 0:
            raise ValueError(f"Softplus: beta must be positive, got {beta!r}")
        self.beta, self.threshold = beta, threshold

    def forward(self, x):
        return F.softplus(x, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"
