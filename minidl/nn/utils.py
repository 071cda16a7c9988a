"""Gradient clipping, as ``torch.nn.utils``: ``clip_grad_norm_`` and ``clip_grad_value_``.

Call between ``backward()`` and ``optimizer.step()``. Both change the gradients in place
(each leaf's ``.grad`` owns its memory, backprop.py). The norm is computed on the host in
float64 from per-parameter sums, so it does not depend on the order of the parameters'
rounding; on a GPU that costs one small transfer per parameter.
"""
from __future__ import annotations

import math

from .. import backend
from ..autograd import Tensor


def _with_grads(parameters) -> list:
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p for p in params if p.grad is not None]


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> float:
    """Scale all gradients together so that their joint ``norm_type`` norm is at most ``max_norm``.

    The factor is max_norm / (norm + 1e-6) when that is below 1 (PyTorch's 1e-6), so a
    norm under the limit leaves the gradients as they are.

    Returns:
        the joint norm before clipping, as a Python float (PyTorch returns a 0-d tensor).
    Raises:
        RuntimeError for a non-finite norm when ``error_if_nonfinite``.
    """
    grads = [p.grad.data for p in _with_grads(parameters)]
    if not grads:
        return 0.0
    norm_type = float(norm_type)
    xp = backend.get_array_module(grads[0])
    if math.isinf(norm_type):
        norm = max(float(xp.abs(g).max()) if g.size else 0.0 for g in grads)
    else:
        norm = sum(float((xp.abs(g.astype(xp.float64)) ** norm_type).sum()) for g in grads) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(norm):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is {norm}")
    factor = float(max_norm) / (norm + 1e-6)
    if factor < 1.0:
        for g in grads:
            g *= g.dtype.type(factor)
    return norm


def clip_grad_value_(parameters, clip_value: float) -> None:
    """Clip every gradient element to [-clip_value, clip_value], in place."""
    for p in _with_grads(parameters):
        xp = backend.get_array_module(p.grad.data)
        xp.clip(p.grad.data, -clip_value, clip_value, out=p.grad.data)
