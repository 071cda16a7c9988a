"""Fully connected layer: y = x @ W^T + b (over the last axis of x, any leading axes).

This module holds the reference implementation. ``linear`` asks ``minidl.kernels.dispatch``
for a fast path first (on the CPU, the products split over the worker threads).
"""
from __future__ import annotations

from ..autograd import Function, Tensor
from ..kernels import dispatch
from .shape import reshape
from .fast_path import FastPath


class Linear(Function):
    # x (N, in) , W (out, in) , b (out,) -> y (N, out) = x @ W.T + b
    # W.T is a free transposed view, and BLAS reads it as such without a copy.
    def forward(self, x, weight, bias=None):
        self.save_for_backward(x, weight)
        y = x @ weight.T
        if bias is not None:
            y += bias
        return y

    def backward(self, gy):
        x, weight = self.saved_arrays
        need_x, need_w = self.needs_input_grad[:2]
        gx = gy @ weight if need_x else None   # (N, out) @ (out, in) -> (N, in)
        gw = gy.T @ x if need_w else None      # (out, N) @ (N, in) -> (out, in)
        grads = (gx, gw)
        if len(self.needs_input_grad) == 3:
            grads += (gy.sum(axis=0) if self.needs_input_grad[2] else None,)
        assert gx is None or gx.shape == x.shape
        assert gw is None or gw.shape == weight.shape
        return grads


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x @ weight.T + bias, over the last axis of x.

    Args:
        x: input Tensor (*, in_features): (N, in_features), any number of leading
            axes (PyTorch's rule; they may be empty, N = 0), or (in_features,).
        weight: (out_features, in_features), or (in_features,) for one output
            whose axis is dropped (as in PyTorch).
        bias: (out_features,), or () with a 1-D weight; None for no bias.
    Returns:
        y Tensor.

    Shapes: x (*, in_features), weight (out_features, in_features), bias (out_features,)
    -> y (*, out_features); with weight (in_features,): y (*).
    """
    x_shape, w_shape = tuple(x.shape), tuple(weight.shape)
    if len(x_shape) < 1 or len(w_shape) not in (1, 2):
        raise ValueError(f"linear: expected x (*, in_features) and weight (out_features, in_features) "
                         f"or (in_features,), got x {x_shape} and weight {w_shape}")
    in_features = w_shape[-1]
    if x_shape[-1] != in_features:
        raise ValueError(f"linear: x has {x_shape[-1]} features but weight {w_shape} expects {in_features}")
    if bias is not None and tuple(bias.shape) != w_shape[:-1]:
        raise ValueError(f"linear: bias shape {tuple(bias.shape)} does not match weight {w_shape}: "
                         f"expected {w_shape[:-1]}")
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
        # as conv2d (and PyTorch): float64 inputs to a float32 layer would silently compute in float64
        raise ValueError(f"linear: x, weight and bias must share one dtype, got x {x.dtype}, weight {weight.dtype}"
                         + (f", bias {bias.dtype}" if bias is not None else "") + "; cast x (x.float()) or the "
                         "layer (module.to(dtype))")
    if len(w_shape) == 1:   # one output, its axis dropped afterwards
        y = linear(x, reshape(weight, (1, in_features)), None if bias is None else reshape(bias, (1,)))
        return reshape(y, x_shape[:-1])
    if len(x_shape) != 2:   # the leading axes as one batch axis, and back
        rows = 1
        for extent in x_shape[:-1]:
            rows *= extent
        y = linear(reshape(x, (rows, in_features)), weight, bias)
        return reshape(y, x_shape[:-1] + (w_shape[0],))
    fast = dispatch.linear(x.data if isinstance(x, Tensor) else x)
    fn = Linear() if fast is None else FastPath("Linear", fast)
    return fn(x, weight) if bias is None else fn(x, weight, bias)
