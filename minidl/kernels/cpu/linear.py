"""The dense layer on the CPU: the reference's three products, split over the worker threads.

BLAS runs single-threaded inside minidl's workers (threads.py), so a product that
no batch slicing splits must be spread over the cores here: ``threads.matmul`` cuts
it into blocks of the result, one BLAS call per block.
"""
from __future__ import annotations

from .threads import matmul


class SplitLinear:
    # x (N, in), W (out, in), b (out,) -> y (N, out) = x @ W.T + b;
    # gx = gy @ W (N, in), gW = gy.T @ x (out, in), gb = sum of gy over N (out,).
    algorithm = "split products"   # what minidl.viz shows for the call

    def forward(self, x, weight, bias=None):
        self.x, self.weight = x, weight
        y = matmul(x, weight.T)   # W.T is a transposed view that BLAS reads without a copy
        if bias is not None:
            y += bias
        return y

    def backward(self, gy, needs):
        x, weight = self.x, self.weight
        gx = matmul(gy, weight) if needs[0] else None
        gw = matmul(gy.T, x) if needs[1] else None
        assert gx is None or gx.shape == x.shape
        assert gw is None or gw.shape == weight.shape
        if len(needs) == 2:
            return gx, gw
        return gx, gw, (gy.sum(axis=0) if needs[2] else None)
