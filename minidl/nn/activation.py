"""Identity, sigmoid, tanh, leaky ReLU and GELU as layers (ReLU is in ``layers.py``).

Thin modules over ``minidl.functional``, with PyTorch's names and constructor signatures.
None has parameters or buffers, so their state_dicts are empty, as PyTorch's are; each
answers ``shape_info(shape)`` like the layers in ``layers.py``.
"""
from __future__ import annotations

from .. import functional as F
from .module import Module


class Identity(Module):
    """Returns its input, as ``torch.nn.Identity``: a placeholder (e.g. a replaced classifier).

    Any arguments are accepted and ignored, as PyTorch's are. Shapes: any -> same.
    """

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x

    def shape_info(self, shape):
        return tuple(shape), ""


class Sigmoid(Module):
    """1 / (1 + exp(-x)), elementwise. Shapes: any -> same."""

    def forward(self, x):
        return F.sigmoid(x)

    def shape_info(self, shape):
        return tuple(shape), ""


class Tanh(Module):
    """tanh(x), elementwise. Shapes: any -> same."""

    def forward(self, x):
        return F.tanh(x)

    def shape_info(self, shape):
        return tuple(shape), ""


class LeakyReLU(Module):
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

    def shape_info(self, shape):
        return tuple(shape), ""

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class GELU(Module):
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

    def shape_info(self, shape):
        return tuple(shape), ""

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Softmax(Module):
    """softmax along ``dim``, as ``torch.nn.Softmax`` (minidl's default dim is the last: PyTorch warns
    and guesses when dim is left out). Shapes: any -> same."""

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, dim=self.dim)

    def shape_info(self, shape):
        return tuple(shape), ""

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """log_softmax along ``dim`` (before ``NLLLoss``), as ``torch.nn.LogSoftmax``. Shapes: any -> same."""

    def forward(self, x):
        return F.log_softmax(x, dim=self.dim)
