"""The ReLU family of modern CNNs: clipped, hard-gated, self-gated and smooth ReLUs.

Where each comes from, and what it is:

    hardtanh(x)     clip(x, min_val, max_val)                       the clipped identity
    relu6(x)        clip(x, 0, 6)                                   MobileNet (v1, v2)
    hardsigmoid(x)  clip(x / 6 + 1/2, 0, 1)                         MobileNetV3's cheap sigmoid
    hardswish(x)    x * hardsigmoid(x)                              MobileNetV3's cheap SiLU
    silu(x)         x * sigmoid(x)        (also called swish)       EfficientNet
    mish(x)         x * tanh(softplus(x))                           YOLOv4
    elu(x)          x if x > 0 else alpha (exp(x) - 1)              Clevert et al. 2015
    selu(x)         scale * elu(x, alpha), fixed scale and alpha    self-normalising nets
    softplus(x)     log(1 + exp(beta x)) / beta, x past threshold   a smooth ReLU

Every one is elementwise: Shapes any -> same. Each is written once against ``xp``
(NumPy or CuPy), with no fast path: each is one or two NumPy expressions, and none
sits in the networks minidl times. Backward keeps x (the slopes of the smooth ones
are not functions of y alone) and follows PyTorch's choice at the kinks: the clipped
functions pass no gradient at their bounds (hardtanh, relu6, hardsigmoid), hardswish
takes the outer slopes at x = -3 and 3 (0 and 1), elu and selu the negative branch at
x = 0. One difference, on purpose: hardsigmoid's slope is 1/6 in float64, where
PyTorch multiplies by 1/6 rounded to float32 (a relative 3e-8 apart).

PyTorch's ``inplace`` arguments are accepted; minidl never writes into its input
(autograd may still need it), so the result is always a new Tensor.
"""
from __future__ import annotations

import math
import numbers

from .. import backend
from ..autograd import Function
from .activation import _floating, stable_sigmoid

# SELU's constants (Klambauer et al. 2017), as PyTorch's, to float64's digits
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _softplus_of(xp, z):
    """log(1 + exp(z)), exact for every z (NumPy's logaddexp never overflows)."""
    return xp.logaddexp(0, z)


class _Elementwise(Function):
    # x (any shape) -> y = f(x), same shape; backward gx = gy * f'(x), keeping x.
    # A subclass gives value(xp, x) and slope(xp, x), both arrays of x's shape and dtype.
    def forward(self, x):
        self.save_for_backward(x)
        return self.value(backend.get_array_module(x), x).astype(x.dtype, copy=False)

    def backward(self, gy):
        (x,) = self.saved_arrays
        gx = gy * self.slope(backend.get_array_module(x), x).astype(x.dtype, copy=False)
        assert gx.shape == x.shape
        return gx


class Hardtanh(_Elementwise):
    def __init__(self, min_val: float, max_val: float):
        self.min_val, self.max_val = min_val, max_val

    def value(self, xp, x):
        return xp.clip(x, self.min_val, self.max_val)

    def slope(self, xp, x):   # 1 strictly inside the bounds, 0 at and beyond them
        return (x > self.min_val) & (x < self.max_val)


class Hardsigmoid(_Elementwise):
    def value(self, xp, x):
        return xp.clip(x / 6 + 0.5, 0, 1)

    def slope(self, xp, x):
        return ((x > -3) & (x < 3)) / 6


class Hardswish(_Elementwise):
    def value(self, xp, x):
        return x * xp.clip(x / 6 + 0.5, 0, 1)

    def slope(self, xp, x):   # 0 up to -3, x/3 + 1/2 strictly between, 1 from 3 on
        return xp.where(x <= -3, 0, xp.where(x < 3, x / 3 + 0.5, 1))


class SiLU(_Elementwise):
    def value(self, xp, x):
        return x * stable_sigmoid(xp, x)

    def slope(self, xp, x):   # d/dx x s(x) = s + x s (1 - s)
        s = stable_sigmoid(xp, x)
        return s * (1 + x * (1 - s))


class Mish(_Elementwise):
    def value(self, xp, x):
        return x * xp.tanh(_softplus_of(xp, x))

    def slope(self, xp, x):   # d/dx x tanh(sp(x)) = tanh(sp) + x sigmoid(x) (1 - tanh(sp)^2)
        t = xp.tanh(_softplus_of(xp, x))
        return t + x * stable_sigmoid(xp, x) * (1 - t * t)


class ELU(_Elementwise):
    # scale * (x if x > 0 else alpha (exp(x) - 1)): elu has scale 1, selu its fixed constants
    def __init__(self, alpha: float, scale: float = 1.0):
        self.alpha, self.scale = alpha, scale

    def value(self, xp, x):
        negative = self.alpha * xp.expm1(xp.minimum(x, 0))   # expm1: exact near 0; min: no overflow
        return self.scale * xp.where(x > 0, x, negative)

    def slope(self, xp, x):
        return self.scale * xp.where(x > 0, 1, self.alpha * xp.exp(xp.minimum(x, 0)))


class Softplus(_Elementwise):
    # log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (PyTorch's switch)
    def __init__(self, beta: float, threshold: float):
        self.beta, self.threshold = beta, threshold

    def value(self, xp, x):
        z = self.beta * x
        return xp.where(z > self.threshold, x, _softplus_of(xp, z) / self.beta)

    def slope(self, xp, x):
        z = self.beta * x
        return xp.where(z > self.threshold, 1, stable_sigmoid(xp, z))


# ---- the functions, with PyTorch's signatures ----------------------------------------------

def _real(fn: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{fn}: {name} must be a finite real number, got {value!r}")
    return float(value)


def hardtanh(input, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False):
    """clip(x, min_val, max_val), as ``torch.nn.functional.hardtanh``. Shapes: any -> same.

    Raises:
        ValueError for a non-floating input, or min_val > max_val.
    """
    _floating("hardtanh", input)
    low, high = _real("hardtanh", "min_val", min_val), _real("hardtanh", "max_val", max_val)
    if low > high:
        raise ValueError(f"hardtanh: min_val must not exceed max_val, got min_val={low}, max_val={high}")
    return Hardtanh(low, high)(input)


def relu6(input, inplace: bool = False):
    """min(max(x, 0), 6), as ``torch.nn.functional.relu6``. Shapes: any -> same."""
    _floating("relu6", input)
    return Hardtanh(0.0, 6.0)(input)


def hardsigmoid(input, inplace: bool = False):
    """clip(x / 6 + 1/2, 0, 1), as ``torch.nn.functional.hardsigmoid``. Shapes: any -> same."""
    _floating("hardsigmoid", input)
    return Hardsigmoid()(input)


def hardswish(input, inplace: bool = False):
    """x * hardsigmoid(x), as ``torch.nn.functional.hardswish``. Shapes: any -> same."""
    _floating("hardswish", input)
    return Hardswish()(input)


def silu(input, inplace: bool = False):
    """x * sigmoid(x) (swish), as ``torch.nn.functional.silu``. Shapes: any -> same."""
    _floating("silu", input)
    return SiLU()(input)


def mish(input, inplace: bool = False):
    """x * tanh(softplus(x)), as ``torch.nn.functional.mish``. Shapes: any -> same."""
    _floating("mish", input)
    return Mish()(input)


def elu(input, alpha: float = 1.0, inplace: bool = False):
    """x where x > 0, else alpha (exp(x) - 1), as ``torch.nn.functional.elu``. Shapes: any -> same."""
    _floating("elu", input)
    return ELU(_real("elu", "alpha", alpha))(input)


def selu(input, inplace: bool = False):
    """scale * elu(x, alpha) with Klambauer et al.'s constants, as ``torch.nn.functional.selu``.

    Shapes: any -> same.
    """
    _floating("selu", input)
    return ELU(SELU_ALPHA, SELU_SCALE)(input)


def softplus(input, beta: float = 1.0, threshold: float = 20.0):
    """log(1 + exp(beta x)) / beta, as ``torch.nn.functional.softplus``. Shapes: any -> same.

    Where beta * x > threshold the result is x itself (PyTorch's switch to the linear
    function; the difference there is below float32's resolution for the default 20).

    Raises:
        ValueError for a non-floating input, or a beta that is not a positive real number.
    """
    _floating("softplus", input)
    beta = _real("softplus", "beta", beta)
    if beta <= 0:
        raise ValueError(f"softplus: beta must be positive, got {beta}")
    return Softplus(beta, _real("softplus", "threshold", threshold))(input)
