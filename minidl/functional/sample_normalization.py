"""Normalisation within each sample: layer norm and group norm.

Batch norm (``normalization.py``) averages each channel over the batch, so its
result for one image depends on the others, and it needs running statistics for
evaluation. These average within one sample instead, the same in training and in
evaluation, at any batch size (one image included):

    layer_norm  over the last dimensions (``normalized_shape``): every feature of a
                token or position (transformers, ConvNeXt's channels-last blocks)
    group_norm  over groups of C / G channels and all their pixels (Wu & He 2018):
                G = 1 is layer norm over (C, H, W), G = C is instance norm

Both are one idea, written once: view x as rows, one per normalised group, standardise
each row (``Standardize``), then scale and shift with the learned ``weight`` and
``bias`` through ordinary autograd ops (their gradients are the broadcasts' sums).

    x (R, M) -> mean, var (R,) over each row's M values (biased, as PyTorch's)
             -> xhat = (x - mean) / sqrt(var + eps)
    backward: gx = (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat)) / sqrt(var + eps), per row

No fast path: neither layer is in the networks minidl times.
"""
from __future__ import annotations

import math
import numbers

from .. import backend
from ..autograd import Function, Tensor
from .activation import _floating
from .basic import add, mul
from .shape import reshape


class Standardize(Function):
    # x (R, M) -> xhat (R, M): each row to mean 0 and variance 1 (var + eps, to be exact).
    def __init__(self, eps: float):
        self.eps = eps

    def forward(self, x):
        xp = backend.get_array_module(x)
        centered = x - x.mean(axis=1, keepdims=True)
        var = (centered * centered).mean(axis=1, keepdims=True)   # two passes: no cancellation
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        xhat = centered * inv_std
        self.save_for_backward(xhat, inv_std)
        return xhat

    def backward(self, gxhat):
        xhat, inv_std = self.saved_arrays
        mean_g = gxhat.mean(axis=1, keepdims=True)
        mean_g_xhat = (gxhat * xhat).mean(axis=1, keepdims=True)
        gx = inv_std * (gxhat - mean_g - xhat * mean_g_xhat)
        assert gx.shape == xhat.shape
        return gx


def _affine(xhat, weight, bias, shape):
    """xhat * weight + bias, the parameters reshaped to ``shape`` (None: left out)."""
    if weight is not None:
        xhat = mul(xhat, reshape(weight, shape))
    if bias is not None:
        xhat = add(xhat, reshape(bias, shape))
    return xhat


def check_eps(fn: str, eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"{fn}: eps must be a positive number, got {eps!r}")
    return float(eps)


def _check_parameter(fn: str, name: str, value, shape) -> None:
    if value is not None and tuple(value.shape) != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {tuple(value.shape)}")


def _floating_tensor(fn: str, x):
    _floating(fn, x)
    return x if isinstance(x, Tensor) else Tensor(x)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    """Normalise over the last dimensions, as ``torch.nn.functional.layer_norm``.

    Args:
        input: Tensor (*, *normalized_shape).
        normalized_shape: an int or tuple: the trailing shape to normalise over.
        weight, bias: Tensors of shape normalized_shape (an elementwise scale and shift), or None.
        eps: added to the variance.
    Returns:
        y Tensor, input's shape.
    Raises:
        ValueError naming layer_norm for a trailing shape that is not normalized_shape, a
        weight or bias of another shape, or eps <= 0.
    """
    x = _floating_tensor("layer_norm", input)
    shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or x.ndim < k or tuple(x.shape[x.ndim - k:]) != shape:
        raise ValueError(f"layer_norm: expected input (*, {', '.join(map(str, shape))}) ending in normalized_shape "
                         f"{shape}, got {tuple(x.shape)}")
    for name, value in (("weight", weight), ("bias", bias)):
        _check_parameter("layer_norm", name, value, shape)
    rows, size = math.prod(x.shape[:x.ndim - k]), math.prod(shape)
    xhat = Standardize(check_eps("layer_norm", eps))(reshape(x, (rows, size)))
    return _affine(reshape(xhat, x.shape), weight, bias, shape)


def group_norm(input, num_groups: int, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    """Normalise over groups of channels and their pixels, as ``torch.nn.functional.group_norm``.

    Args:
        input: Tensor (N, C, *S): images (N, C, H, W), sequences (N, C, L) or (N, C).
        num_groups: G, which divides C; each (image, group) of C/G channels is normalised
            over its C/G * prod(S) values.
        weight, bias: Tensors (C,): a per-channel scale and shift, or None.
        eps: added to the variance.
    Returns:
        y Tensor, input's shape.
    Raises:
        ValueError naming group_norm for an input without a channel axis, a G that does
        not divide C, a weight or bias not of shape (C,), or eps <= 0.
    """
    x = _floating_tensor("group_norm", input)
    if x.ndim < 2:
        raise ValueError(f"group_norm: expected input (N, C, *), got {tuple(x.shape)}")
    n, c = x.shape[:2]
    if isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral) or num_groups < 1 \
            or c % num_groups:
        raise ValueError(f"group_norm: num_groups must be a positive int dividing the {c} channels, "
                         f"got {num_groups!r}")
    for name, value in (("weight", weight), ("bias", bias)):
        _check_parameter("group_norm", name, value, (c,))
    rows = n * int(num_groups)
    xhat = Standardize(check_eps("group_norm", eps))(reshape(x, (rows, c // int(num_groups) * math.prod(x.shape[2:]))))
    return _affine(reshape(xhat, x.shape), weight, bias, (c,) + (1,) * (x.ndim - 2))
