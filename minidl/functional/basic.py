"""Arithmetic and reductions: the glue every model needs (shape operations: shape.py).

Binary operations broadcast like NumPy; their backward sums the upstream gradient
back to each input's shape (``sum_to``). Python scalars become arrays of the
tensor's dtype on the tensor's device, so ``x * 2`` stays float32 and stays put.
"""
from __future__ import annotations

import operator

import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from .shape import Reshape, Transpose, flatten, reshape, transpose  # noqa: F401  (importable from here as before)


def sum_to(grad, shape):
    """Sum a broadcast gradient back down to ``shape`` (the inverse of broadcasting)."""
    if grad.shape == tuple(shape):
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and grad.shape[i + lead] != 1)
    out = grad.sum(axis=axes, keepdims=True) if axes else grad
    return out.reshape(shape)


def _broadcast(fn: str, op, a, b):
    """a <op> b, with NumPy's broadcasting error restated to name the operation."""
    try:
        return op(a, b)
    except ValueError as exc:
        if "broadcast" not in str(exc):
            raise
        raise ValueError(f"{fn}: shapes {tuple(a.shape)} and {tuple(b.shape)} do not broadcast (from the last dim "
                         f"on, each pair of sizes must be equal or one of them 1)") from None


def _as_tensors(a, b):
    """Both operands as Tensors; a Python scalar takes the other's dtype and device."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.device != b.device:
            raise ValueError(f"operands are on different devices: {a.device} and {b.device}")
        return a, b
    ref = a if isinstance(a, Tensor) else b
    xp = backend.get_array_module(ref.data)
    if ref.dtype.kind in "biu" and isinstance(a if ref is b else b, float):
        # PyTorch's promotion: an integer tensor and a Python float give float32 (not
        # the integer dtype, which would truncate 0.5 to 0)
        promoted = Tensor(ref.data.astype(xp.float32))
        a, b = (promoted, b) if ref is a else (a, promoted)
        ref = promoted

    def wrap(v):
        if isinstance(v, Tensor):
            return v
        if backend.is_array(v):
            return Tensor(backend.to_device(v, ref.device))
        with backend.device_context(ref.device):  # CuPy makes arrays on the current GPU
            return Tensor(xp.asarray(v, dtype=ref.dtype))
    return wrap(a), wrap(b)


class Add(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return _broadcast("add", operator.add, a, b)

    def backward(self, gy):
        return sum_to(gy, self.shapes[0]), sum_to(gy, self.shapes[1])


class Sub(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return _broadcast("sub", operator.sub, a, b)

    def backward(self, gy):
        return sum_to(gy, self.shapes[0]), sum_to(-gy, self.shapes[1])


class Mul(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return _broadcast("mul", operator.mul, a, b)

    def backward(self, gy):
        a, b = self.saved_arrays
        ga = sum_to(gy * b, a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(gy * a, b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return _broadcast("div", operator.truediv, a, b)

    def backward(self, gy):
        a, b = self.saved_arrays
        ga = sum_to(gy / b, a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(-gy * a / (b * b), b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class Pow(Function):
    """x ** c for a constant exponent c."""

    def __init__(self, exponent):
        self.exponent = exponent

    def forward(self, x):
        self.save_for_backward(x)
        return x ** self.exponent

    def backward(self, gy):
        (x,) = self.saved_arrays
        c = self.exponent
        return gy * c * x ** (c - 1)


class Exp(Function):
    def forward(self, x):
        y = backend.get_array_module(x).exp(x)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        return gy * self.saved_arrays[0]


class Log(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return backend.get_array_module(x).log(x)

    def backward(self, gy):
        return gy / self.saved_arrays[0]


class Abs(Function):
    def forward(self, x):
        xp = backend.get_array_module(x)
        self.save_for_backward(xp.sign(x))
        return xp.abs(x)

    def backward(self, gy):
        return gy * self.saved_arrays[0]


class Clamp(Function):
    """x clipped to [low, high] (either may be None); the gradient passes where low <= x <= high."""

    def __init__(self, low, high):
        self.low, self.high = low, high

    def forward(self, x):
        xp = backend.get_array_module(x)
        inside = xp.ones(x.shape, dtype=bool)
        if self.low is not None:
            inside &= x >= self.low
        if self.high is not None:
            inside &= x <= self.high
        self.save_for_backward(inside)
        return xp.clip(x, self.low, self.high)

    def backward(self, gy):
        return gy * self.saved_arrays[0]


class Clone(Function):
    def forward(self, x):
        return x.copy()

    def backward(self, gy):
        return gy


class MatMul(Function):
    """a (..., M, K) @ b (..., K, N) -> (..., M, N) (``matmul`` turns 1-D operands into these shapes)."""

    def forward(self, a, b):
        if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: expected (..., M, K) @ (..., K, N), got {a.shape} @ {b.shape}")
        self.save_for_backward(a, b)
        return a @ b

    def backward(self, gy):
        a, b = self.saved_arrays
        xp = backend.get_array_module(gy)
        ga = sum_to(gy @ xp.swapaxes(b, -1, -2), a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(xp.swapaxes(a, -1, -2) @ gy, b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Sum(Function):
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.in_shape = x.shape
        return x.sum(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        if not self.keepdims and self.axis is not None:
            axes = (self.axis,) if isinstance(self.axis, int) else self.axis
            gy = xp.expand_dims(gy, tuple(a % len(self.in_shape) for a in axes))
        return xp.broadcast_to(gy, self.in_shape).copy()


def _is_basic(index) -> bool:
    """Whether ``index`` selects by slices, ints, None and Ellipsis only (NumPy's basic indexing)."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (slice, int, np.integer)) for p in parts)


class GetItem(Function):
    """x[index] for basic and integer-array indexing.

    Backward puts gy where forward read it. A basic index (slices, ints) reads every
    element at most once, so that is one assignment; an integer array may repeat an
    element, whose gradients must add up (``add.at``, a slower unbuffered scatter).
    """

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.save_for_backward(x)   # held by the graph anyway; backward gives gx x's memory layout
        return x[self.index]

    def backward(self, gy):
        (x,) = self.saved_arrays
        xp = backend.get_array_module(gy)
        gx = xp.zeros_like(x)
        if _is_basic(self.index):
            gx[self.index] = gy
        else:
            xp.add.at(gx, self.index, gy)  # repeated indices add up
        return gx


class Concat(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        self.sizes = [x.shape[self.axis] for x in xs]
        return backend.get_array_module(*xs).concatenate(xs, axis=self.axis)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        bounds = [int(b) for b in np.cumsum(self.sizes)[:-1]]  # host ints, as split expects
        return tuple(xp.split(gy, bounds, axis=self.axis))


class Cast(Function):
    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        self.in_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return gy.astype(self.in_dtype)


class ToDevice(Function):
    def __init__(self, device):
        self.target = device

    def forward(self, x):
        self.source = backend.device_of(x)
        return backend.to_device(x, self.target)

    def backward(self, gy):
        return backend.to_device(gy, self.source)


# ---- functional wrappers ----------------------------------------------------
def add(a, b): return Add()(*_as_tensors(a, b))
def sub(a, b): return Sub()(*_as_tensors(a, b))
def mul(a, b): return Mul()(*_as_tensors(a, b))
def div(a, b): return Div()(*_as_tensors(a, b))
def neg(x): return Neg()(x)
def exp(x): return Exp()(x)
def log(x): return Log()(x)


def power(x, exponent):
    if isinstance(exponent, Tensor) or backend.is_array(exponent):
        raise TypeError("power: only constant (Python number) exponents are supported")
    return Pow(exponent)(x)


def matmul(a, b):
    """a @ b; a 1-D operand is a row (on the left) or a column (on the right), dropped again after (NumPy's rule)."""
    a, b = _as_tensors(a, b)
    if a.ndim == 1 or b.ndim == 1:
        row, column = a.ndim == 1, b.ndim == 1
        a = reshape(a, (1,) + a.shape) if row else a
        b = reshape(b, b.shape + (1,)) if column else b
        y = MatMul()(a, b)
        shape = y.shape[:-2] + (() if row else y.shape[-2:-1]) + (() if column else y.shape[-1:])
        return reshape(y, shape)
    return MatMul()(a, b)


def rpower(base, x):
    """base ** x for a constant positive base: exp(x * log(base))."""
    if isinstance(base, Tensor) or backend.is_array(base) or not base > 0:
        raise TypeError(f"power: only a positive constant (Python number) base is supported, got {base!r}")
    return exp(x * float(np.log(base)))


def _reduced_axes(fn: str, x, axis, keepdims, dim, keepdim):
    """(axes as a tuple of non-negative ints or None, keepdims) from NumPy's or PyTorch's names."""
    if dim is not None:
        if axis is not None:
            raise TypeError(f"{fn}: give axis= (NumPy's name) or dim= (PyTorch's), not both")
        axis = dim
    if keepdim is not None:
        keepdims = keepdim
    if axis is None:
        return None, bool(keepdims)
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    for a in axes:
        if not -x.ndim <= int(a) < max(x.ndim, 1):
            raise ValueError(f"{fn}: axis {a} is out of range for a tensor of shape {x.shape}")
    if x.ndim == 0:   # PyTorch's dim 0 (or -1) of a 0-d tensor: the one value
        return None, bool(keepdims)
    axes = tuple(int(a) % x.ndim for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{fn}: axis {axis} repeats a dimension")
    return axes, bool(keepdims)


def sum(x, axis=None, keepdims=False, *, dim=None, keepdim=None):  # noqa: A001  (mirrors ndarray.sum)
    """The sum over ``axis`` (an int, a tuple, or None: all); PyTorch's ``dim=``/``keepdim=`` as well."""
    axes, keepdims = _reduced_axes("sum", x, axis, keepdims, dim, keepdim)
    return Sum(axes, keepdims)(x)


def mean(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """The mean over ``axis`` (as ``sum``); nan for an empty selection, as NumPy and PyTorch."""
    axes, keepdims = _reduced_axes("mean", x, axis, keepdims, dim, keepdim)
    count = 1
    for a in (range(x.ndim) if axes is None else axes):
        count *= x.shape[a]
    return Sum(axes, keepdims)(x) * (1.0 / count if count else float("nan"))


def clone(x):
    """A copy of x that gradients flow through (PyTorch's ``clone``)."""
    return Clone()(x)


def clamp(x, min=None, max=None):   # noqa: A002  (PyTorch's names)
    """x clipped to [min, max] (PyTorch's ``clamp``); at least one bound."""
    if min is None and max is None:
        raise ValueError("clamp: give min, max or both")
    return Clamp(min, max)(x)


def absolute(x):
    """|x|; its gradient at 0 is 0 (PyTorch's choice)."""
    return Abs()(x)


def sqrt(x):
    return Pow(0.5)(x)


_COMPARISONS = {"gt": "greater", "ge": "greater_equal", "lt": "less", "le": "less_equal", "eq": "equal",
                "ne": "not_equal"}


def compare(x, other, op: str):
    """x <op> other elementwise as a bool Tensor (no gradient): op one of gt, ge, lt, le, eq, ne."""
    x, other = _as_tensors(x, other)
    xp = backend.get_array_module(x.data)
    return Tensor(getattr(xp, _COMPARISONS[op])(x.data, other.data))


def one_axis(fn: str, x, dim):
    """PyTorch's single ``dim`` of argmax, max and min as a non-negative axis, or None (all of x)."""
    if isinstance(dim, (tuple, list)):
        raise TypeError(f"{fn}: dim is one int, got {dim!r}")
    axes, _ = _reduced_axes(fn, x, dim, False, None, None)
    return None if axes is None else axes[0]


def argmax(x, dim=None, keepdim=False):
    """Index of the largest value (over all values, flattened, when ``dim`` is None); int64, no gradient."""
    axis = one_axis("argmax", x, dim)
    xp = backend.get_array_module(x.data)
    if axis is None:
        return Tensor(xp.asarray(xp.argmax(x.data), dtype=xp.int64))
    return Tensor(xp.argmax(x.data, axis=axis, keepdims=keepdim).astype(xp.int64))


def getitem(x, index):
    if isinstance(index, Tensor):
        index = index.data
    return GetItem(index)(x)


def concat(tensors, axis=0, *, dim=None):
    """Join tensors along ``axis`` (PyTorch's ``dim=`` too); shapes must agree on every other axis."""
    if dim is not None:
        axis = dim
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concat: expected at least one tensor, got none")
    ndim = tensors[0].ndim
    axis = axis % ndim
    for t in tensors:
        if t.ndim != ndim or any(t.shape[i] != tensors[0].shape[i] for i in range(ndim) if i != axis):
            raise ValueError(f"concat: shapes {[t.shape for t in tensors]} differ off axis {axis}")
    return Concat(axis)(*tensors)
