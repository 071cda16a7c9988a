"""Fully connected layer: y = x @ W^T + b.

This module holds the reference implementation. ``linear`` asks ``minidl.kernels.dispatch``
for a fast path first (on the CPU, the products split over the worker threads).
"""
from __future__ import annotations

from ..autograd import Function, Tensor
from ..kernels import dispatch
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
    """y = x @ weight.T + bias.

    Shapes: x (N, in_features), weight (out_features, in_features), bias (out_features,)
    -> y (N, out_features).
    """
    if x.ndim != 2 or weight.ndim != 2:
        raise ValueError(f"linear: expected x (N, in) and weight (out, in), got x {x.shape} and weight {weight.shape}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"linear: x has {x.shape[1]} features but weight {weight.shape} expects {weight.shape[1]}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"linear: bias shape {bias.shape} does not match weight's {weight.shape[0]} outputs")
    fast = dispatch.linear(x.data if isinstance(x, Tensor) else x)
    fn = Linear() if fast is None else FastPath("Linear", fast)
    return fn(x, weight) if bias is None else fn(x, weight, bias)
