"""max and min of a tensor: over everything, or along one dim with the indices (PyTorch's ``max``/``min``).

The gradient goes where the extreme value was. Along a dim that is the index returned
(the first of equal values, as PyTorch's CPU kernel picks); over the whole tensor, equal
maxima share it evenly (PyTorch's rule for ``max()``). min is max of -x, negated.
"""
from __future__ import annotations

from collections import namedtuple

from .. import backend
from ..autograd import Function, Tensor
from .basic import one_axis

ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


class Max(Function):
    # x (..., d_axis, ...) -> y (...): y = x[..., index, ...], the index given (argmax, the axis kept);
    # axis None: y () = max(x)
    def __init__(self, axis=None, keepdim: bool = False, index=None):
        self.axis, self.keepdim, self.index = axis, keepdim, index

    def forward(self, x):
        xp = backend.get_array_module(x)
        self.in_shape = x.shape
        if self.axis is None:
            y = x.max()
            self.winners = (x == y)
            return y
        y = xp.take_along_axis(x, self.index, axis=self.axis)
        return y if self.keepdim else y.squeeze(self.axis)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        if self.axis is None:
            gx = self.winners * (gy / self.winners.sum())
        else:
            gx = xp.zeros(self.in_shape, dtype=gy.dtype)
            xp.put_along_axis(gx, self.index, gy if self.keepdim else xp.expand_dims(gy, self.axis), axis=self.axis)
        assert gx.shape == self.in_shape
        return gx.astype(gy.dtype, copy=False)


def _largest(fn: str, x: Tensor, dim, keepdim: bool):
    """max of x, or (values, indices) along ``dim``; ``fn`` names the caller in errors."""
    axis = one_axis(fn, x, dim)
    if axis is None:
        return Max()(x)
    xp = backend.get_array_module(x.data)
    index = xp.argmax(x.data, axis=axis)    # once: the values are read there, and returned
    values = Max(axis, keepdim, xp.expand_dims(index, axis))(x)
    return ValuesIndices(values, Tensor(index.reshape(values.shape)))


def maximum_of(x: Tensor, dim=None, keepdim: bool = False):
    """The largest value (dim None), or (values, indices) along ``dim``: PyTorch's ``t.max(dim)``."""
    if x.size == 0:
        raise ValueError(f"max: the tensor of shape {x.shape} is empty; it has no largest value")
    return _largest("max", x, dim, keepdim)


def minimum_of(x: Tensor, dim=None, keepdim: bool = False):
    """The smallest value (dim None), or (values, indices) along ``dim``: PyTorch's ``t.min(dim)``."""
    if x.size == 0:
        raise ValueError(f"min: the tensor of shape {x.shape} is empty; it has no smallest value")
    result = _largest("min", -x, dim, keepdim)
    if isinstance(result, ValuesIndices):
        return ValuesIndices(-result.values, result.indices)
    return -result
