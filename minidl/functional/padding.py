"""Padding with a constant: PyTorch's ``F.pad(input, pad, value=0)``.

``pad`` lists (before, after) amounts for the last dimensions, the last dimension first:
``(left, right)`` pads W, ``(left, right, top, bottom)`` pads W and H, and six numbers
reach the channels of an (N, C, H, W) input too, which is how the CIFAR ResNets' shortcut
adds its zero channels. A negative amount crops instead. Backward is the inverse: the
gradient of the padded output, cut back to the input's place.

This module is the reference (its output is NCHW); ``pad`` asks ``minidl.kernels.dispatch``
for a fast path first (on the CPU a channels-last input gets a channels-last output, so
the layout the fast kernels keep is not lost at a shortcut).
"""
from __future__ import annotations

import numbers

from .. import backend
from ..autograd import Function, Tensor
from ..kernels import dispatch
from ..window import padded_place
from .fast_path import FastPath


class Pad(Function):
    # x (..., D1, ..., Dk) -> y (..., D1 + b1 + a1, ..., Dk + bk + ak), the rest ``value``
    def __init__(self, pad: tuple, value: float):
        self.pad, self.value = pad, value

    def forward(self, x):
        xp = backend.get_array_module(x)
        out_shape, self.out_index, self.in_index = padded_place(x.shape, self.pad)
        y = xp.full(out_shape, self.value, dtype=x.dtype)
        y[self.out_index] = x[self.in_index]
        self.in_shape = x.shape
        return y

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        gx = xp.zeros(self.in_shape, dtype=gy.dtype)
        gx[self.in_index] = gy[self.out_index]
        return gx


def pad(input: Tensor, pad, mode: str = "constant", value: float = 0.0) -> Tensor:
    """``input`` padded with ``value``: PyTorch's constant padding (module doc).

    Args:
        input: a Tensor (or array) of any shape.
        pad: (before, after) pairs for the last dimensions, the last dimension first; at
            most two per dimension of input; negative amounts crop.
        mode: "constant" (PyTorch's reflect, replicate and circular are not offered).
        value: what the padding holds.
    Returns:
        the padded Tensor.
    Shapes: (..., D) with pad (a, b) -> (..., a + D + b); likewise for more pairs.
    Raises:
        ValueError naming pad for an odd or too long ``pad``, another mode, or a crop
        that leaves a dimension negative.
    """
    pad = tuple(pad)
    if len(pad) % 2 or not all(isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in pad):
        raise ValueError(f"pad: pad must be an even number of ints, (before, after) per dimension, got {pad}")
    if len(pad) // 2 > input.ndim:
        raise ValueError(f"pad: {len(pad) // 2} dimensions to pad, but input has shape {tuple(input.shape)}")
    if mode != "constant":
        raise ValueError(f"pad: minidl pads with a constant only (mode='constant'), got mode={mode!r}")
    out_shape, _, _ = padded_place(tuple(input.shape), pad)
    if min(out_shape) < 0:
        raise ValueError(f"pad: {pad} crops more than input's shape {tuple(input.shape)} holds")
    fast = dispatch.pad(input.data if isinstance(input, Tensor) else input, pad, float(value))
    return (Pad(pad, float(value)) if fast is None else FastPath("Pad", fast))(input)
