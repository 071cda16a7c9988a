"""Activations: ReLU, softmax and log-softmax.

This module holds the reference implementations. ``relu`` asks ``minidl.kernels.dispatch``
for a fast path first (on the CPU, one pass in cache-sized chunks on the worker threads).

PyTorch's argument names work beside minidl's: ``dim`` for ``axis``, ``dtype`` (cast
first) and ``inplace`` (accepted; minidl never writes into its input, see ``relu``).
"""
from __future__ import annotations

import numbers

from .. import backend
from ..autograd import Function, Tensor
from ..kernels import dispatch
from .basic import Cast, reshape
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
