"""Reverse-mode automatic differentiation: ``Tensor`` and ``Function`` (``no_grad`` and its kin: grad_mode.py).

A ``Tensor`` wraps one raw array (NumPy or CuPy) and remembers the ``Function`` that
made it. Calling a ``Function`` on tensors runs its ``forward`` on the raw arrays and,
when gradients are wanted, records the call in a graph. ``Tensor.backward`` walks
that graph in reverse (backprop.py: the walk, the hooks, the accumulation into the
leaves' ``.grad``).

Memory: a function keeps only what its backward needs. Of an input made by another
function it keeps an ``OutputRef`` (the creator and which of its outputs, the shape),
not the Tensor, so an activation's array lives exactly as long as some function saved
it for backward or the caller still holds it (a ReLU's input, a residual addition's
operands, are freed as soon as forward moves on); backward frees the rest as it goes.
"""
from __future__ import annotations


import numpy as np

from . import backend
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled  # noqa: F401  (minidl.autograd's names)
from .tensor_methods import ElementCount, TensorMethods


def _as_array(value, dtype=None):
    """A raw array from an array, scalar or nested list; floats default to float32."""
    if backend.is_array(value):
        return value if dtype is None else value.astype(dtype, copy=False)
    array = np.asarray(value, dtype=dtype)
    if dtype is None and array.dtype == np.float64 and not isinstance(value, np.generic):
        array = array.astype(np.float32)  # Python floats and lists: float32 by default
    return array


class Tensor(TensorMethods):
    """An n-dimensional array with an optional gradient.

    Attributes:
        data: the raw NumPy or CuPy array.
        grad: a Tensor with the accumulated gradient (leaves only), or None.
        requires_grad: whether gradients flow to (and accumulate in) this tensor.
        creator: the Function that produced this tensor, or None for a leaf.

    Operators and methods follow PyTorch (``transpose(0, 1)``, ``permute``, ``sum(dim=,
    keepdim=)``, ``view``, ``squeeze`` ...) beside NumPy's names (``axis=``, ``keepdims=``).
    Differences, on purpose: ``size`` is NumPy's element count that can also be called
    (``t.size(0)``, PyTorch's), and ``view`` is a reshape (no shared strides). More of
    PyTorch's spellings: tensor_methods.py.
    """

    __slots__ = ("data", "grad", "requires_grad", "creator", "name", "_grad_hooks", "__weakref__")
    __array_priority__ = 1000  # so ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, name: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        self.data = _as_array(data)
        self.grad: Tensor | None = None
        self.requires_grad = bool(requires_grad)
        self.creator: Function | None = None
        self.name = name
        self._grad_hooks: list | None = None

    # ---- array facts -------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        """The element count (NumPy's); ``t.size(dim)`` also answers as PyTorch's ``size()``."""
        return ElementCount(self.data.size, self.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self) -> backend.Device:
        return backend.device_of(self.data)

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, device='{self.device}'{grad})"

    # ---- conversions -------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """A host NumPy copy of the data (always a copy, never a view)."""
        return np.array(backend.to_numpy(self.data), copy=True)

    def item(self) -> float:
        """The value of a one-element tensor as a Python number."""
        if self.size != 1:
            raise ValueError(f"Tensor.item: expected a tensor with one element, got shape {self.shape}")
        return self.data.reshape(-1)[0].item()

    def detach(self) -> "Tensor":
        """A new leaf tensor sharing this data, cut off from the graph."""
        return Tensor(self.data)

    def to(self, device=None, dtype=None) -> "Tensor":
        """This tensor on ``device`` ("cpu", "cuda", "cuda:N") and/or as ``dtype``; differentiable.

        ``to(np.float64)`` is a cast, as PyTorch's ``to(dtype)``.
        """
        if device is not None and not isinstance(device, (str, backend.Device)):
            dtype, device = device, None
        out = self if dtype is None or np.dtype(dtype) == self.dtype else self.astype(dtype)
        device = out.device if device is None else backend.parse_device(device)
        return out if device == out.device else _ops.ToDevice(device)(out)

    def astype(self, dtype) -> "Tensor":
        """This tensor cast to ``dtype``; differentiable for float dtypes."""
        return _ops.Cast(dtype)(self)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradient: ``.grad`` None, or zeros in place (``set_to_none=False``)."""
        if set_to_none or self.grad is None:
            self.grad = None
        else:
            self.grad.data[...] = 0

    @property
    def is_leaf(self) -> bool:
        """Made by no Function: a leaf (whose ``.grad`` backward fills, if it requires grad)."""
        return self.creator is None

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        """Set ``requires_grad`` on this leaf in place; returns self (PyTorch's ``requires_grad_``)."""
        if self.creator is not None:
            raise RuntimeError("Tensor.requires_grad_: only a leaf's requires_grad can be changed")
        if requires_grad and self.dtype.kind != "f":
            raise ValueError(f"Tensor.requires_grad_: only floating-point tensors can require grad, "
                             f"got dtype {self.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    def register_post_accumulate_grad_hook(self, hook) -> "HookHandle":
        """Call ``hook(self)`` in every backward, once this leaf's gradient is final.

        "Final" means every function of the graph that consumes this leaf has added
        its part to ``self.grad``; backward then goes on with the rest of the graph.
        A leaf the graph does not reach gets no call.

        Args:
            hook: a callable taking the leaf tensor; its return value is ignored.
        Returns:
            a handle whose ``remove()`` unregisters the hook.
        """
        if self.creator is not None or not self.requires_grad:
            raise RuntimeError("Tensor.register_post_accumulate_grad_hook: only a leaf tensor that requires "
                               "grad accumulates a gradient")
        if self._grad_hooks is None:
            self._grad_hooks = []
        self._grad_hooks.append(hook)
        return HookHandle(self._grad_hooks, hook)

    # ---- backward ----------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) * grad into ``.grad`` of every leaf requiring grad.

        Args:
            grad: the upstream gradient, same shape as self; may be omitted for a
                one-element tensor (it is then 1).
            retain_graph: keep saved arrays so that backward can run again.
        """
        if not self.requires_grad:
            raise RuntimeError("Tensor.backward: this tensor does not require grad "
                               "(no input required grad, or it was made under no_grad())")
        if grad is None and self.size != 1:
            raise RuntimeError(f"Tensor.backward: grad can be omitted only for a one-element "
                               f"tensor, this one has shape {self.shape}")
        # CuPy makes new arrays on the *current* GPU: make this tensor's GPU current,
        # or the seed (and every sum below) would land on GPU 0 in a cuda:1 run.
        with backend.device_context(self.device):
            if grad is None:
                grad_array = backend.get_array_module(self.data).ones_like(self.data)
            else:
                grad_array = backend.to_device(grad.data if isinstance(grad, Tensor) else grad, self.device)
                grad_array = _as_array(grad_array, dtype=self.dtype)
                if grad_array.shape != self.data.shape:
                    raise ValueError(f"Tensor.backward: grad has shape {grad_array.shape}, "
                                     f"expected {self.shape}")
            _backprop.run_backward(self, grad_array, retain_graph, caller_owns_grad=grad is not None)

    # ---- operators (implemented as Functions in minidl.functional.basic) ----
    def __add__(self, other): return _ops.add(self, other)
    def __radd__(self, other): return _ops.add(other, self)
    def __sub__(self, other): return _ops.sub(self, other)
    def __rsub__(self, other): return _ops.sub(other, self)
    def __mul__(self, other): return _ops.mul(self, other)
    def __rmul__(self, other): return _ops.mul(other, self)
    def __truediv__(self, other): return _ops.div(self, other)
    def __rtruediv__(self, other): return _ops.div(other, self)
    def __neg__(self): return _ops.neg(self)
    def __pow__(self, exponent): return _ops.power(self, exponent)
    def __rpow__(self, base): return _ops.rpower(base, self)
    def __matmul__(self, other): return _ops.matmul(self, other)
    def __rmatmul__(self, other): return _ops.matmul(other, self)
    def __getitem__(self, index): return _ops.getitem(self, index)

    # Comparisons give bool tensors without gradients, == and != too (PyTorch's meaning);
    # a tensor still hashes by identity, so it can live in sets and dicts and key a state.
    __hash__ = object.__hash__
    def __eq__(self, other): return self.eq(other)
    def __ne__(self, other): return self.ne(other)
    def __gt__(self, other): return _ops.compare(self, other, "gt")
    def __ge__(self, other): return _ops.compare(self, other, "ge")
    def __lt__(self, other): return _ops.compare(self, other, "lt")
    def __le__(self, other): return _ops.compare(self, other, "le")

    def reshape(self, *shape): return _ops.reshape(self, *shape)
    def view(self, *shape): return _ops.reshape(self, *shape)   # a reshape: minidl has no strides to share

    def transpose(self, *dims):
        """Two dims: PyTorch's ``transpose(dim0, dim1)``, those two swapped. Otherwise NumPy's:
        no dims reverses them all, a full permutation (or a tuple) reorders them."""
        if len(dims) == 2 and not isinstance(dims[0], (tuple, list)):
            return _shape.swapdims(self, *dims)
        return _ops.transpose(self, *dims)

    def permute(self, *dims): return _shape.permute(self, *dims)
    def squeeze(self, dim=None): return _shape.squeeze(self, dim)
    def unsqueeze(self, dim): return _shape.unsqueeze(self, dim)
    def flatten(self, start_dim=0, end_dim=-1): return _shape.flatten(self, start_dim, end_dim)

    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return _ops.sum(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return _ops.mean(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def argmax(self, dim=None, keepdim=False): return _ops.argmax(self, dim, keepdim)
    def max(self, dim=None, keepdim=False): return _extrema.maximum_of(self, dim, keepdim)   # dim: (values, indices)
    def min(self, dim=None, keepdim=False): return _extrema.minimum_of(self, dim, keepdim)
    def exp(self): return _ops.exp(self)
    def log(self): return _ops.log(self)
    def sqrt(self): return _ops.sqrt(self)
    def abs(self): return _ops.absolute(self)
    def clone(self): return _ops.clone(self)
    def float(self): return self.astype(np.float32)
    def double(self): return self.astype(np.float64)
    def dim(self) -> int: return self.ndim
    def numel(self) -> int: return self.size

    @property
    def T(self): return _ops.transpose(self)


class HookHandle:
    """Returned by ``register_post_accumulate_grad_hook`` and the forward hooks of ``nn.Module``; ``remove()`` unregisters the hook."""

    def __init__(self, hooks: list, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def tensor(array_like, requires_grad: bool = False, device="cpu", dtype=None) -> Tensor:
    """Make a leaf Tensor.

    Args:
        array_like: a NumPy/CuPy array, Tensor, nested list or scalar. Arrays keep their
            dtype; Python floats become float32, Python ints int64.
        requires_grad: accumulate gradients into ``.grad`` during backward.
        device: "cpu", "cuda" or "cuda:N".
        dtype: optional dtype to cast to.

    The data is always copied, as ``torch.tensor`` copies: changing the array afterwards
    leaves the tensor as it was (``minidl.from_numpy`` shares memory instead).
    """
    source = array_like.data if isinstance(array_like, Tensor) else array_like
    array = backend.to_device(_as_array(source, dtype), backend.parse_device(device))
    if array is source:   # neither the cast nor the move made a new array
        array = backend.get_array_module(array).copy(array, order="K")   # "K": the memory layout too
    if requires_grad and array.dtype.kind != "f":
        raise ValueError(f"tensor: only floating-point tensors can require grad, got dtype {array.dtype}")
    return Tensor(array, requires_grad=requires_grad)


class Function:
    """One differentiable operation on raw arrays; subclass it to add your own.

    Subclasses implement:
        forward(*arrays) -> an array or a tuple of arrays
        backward(*grad_outputs) -> one gradient array (or None) per forward input

    Save what backward needs with ``self.save_for_backward(...)`` (read it back as
    ``self.saved_arrays``) or as plain attributes; both are released after backward.
    ``self.needs_input_grad`` tells backward which input gradients are wanted.
    Call an instance on Tensors or raw arrays: ``MyFunction()(x, w)``. Raw arrays
    are constants. An instance is used for one call.
    """

    def __call__(self, *inputs):
        tensors = [x if isinstance(x, Tensor) else Tensor(x) for x in inputs]
        arrays = [t.data for t in tensors]
        device = backend.device_of(arrays[0]) if arrays else backend.CPU
        with backend.device_context(device):
            outputs = self.forward(*arrays)
        is_tuple = isinstance(outputs, tuple)
        outputs = outputs if is_tuple else (outputs,)
        record = is_grad_enabled() and any(t.requires_grad for t in tensors)
        results = tuple(Tensor(y, requires_grad=record) for y in outputs)
        if record:
            # Leaves stay (their .grad is written); other inputs become OutputRefs, so
            # their arrays are not kept alive by the graph (the module doc says why).
            self.inputs = tuple(t if t.creator is None else OutputRef.to(t) for t in tensors)
            self.needs_input_grad = tuple(t.requires_grad for t in tensors)
            self.output_meta = tuple((y.shape, y.dtype) for y in outputs)
            self.output_ids = tuple(id(r) for r in results)
            self.device = device
            for r in results:
                r.creator = self
        else:
            self.__dict__.clear()  # nothing will call backward: drop saved arrays now
        return results if is_tuple else results[0]

    def save_for_backward(self, *arrays) -> None:
        self.saved_arrays = arrays

    def forward(self, *arrays):
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def backward(self, *grad_outputs):
        raise NotImplementedError(f"{type(self).__name__} must implement backward")

    def release(self) -> None:
        """Drop everything saved for backward; the graph through here is freed."""
        self.__dict__.clear()
        self.freed = True


class OutputRef:
    """What a Function keeps of an input that another function made: which output it was.

    Attributes: ``creator`` (the Function), ``index`` (which of its outputs), ``shape``,
    ``dtype`` and ``name`` of the tensor; ``requires_grad`` is always True (only such
    tensors have a creator). The array itself is not referenced.
    """

    __slots__ = ("creator", "index", "shape", "dtype", "name")
    requires_grad = True
    _grad_hooks = None

    def __init__(self, creator: "Function", index: int, shape: tuple, dtype, name=None):
        self.creator, self.index, self.shape, self.dtype, self.name = creator, index, shape, dtype, name

    @classmethod
    def to(cls, t: Tensor) -> "OutputRef":
        """The reference to the non-leaf tensor ``t``: its creator, and which of its outputs ``t`` is."""
        ids = getattr(t.creator, "output_ids", None)   # None: an earlier backward freed the creator
        index = ids.index(id(t)) if ids is not None else -1  # (backward through it then says so)
        return cls(t.creator, index, t.shape, t.data.dtype, t.name)

    @property
    def key(self) -> tuple:
        """Names the tensor in the graph however many functions consume it."""
        return id(self.creator), self.index


def graph_key(t) -> tuple:
    """One name per tensor of a graph: a leaf by its identity, any other by (creator, output index)."""
    if t.creator is None:
        return ("leaf", id(t))
    return t.key if isinstance(t, OutputRef) else OutputRef.to(t).key


from . import backprop as _backprop  # noqa: E402  (the walk needs Tensor defined first)
from .functional import basic as _ops  # noqa: E402  (operators need Tensor defined first)
from .functional import extrema as _extrema, shape as _shape  # noqa: E402
