"""Shape operations: reshape, transpose and permute, squeeze, unsqueeze, flatten.

Each is a ``Reshape`` or a ``Transpose``, so each backward is the inverse reshape or
permutation: no arithmetic, only the gradient's shape (or order of axes) changes back.
Both NumPy's conventions (``transpose(x)`` reverses the axes, ``transpose(x, axes)``
permutes them) and PyTorch's (``permute``, ``swapdims`` of two dims, negative dims,
``flatten`` of a range of dims) are here; ``Tensor``'s methods pick PyTorch's.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function


class Reshape(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.in_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(f"reshape: a tensor of shape {tuple(x.shape)} ({x.size} values) cannot become "
                             f"{tuple(self.shape)}") from None

    def backward(self, gy):
        return gy.reshape(self.in_shape)


class Transpose(Function):
    def __init__(self, axes):
        self.axes = axes

    def forward(self, x):
        self.axes = tuple(self.axes) if self.axes else tuple(reversed(range(x.ndim)))
        return x.transpose(self.axes)

    def backward(self, gy):
        inverse = tuple(int(i) for i in np.argsort(self.axes))  # axes are host ints: no device round trip
        return gy.transpose(inverse)


def reshape(x, *shape):
    """x with a new ``shape`` (one -1 is inferred), the same values in the same order."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return Reshape(shape)(x)


def transpose(x, *axes):
    """NumPy's transpose: no axes reverses them all; ``axes`` (a tuple, or the ints) reorders them."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return Transpose(axes or None)(x)


def _dim(fn: str, dim, ndim: int, shape: tuple) -> int:
    """``dim`` in [-ndim, ndim) as a non-negative index, or an error naming ``fn`` and ``shape``."""
    if isinstance(dim, bool) or not isinstance(dim, int) and not hasattr(dim, "__index__"):
        raise TypeError(f"{fn}: a dim must be an int, got {dim!r}")
    dim = int(dim)
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise ValueError(f"{fn}: dim {dim} is out of range for a tensor of shape {tuple(shape)}")
    return dim % max(ndim, 1)


def _dims(args) -> tuple:
    """``f(x, 0, 2, 1)`` and ``f(x, (0, 2, 1))`` alike."""
    return tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else tuple(args)


def permute(x, *dims):
    """x with its dims reordered: result dim i is x's dim ``dims[i]`` (PyTorch's ``permute``).

    Shapes: x (d0, d1, ...) -> (d[dims[0]], d[dims[1]], ...).
    """
    dims = _dims(dims)
    if len(dims) != x.ndim:
        raise ValueError(f"permute: expected {x.ndim} dims for a tensor of shape {x.shape}, got {dims}")
    order = tuple(_dim("permute", d, x.ndim, x.shape) for d in dims)
    if sorted(order) != list(range(x.ndim)):
        raise ValueError(f"permute: {dims} is not a permutation of the dims of a tensor of shape {x.shape}")
    return Transpose(order)(x)


def swapdims(x, dim0, dim1):
    """x with dims ``dim0`` and ``dim1`` swapped (PyTorch's ``transpose(dim0, dim1)``, alias ``swapdims``)."""
    order = list(range(x.ndim))
    a, b = _dim("transpose", dim0, x.ndim, x.shape), _dim("transpose", dim1, x.ndim, x.shape)
    order[a], order[b] = order[b], order[a]
    return Transpose(tuple(order))(x)


def squeeze(x, dim=None):
    """x without its size-1 dims; with ``dim`` (an int or a tuple), only those, where they are 1.

    As PyTorch: a named dim whose size is not 1 stays, without an error.
    """
    if dim is None:
        dims = {i for i, size in enumerate(x.shape) if size == 1}
    else:
        dims = {_dim("squeeze", d, x.ndim, x.shape) for d in (dim if isinstance(dim, (tuple, list)) else (dim,))}
        dims = {d for d in dims if x.ndim and x.shape[d] == 1}
    return Reshape(tuple(size for i, size in enumerate(x.shape) if i not in dims))(x)


def unsqueeze(x, dim):
    """x with a new size-1 dim at ``dim`` (in [-ndim - 1, ndim], as PyTorch)."""
    dim = _dim("unsqueeze", dim, x.ndim + 1, x.shape)
    shape = list(x.shape)
    shape.insert(dim, 1)
    return Reshape(tuple(shape))(x)


def flatten(x, start_dim: int = 1, end_dim: int = -1):
    """x with dims ``start_dim`` .. ``end_dim`` (inclusive) merged into one.

    The default keeps the batch: (N, C, H, W) -> (N, C*H*W), each sample's values in
    (C, H, W) order, as ``nn.Flatten``. ``Tensor.flatten`` starts at dim 0 by default, as
    PyTorch's ``torch.flatten`` does (``F.flatten`` is minidl's: PyTorch has no such function).

    Shapes: (d0, ..., ds, ..., de, ...) -> (d0, ..., ds * ... * de, ...); a 0-d x -> (1,).
    """
    if x.ndim == 0:
        return Reshape((1,))(x)
    start, end = _dim("flatten", start_dim, x.ndim, x.shape), _dim("flatten", end_dim, x.ndim, x.shape)
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} "
                         f"for a tensor of shape {x.shape}")
    merged = 1
    for size in x.shape[start:end + 1]:   # named, not -1: an empty batch (N = 0) has no size to infer from
        merged *= int(size)
    return Reshape(x.shape[:start] + (merged,) + x.shape[end + 1:])(x)
