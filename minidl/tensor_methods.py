"""Tensor's conveniences in PyTorch's spelling: conversions, Python numbers, and small ops.

Mixed into ``Tensor`` (autograd.py keeps what a graph is made of). Each method is a line
or two over what Tensor already has, so each one's gradient is that of the operations it
calls: ``var`` is a mean of squared deviations, ``expand`` a broadcast addition, ``clamp``
a product with a mask. Nothing here is needed to read autograd.py.
"""
from __future__ import annotations

import numpy as np

from . import backend


class ElementCount(int):
    """``t.size``: NumPy's element count, an int, that can also be called as PyTorch's ``t.size(dim=None)``."""

    def __new__(cls, count: int, shape: tuple):
        number = super().__new__(cls, count)
        number.shape = shape
        return number

    def __call__(self, dim=None):
        return self.shape if dim is None else self.shape[dim]


class TensorMethods:
    """PyTorch's spellings on Tensor (see docs/pytorch.md for what differs on purpose)."""

    __slots__ = ()   # Tensor keeps its slots: no per-tensor __dict__

    # ---- Python numbers: one-element tensors, as PyTorch's --------------------------------
    def _one(self, what: str):
        if self.size != 1:
            raise TypeError(f"{what} of a tensor of shape {self.shape}: only one-element tensors convert "
                            "to Python numbers")
        return self.item()

    def __float__(self):
        return float(self._one("float()"))

    def __int__(self):
        return int(self._one("int()"))

    def __index__(self):
        if self.dtype.kind not in "iub":
            raise TypeError(f"a tensor of dtype {self.dtype} cannot be an index; only integer tensors can")
        return int(self._one("an index"))

    def __bool__(self):
        if self.size != 1:
            raise RuntimeError(f"the truth value of a tensor of shape {self.shape} is ambiguous; use "
                               "(t > 0).numpy().any() or .all()")
        return bool(self.item())

    def __format__(self, spec: str) -> str:
        return format(self.item(), spec) if spec and self.size == 1 else format(repr(self), spec)

    # ---- conversions ----------------------------------------------------------------------
    def tolist(self):
        return backend.to_numpy(self.data).tolist()

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else f"cuda:{int(device)}")

    def long(self):
        return self.astype(np.int64)

    def int(self):
        return self.astype(np.int32)

    def bool(self):
        return self.astype(np.bool_)

    def contiguous(self):
        return self   # minidl's arrays are contiguous where a kernel needs it

    def nelement(self) -> int:
        return int(self.size)

    # ---- small ops ----------------------------------------------------------------------------
    def view_as(self, other):
        return self.reshape(other.shape)

    reshape_as = view_as

    def t(self):
        if self.ndim > 2:
            raise ValueError(f"t: expects a tensor of at most 2 dimensions, got shape {self.shape}")
        return self if self.ndim < 2 else self.transpose(1, 0)

    def pow(self, exponent):
        return self ** exponent

    def eq(self, other):
        """Elementwise equality as a bool tensor (no gradient): ``t == u``."""
        from .functional.basic import compare
        return compare(self, other, "eq")

    def ne(self, other):
        from .functional.basic import compare
        return compare(self, other, "ne")

    def var(self, dim=None, keepdim: bool = False, *, correction: int = 1):
        """The variance over ``dim``, dividing by n - correction (1: PyTorch's unbiased default)."""
        deviation = self - self.mean(dim=dim, keepdim=True)
        count = self.size if dim is None else int(np.prod([self.shape[d] for d in np.atleast_1d(dim)]))
        divisor = count - correction
        return (deviation * deviation).sum(dim=dim, keepdim=keepdim) * (1.0 / divisor if divisor > 0 else float("nan"))

    def std(self, dim=None, keepdim: bool = False, *, correction: int = 1):
        return self.var(dim, keepdim, correction=correction) ** 0.5

    def expand(self, *sizes):
        """This tensor broadcast to ``sizes`` (-1 keeps a dim); a copy here, where PyTorch's is a view."""
        sizes = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
        lead = len(sizes) - self.ndim
        if lead < 0:
            raise ValueError(f"expand: {sizes} has fewer dims than the tensor's shape {self.shape}")
        target = tuple(self.shape[i - lead] if s == -1 else s for i, s in enumerate(sizes))
        xp = backend.get_array_module(self.data)
        with backend.device_context(self.device):
            return self + xp.zeros(target, dtype=self.dtype)   # the addition's backward sums back to self

    def expand_as(self, other):
        return self.expand(other.shape)

    def clamp(self, min=None, max=None):   # noqa: A002  (PyTorch's argument names)
        """Values clipped to [min, max]; the gradient passes where no bound applied."""
        from .functional.basic import clamp
        return clamp(self, min, max)

    clip = clamp

    def softmax(self, dim):
        from .functional.activation import softmax
        return softmax(self, dim=dim)

    def log_softmax(self, dim):
        from .functional.activation import log_softmax
        return log_softmax(self, dim=dim)

    # ---- in place, outside the graph: setting values, initialising ----------------------
    # minidl's autograd has no in-place operations: a value a graph saved must not change
    # under it. So, as PyTorch's rule for leaves, these change only a tensor that is in no
    # graph: one that does not require grad, or a parameter under ``no_grad()`` (initialising
    # it, or an update of your own, the way the optimizers change parameters).
    def _writable(self, what: str):
        from .grad_mode import is_grad_enabled
        if self.creator is not None:
            raise RuntimeError(f"Tensor.{what}: this tensor was computed in a graph, and minidl's autograd has "
                               "no in-place operations; compute a new tensor instead (e.g. y = y * mask)")
        if self.requires_grad and is_grad_enabled():
            raise RuntimeError(f"Tensor.{what}: a leaf tensor that requires grad cannot change in place while "
                               "gradients are recorded; do it inside `with minidl.no_grad():`, as in PyTorch")
        return self.data

    def _raw(self, value):
        """``value`` (a tensor, array or number) as a raw array or number on this tensor's device."""
        if isinstance(value, TensorMethods):   # a Tensor (autograd.py's Tensor mixes these methods in)
            value = value.data
        return backend.to_device(value, self.device) if backend.is_array(value) else value

    def __setitem__(self, index, value):
        """``t[index] = value`` (numbers, arrays or tensors; NumPy's indexing rules), outside the graph."""
        self._writable("__setitem__")[self._raw(index)] = self._raw(value)

    def copy_(self, src):
        """Overwrite every value with ``src`` (broadcast to this shape), outside the graph; returns self."""
        data = self._writable("copy_")
        data[...] = self._raw(src)
        return self

    def fill_(self, value):
        """Set every value to ``value``, outside the graph; returns self."""
        self._writable("fill_")[...] = value
        return self

    def zero_(self):
        """Set every value to 0, outside the graph; returns self."""
        return self.fill_(0)

    def add_(self, other, *, alpha=1):
        """self += alpha * other, outside the graph; returns self."""
        data = self._writable("add_")
        data += alpha * self._raw(other) if alpha != 1 else self._raw(other)
        return self

    def mul_(self, other):
        """self *= other, outside the graph; returns self."""
        data = self._writable("mul_")
        data *= self._raw(other)
        return self
