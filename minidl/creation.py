"""Making tensors and saving state, with PyTorch's names: ``minidl.zeros``, ``minidl.cat``, ``minidl.save``.

Thin helpers: each builds a NumPy array on the host (or calls an op of
``minidl.functional``) and makes it a Tensor on the requested device. Floats are float32
unless a dtype says otherwise, as PyTorch's default dtype. Random tensors need an explicit
``generator`` (a ``numpy.random.Generator``): minidl has no global seed, on purpose
(docs/pytorch.md), so a run is reproducible from its own code.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import backend
from .autograd import Tensor, tensor
from .checkpoint import load_checkpoint, save_checkpoint
from .functional.basic import concat
from .functional.shape import unsqueeze

# PyTorch's dtype names (minidl.float32, minidl.long, ...), as NumPy's dtypes
DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "int64": np.int64,
          "int32": np.int32, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_, "long": np.int64,
          "double": np.float64, "half": np.float16, "float": np.float32, "int": np.int32}


def _size(fn: str, size) -> tuple:
    """``f(2, 3)`` and ``f((2, 3))`` alike, checked."""
    size = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else tuple(size)
    if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 0 for n in size):
        raise ValueError(f"{fn}: a size is non-negative ints, got {size}")
    return size


def _made(fn: str, array, dtype, device, requires_grad) -> Tensor:
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    elif array.dtype == np.float64:
        array = array.astype(np.float32)
    if requires_grad and array.dtype.kind != "f":
        raise ValueError(f"{fn}: only floating-point tensors can require grad, got dtype {array.dtype}")
    return tensor(array, requires_grad=requires_grad, device=device)


def zeros(*size, dtype=None, device="cpu", requires_grad: bool = False) -> Tensor:
    return _made("zeros", np.zeros(_size("zeros", size)), dtype, device, requires_grad)


def ones(*size, dtype=None, device="cpu", requires_grad: bool = False) -> Tensor:
    return _made("ones", np.ones(_size("ones", size)), dtype, device, requires_grad)


def full(size, fill_value, dtype=None, device="cpu", requires_grad: bool = False) -> Tensor:
    """A tensor of ``size`` holding ``fill_value`` (an int value gives int64, as PyTorch)."""
    array = np.full(_size("full", (size,)), fill_value)
    return _made("full", array, dtype, device, requires_grad)


def zeros_like(t: Tensor, dtype=None, requires_grad: bool = False) -> Tensor:
    return tensor(np.zeros(t.shape, dtype or t.dtype), requires_grad=requires_grad, device=t.device)


def ones_like(t: Tensor, dtype=None, requires_grad: bool = False) -> Tensor:
    return tensor(np.ones(t.shape, dtype or t.dtype), requires_grad=requires_grad, device=t.device)


def arange(start, end=None, step=1, dtype=None, device="cpu", requires_grad: bool = False) -> Tensor:
    """start, start + step, ... below end (``arange(n)``: 0 .. n-1); ints give int64, floats float32."""
    if end is None:
        start, end = 0, start
    return _made("arange", np.arange(start, end, step), dtype, device, requires_grad)


def linspace(start, end, steps: int, dtype=None, device="cpu", requires_grad: bool = False) -> Tensor:
    return _made("linspace", np.linspace(start, end, steps), dtype, device, requires_grad)


def eye(n: int, m: int | None = None, dtype=None, device="cpu", requires_grad: bool = False) -> Tensor:
    return _made("eye", np.eye(n, m), dtype, device, requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing ``array``'s memory and dtype (float64 stays float64, as PyTorch's)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array)


def _generator(fn: str, generator):
    if not isinstance(generator, np.random.Generator):
        raise ValueError(f"{fn}: needs generator=numpy.random.default_rng(seed); minidl has no global seed "
                         f"(docs/pytorch.md), got {generator!r}")
    return generator


def randn(*size, generator=None, dtype=None, device="cpu", requires_grad: bool = False) -> Tensor:
    """Standard normal values, drawn from ``generator`` (required)."""
    rng = _generator("randn", generator)
    return _made("randn", rng.standard_normal(_size("randn", size)), dtype, device, requires_grad)


def rand(*size, generator=None, dtype=None, device="cpu", requires_grad: bool = False) -> Tensor:
    """Uniform values in [0, 1), drawn from ``generator`` (required)."""
    rng = _generator("rand", generator)
    return _made("rand", rng.random(_size("rand", size)), dtype, device, requires_grad)


def randint(low, high=None, size=(), *, generator=None, dtype=None, device="cpu") -> Tensor:
    """Integers in [low, high) (``randint(high, size)`` starts at 0), int64, from ``generator`` (required)."""
    if isinstance(high, (tuple, list)):   # randint(high, size), PyTorch's short form
        high, size = None, high
    if high is None:
        low, high = 0, low
    rng = _generator("randint", generator)
    return _made("randint", rng.integers(low, high, _size("randint", (size,))), dtype, device, False)


def cat(tensors, dim: int = 0) -> Tensor:
    """Join tensors along ``dim`` (``F.concat``)."""
    return concat(tensors, dim)


def stack(tensors, dim: int = 0) -> Tensor:
    """Join same-shaped tensors along a new ``dim``."""
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("stack: expected at least one tensor, got none")
    shapes = {t.shape for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"stack: the tensors must share one shape, got {sorted(shapes)}")
    return concat([unsqueeze(t, dim) for t in tensors], dim % (tensors[0].ndim + 1))


def _host_state(obj):
    """Tensors in a nested state as host arrays, for ``save``."""
    if isinstance(obj, Tensor):
        return backend.to_numpy(obj.data)
    if isinstance(obj, dict):
        return type(obj)((k, _host_state(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_host_state(v) for v in obj)
    return obj


def save(obj: dict, f) -> None:
    """Save a state dict (a model's, an optimizer's, or a dict of them) to the file ``f``.

    Difference from PyTorch, on purpose: the file is minidl's pickle-free ``.npz``
    checkpoint (``minidl.checkpoint``), written atomically, and only dicts of arrays,
    numbers, strings and lists are saved: a file never runs code when loaded.
    """
    if not isinstance(obj, dict):
        raise TypeError(f"save: expected a dict (a state_dict, or a dict of them), got {type(obj).__name__}")
    save_checkpoint(f, _host_state(obj))


def load(f) -> dict:
    """Read what ``save`` wrote: the dict, with NumPy arrays (``model.load_state_dict(minidl.load(f))``).

    A PyTorch ``.pth`` file reads with ``minidl.weights.load_torch`` instead.
    """
    return load_checkpoint(f)
