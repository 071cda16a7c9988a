"""LayerNorm and GroupNorm: normalisation within each sample (``F.layer_norm``, ``F.group_norm``).

Unlike batch norm they keep no running statistics: training and evaluation compute
the same thing, at any batch size. Parameters and state_dict keys are PyTorch's
(``weight`` ones, ``bias`` zeros).
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import functional as F
from ..functional.sample_normalization import check_eps
from .module import Module, Parameter


class LayerNorm(Module):
    """Normalise over the last dimensions, as ``torch.nn.LayerNorm``.

    Args:
        normalized_shape: an int or tuple, the trailing shape of the input to normalise over.
        eps: added to the variance.
        elementwise_affine: learn ``weight`` (ones) and, with ``bias``, ``bias`` (zeros),
            both of shape normalized_shape.
        bias: whether an affine layer has a bias (PyTorch's argument).
        dtype: of the parameters (float32 by default).

    Shapes: x (*, *normalized_shape) -> same.
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, *, dtype=np.float32):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) else tuple(normalized_shape)
        if not shape or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in shape):
            raise ValueError(f"LayerNorm: normalized_shape must be a positive int or a tuple of them, "
                             f"got {normalized_shape!r}")
        self.normalized_shape = tuple(int(n) for n in shape)
        self.eps, self.elementwise_affine = check_eps("LayerNorm", eps), bool(elementwise_affine)
        self.weight = Parameter(np.ones(self.normalized_shape, dtype)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype)) if elementwise_affine and bias else None

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def shape_info(self, shape):
        k = len(self.normalized_shape)
        if tuple(shape[len(shape) - k:]) != self.normalized_shape:
            raise ValueError(f"LayerNorm: input shape {tuple(shape)} does not end in {self.normalized_shape}")
        return tuple(shape), ""

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class GroupNorm(Module):
    """Normalise each sample over groups of channels and their pixels, as ``torch.nn.GroupNorm``.

    Args:
        num_groups: G, dividing num_channels (1: layer norm over (C, H, W); C: instance norm).
        num_channels: C, axis 1 of the input.
        eps: added to the variance.
        affine: learn a per-channel ``weight`` (ones) and, with ``bias``, ``bias`` (zeros).
        bias: whether an affine layer has a bias (PyTorch's keyword argument).
        dtype: of the parameters (float32 by default).

    Shapes: x (N, C, *) -> same.
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, *, bias=True, dtype=np.float32):
        super().__init__()
        if (isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral) or num_groups < 1
                or not isinstance(num_channels, numbers.Integral) or num_channels < 1 or num_channels % num_groups):
            raise ValueError(f"GroupNorm: num_groups must be a positive int dividing num_channels, "
                             f"got num_groups={num_groups!r}, num_channels={num_channels!r}")
        self.num_groups, self.num_channels = int(num_groups), int(num_channels)
        self.eps, self.affine = check_eps("GroupNorm", eps), bool(affine)
        self.weight = Parameter(np.ones(self.num_channels, dtype)) if affine else None
        self.bias = Parameter(np.zeros(self.num_channels, dtype)) if affine and bias else None

    def forward(self, x):
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm: expected input (N, {self.num_channels}, *), got {tuple(x.shape)}")
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def shape_info(self, shape):
        if not shape or shape[0] != self.num_channels:
            raise ValueError(f"GroupNorm: input shape {tuple(shape)} does not have {self.num_channels} channels first")
        return tuple(shape), ""

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, bias={self.bias is not None}"
