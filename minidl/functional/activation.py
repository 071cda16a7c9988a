"""Activations: ReLU, softmax and log-softmax.

This module holds the reference implementations. ``relu`` asks ``minidl.kernels.dispatch``
for a fast path first (on the CPU, one pass in cache-sized chunks on the worker threads).
"""
from __future__ import annotations

from .. import backend
from ..autograd import Function, Tensor
from ..kernels import dispatch
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


def relu(x: Tensor) -> Tensor:
    """max(x, 0) elementwise. Shapes: any -> same."""
    fast = dispatch.relu(x.data if isinstance(x, Tensor) else x)
    return (ReLU() if fast is None else FastPath("ReLU", fast))(x)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """exp(x) / sum(exp(x)) along ``axis``, computed stably. Shapes: any -> same."""
    return Softmax(axis)(x)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """log(softmax(x)) along ``axis``, without overflow for large logits. Shapes: any -> same."""
    return LogSoftmax(axis)(x)
