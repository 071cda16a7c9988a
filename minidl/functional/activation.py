"""Activations: ReLU, softmax and log-softmax; sigmoid, tanh, leaky ReLU and GELU.

This module holds the reference implementations. ``relu``, ``sigmoid``, ``leaky_relu``
and ``gelu`` ask ``minidl.kernels.dispatch`` for a fast path first (on the CPU, one pass
in cache-sized chunks on the worker threads).

PyTorch's argument names work beside minidl's: ``dim`` for ``axis``, ``dtype`` (cast
first) and ``inplace`` (accepted; minidl never writes into its input, see ``relu``).
"""
from __future__ import annotations

import numbers

from .. import backend
from ..autograd import Function, Tensor
from ..kernels import dispatch
from ..special import erfc
from .basic import Cast
from .shape import reshape
from .fast_path import FastPath


class ReLU(Function):
    # x (any shape) -> y = max(x, 0), same shape. Backward needs only where y > 0, so it
    # keeps the output (which the next layer holds anyway) instead of x.
    def forward(self, x):
        y = backend.get_array_module(x).maximum(x, 0)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved_arrays
        gx = gy * (y > 0)
        assert gx.shape == y.shape
        return gx


class Softmax(Function):
    # x (..., K) -> y (..., K), each slice along `axis` sums to 1.
    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        xp = backend.get_array_module(x)
        if x.size == 0:   # nothing to normalise (and an empty axis has no maximum)
            y = xp.exp(x)
            self.save_for_backward(y)
            return y
        z = xp.exp(x - x.max(axis=self.axis, keepdims=True))  # shift: exp never overflows
        y = z / z.sum(axis=self.axis, keepdims=True)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved_arrays
        # dx = y * (gy - <gy, y>) along the axis: the softmax Jacobian applied to gy.
        gx = y * (gy - (gy * y).sum(axis=self.axis, keepdims=True))
        assert gx.shape == y.shape
        return gx


def log_softmax_array(x, axis):
    """log(softmax(x)) computed stably as x - max - log(sum(exp(x - max)))."""
    xp = backend.get_array_module(x)
    if x.size == 0:   # nothing to normalise (and an empty axis has no maximum)
        return xp.log(xp.exp(x))
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


class LogSoftmax(Function):
    # x (..., K) -> y = log softmax(x), same shape.
    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        y = log_softmax_array(x, self.axis)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved_arrays
        xp = backend.get_array_module(y)
        gx = gy - xp.exp(y) * gy.sum(axis=self.axis, keepdims=True)
        assert gx.shape == y.shape
        return gx


def relu(x: Tensor, inplace: bool = False) -> Tensor:
    """max(x, 0) elementwise. Shapes: any -> same (empty and 0-d included).

    ``inplace`` is PyTorch's argument, accepted so that its calls run; minidl always
    returns a new Tensor and leaves x as it is (its autograd has no in-place ops), so
    code that reads x afterwards expecting the ReLU there must use the result instead.
    """
    fast = dispatch.relu(x.data if isinstance(x, Tensor) else x)
    return (ReLU() if fast is None else FastPath("ReLU", fast))(x)


def _softmax_axis(fn: str, x, axis, dim) -> int:
    """The axis ``fn`` normalises along: PyTorch's ``dim`` if given, else ``axis``; checked.

    Raises:
        ValueError naming ``fn`` when both are given and differ, or the axis is not one of x's.
    """
    if dim is not None:
        if axis != -1 and axis != dim:
            raise ValueError(f"{fn}: give axis or dim (PyTorch's name for it), not both; got axis={axis}, dim={dim}")
        axis = dim
    ndim = max(x.ndim, 1)   # a 0-d x has the one axis 0 (or -1), as in PyTorch
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or not -ndim <= axis < ndim:
        raise ValueError(f"{fn}: axis must be an int in [{-ndim}, {ndim}) for x of shape {tuple(x.shape)}, "
                         f"got {axis!r}")
    return int(axis) % ndim


def _normalised(fn: str, function, x, axis, dim, dtype) -> Tensor:
    """``function(axis)(x)`` for softmax and log_softmax: axis checked, x cast to dtype, 0-d as (1,)."""
    axis = _softmax_axis(fn, x, axis, dim)
    if dtype is not None:
        x = Cast(dtype)(x)
    if x.ndim == 0:
        return reshape(function(0)(reshape(x, (1,))), ())
    return function(axis)(x)


def softmax(x: Tensor, axis: int = -1, dim: int | None = None, *, dtype=None) -> Tensor:
    """exp(x) / sum(exp(x)) along ``axis``, computed stably. Shapes: any -> same.

    Args:
        x: input Tensor, any shape (empty: an empty result; 0-d: 1).
        axis: the axis to normalise along; ``dim`` is PyTorch's name for it.
        dtype: cast x to this dtype first (PyTorch's option), e.g. float64 for precision.

    Difference from PyTorch, on purpose: without an axis minidl takes the last one,
    where PyTorch (deprecated) guesses 0 for 0-, 1- and 3-D inputs and 1 otherwise.
    """
    return _normalised("softmax", Softmax, x, axis, dim, dtype)


def log_softmax(x: Tensor, axis: int = -1, dim: int | None = None, *, dtype=None) -> Tensor:
    """log(softmax(x)) along ``axis``, without overflow for large logits. Shapes: any -> same.

    Arguments and the one difference from PyTorch as ``softmax``.
    """
    return _normalised("log_softmax", LogSoftmax, x, axis, dim, dtype)


# ---- sigmoid, tanh, leaky ReLU, GELU ---------------------------------------------------------

def stable_sigmoid(xp, x):
    """1 / (1 + exp(-x)) without overflow for large |x| (also SiLU's and Mish's gate)."""
    e = xp.exp(-xp.abs(x))   # in (0, 1]: never overflows, where exp(-x) would for x << 0
    # x >= 0: 1 / (1 + exp(-x)); x < 0: the same value as exp(x) / (1 + exp(x)).
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


class Sigmoid(Function):
    # x (any shape) -> y = 1 / (1 + exp(-x)), same shape. Backward needs only y:
    # dy/dx = y (1 - y), so it keeps the output, not x.
    def forward(self, x):
        y = stable_sigmoid(backend.get_array_module(x), x)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved_arrays
        gx = gy * y * (1 - y)
        assert gx.shape == y.shape
        return gx


class Tanh(Function):
    # x (any shape) -> y = tanh(x), same shape. dy/dx = 1 - y^2: backward keeps only y.
    def forward(self, x):
        y = backend.get_array_module(x).tanh(x)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved_arrays
        gx = gy * (1 - y * y)
        assert gx.shape == y.shape
        return gx


class LeakyReLU(Function):
    # x (any shape) -> y = x where x > 0, negative_slope * x elsewhere; same shape.
    # dy/dx is 1 where x > 0, else negative_slope. With a slope >= 0, y > 0 exactly where
    # x > 0, so backward keeps y (which the next layer holds anyway); a negative slope
    # makes y positive on both sides, and then it keeps x.
    def __init__(self, negative_slope: float):
        self.negative_slope = negative_slope

    def forward(self, x):
        xp = backend.get_array_module(x)
        y = xp.where(x > 0, x, x * self.negative_slope)
        self.save_for_backward(y if self.negative_slope >= 0 else x)
        return y

    def backward(self, gy):
        (kept,) = self.saved_arrays
        xp = backend.get_array_module(gy)
        gx = xp.where(kept > 0, gy, gy * self.negative_slope)
        assert gx.shape == kept.shape
        return gx


_SQRT_HALF = 0.7071067811865476           # 1 / sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327        # 1 / sqrt(2 pi)
_SQRT_2_OVER_PI = 0.7978845608028654      # sqrt(2 / pi)
_GELU_CUBIC = 0.044715


class GELU(Function):
    # x (any shape) -> y = x * Phi(x), same shape, with Phi the standard normal CDF
    # ("none"), or its tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    # Backward needs x (the derivative is not a function of y alone).
    def __init__(self, approximate: str):
        self.approximate = approximate

    def forward(self, x):
        xp = backend.get_array_module(x)
        self.save_for_backward(x)
        if self.approximate == "tanh":
            return 0.5 * x * (1 + xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x)))
        return x * (0.5 * erfc(-x * _SQRT_HALF))   # Phi(x) = erfc(-x / sqrt 2) / 2, accurate in both tails

    def backward(self, gy):
        (x,) = self.saved_arrays
        xp = backend.get_array_module(x)
        if self.approximate == "tanh":
            t = xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x))
            slope = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x * x)
        else:   # d/dx x Phi(x) = Phi(x) + x phi(x), phi the normal density
            slope = 0.5 * erfc(-x * _SQRT_HALF) + x * _INV_SQRT_2PI * xp.exp(-0.5 * x * x)
        gx = gy * slope
        assert gx.shape == x.shape
        return gx


def _data(x):
    return x.data if isinstance(x, Tensor) else x


def _floating(fn: str, x) -> None:
    if x.dtype.kind != "f":
        raise ValueError(f"{fn}: expected a floating-point input, got dtype {x.dtype}")


def sigmoid(input) -> Tensor:
    """1 / (1 + exp(-x)) elementwise, without overflow for large |x|. Shapes: any -> same."""
    _floating("sigmoid", input)
    fast = dispatch.sigmoid(_data(input))
    return (Sigmoid() if fast is None else FastPath("Sigmoid", fast))(input)


def tanh(input) -> Tensor:
    """tanh(x) elementwise. Shapes: any -> same."""
    _floating("tanh", input)
    return Tanh()(input)


def leaky_relu(input, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """x where x > 0, else negative_slope * x, as ``torch.nn.functional.leaky_relu``.

    Args:
        input: Tensor (or array), any shape.
        negative_slope: the slope for x <= 0 (any real number; 0 gives ReLU).
        inplace: accepted for PyTorch's signature; minidl never overwrites its input
            (autograd may still need it), so the result is always a new Tensor.
    Returns:
        y Tensor, same shape.
    Raises:
        ValueError for a non-floating input or a negative_slope that is not a real number.
    """
    _floating("leaky_relu", input)
    if not isinstance(negative_slope, numbers.Real) or isinstance(negative_slope, bool):
        raise ValueError(f"leaky_relu: negative_slope must be a real number, got {negative_slope!r}")
    slope = float(negative_slope)
    fast = dispatch.leaky_relu(_data(input), slope)
    return (LeakyReLU(slope) if fast is None else FastPath("LeakyReLU", fast))(input)


def gelu(input, approximate: str = "none") -> Tensor:
    """x * Phi(x), Phi the standard normal CDF, as ``torch.nn.functional.gelu``.

    Args:
        input: Tensor (or array), any shape.
        approximate: "none" (the exact CDF, through ``minidl.special.erfc``) or "tanh"
            (0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), Hendrycks and Gimpel's approximation).
    Returns:
        y Tensor, same shape.
    Raises:
        ValueError for a non-floating input or another ``approximate``.
    """
    _floating("gelu", input)
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    fast = dispatch.gelu(_data(input), approximate)
    return (GELU(approximate) if fast is None else FastPath("GELU", fast))(input)
