"""``Module`` (a layer or a model) and ``Parameter`` (a trainable tensor); containers.py: ``Sequential``.

A module owns three kinds of state, each kept in registration order so that
``parameters()``, ``state_dict()`` and therefore optimizer state and checkpoints
are deterministic:

* parameters: ``Parameter`` tensors, found by the optimizer and updated by it;
* buffers: raw arrays that are part of the model's state but not trained
  (BatchNorm's running statistics), registered with ``register_buffer``;
* children: sub-modules, whose names prefix their state with a dot, PyTorch
  style ("conv1.weight", "bn1.running_mean").

All three live as ordinary attributes (``self.weight``), so reading a layer reads
like the maths; the module only remembers which names belong to which kind.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from .. import backend
from ..autograd import Tensor
from .hooks import ForwardHooks, call_with_hooks, has_forward_hooks


class Parameter(Tensor):
    """A leaf tensor that a module trains: ``requires_grad`` is True by default.

    Args:
        data: an array (NumPy or CuPy), a nested list or a Tensor (its data is used).
        requires_grad: set False to freeze it.
    """

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter" + super().__repr__()[len("Tensor"):]


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module(ForwardHooks):
    """Base class of every layer and model.

    Subclasses call ``super().__init__()`` first, assign parameters, buffers (via
    ``register_buffer``) and sub-modules as attributes, and implement ``forward``.
    Calling the module calls ``forward`` (with the forward hooks of ``hooks.py``
    around it, where any are registered). ``training`` (set by ``train()`` and
    ``eval()`` for the whole tree) tells layers such as Dropout and BatchNorm which
    behaviour to use.
    """

    # State that PyTorch's twin of a layer keeps and minidl's does not need: accepted
    # and skipped by ``load_state_dict`` (BatchNorm: PyTorch's ``num_batches_tracked``).
    _foreign_state = ()

    def __init__(self):
        # Set through object.__setattr__: our own __setattr__ needs these to exist.
        object.__setattr__(self, "_param_names", [])
        object.__setattr__(self, "_buffer_names", [])
        object.__setattr__(self, "_module_names", [])
        object.__setattr__(self, "training", True)

    # ---- registration ------------------------------------------------------
    def __setattr__(self, name, value):
        if "_param_names" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        if isinstance(value, Parameter):
            self._register(name, self._param_names)
        elif isinstance(value, Module):
            self._register(name, self._module_names)
        elif name in self._param_names and value is not None:
            raise TypeError(f"{type(self).__name__}.{name} is a parameter; assign a Parameter or None, "
                            f"got {type(value).__name__}")
        elif name in self._module_names and value is not None:
            raise TypeError(f"{type(self).__name__}.{name} is a sub-module; assign a Module or None, "
                            f"got {type(value).__name__}")
        elif name in self._buffer_names and value is not None and not backend.is_array(value):
            raise TypeError(f"{type(self).__name__}.{name} is a buffer; assign an array or None, "
                            f"got {type(value).__name__}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._forget(name)
        object.__delattr__(self, name)

    def _forget(self, name):
        for names in (self._param_names, self._buffer_names, self._module_names):
            if name in names:
                names.remove(name)

    def _register(self, name, names) -> None:
        """Put ``name`` in ``names``; a name already there keeps its place (as in PyTorch).

        Replacing a layer (``model.bn1 = SyncBatchNorm(...)``) must not move its
        parameters in ``parameters()``: optimizer state and checkpoints follow that order.
        """
        if name not in names:
            self._forget(name)
            names.append(name)

    def register_buffer(self, name: str, array, persistent: bool = True) -> None:
        """Register a raw array (or None) as part of the state but not a parameter.

        Buffers are moved by ``to`` and never trained; ``state_dict`` saves them unless
        ``persistent=False`` (a cache that can be rebuilt). A Tensor is taken as its
        array (PyTorch's buffers are tensors; minidl's are arrays).
        """
        if isinstance(array, Tensor):
            array = array.data
        if array is not None and not backend.is_array(array):
            raise TypeError(f"{type(self).__name__}.register_buffer: {name!r} must be a NumPy/CuPy array "
                            f"or None, got {type(array).__name__}")
        self._register(name, self._buffer_names)
        if not persistent:
            self.__dict__.setdefault("_transient_buffers", set()).add(name)
        else:
            self.__dict__.get("_transient_buffers", set()).discard(name)
        object.__setattr__(self, name, array)

    def add_module(self, name: str, module) -> None:
        """Register ``module`` (or None) as the child ``name``: ``setattr`` for names made at run time."""
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"{type(self).__name__}.add_module: a name is a non-empty string without dots, "
                           f"got {name!r}")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}.add_module: {name!r} must be a Module or None, "
                            f"got {type(module).__name__}")
        if hasattr(type(self), name) or (name in self.__dict__ and name not in self._module_names):
            raise KeyError(f"{type(self).__name__}.add_module: {name!r} is already an attribute")
        self._register(name, self._module_names)
        object.__setattr__(self, name, module)

    register_module = add_module

    def get_submodule(self, target: str) -> "Module":
        """The descendant named by the dotted path ``target`` ("" is this module), as PyTorch."""
        module = self
        for part in target.split(".") if target else ():
            if part not in module._module_names or module.__dict__[part] is None:
                raise AttributeError(f"{type(self).__name__}.get_submodule: no module {target!r} "
                                     f"({type(module).__name__} has no child {part!r})")
            module = module.__dict__[part]
        return module

    # ---- traversal ---------------------------------------------------------
    def named_children(self):
        """Yield (name, module) for the direct sub-modules, in registration order."""
        for name in self._module_names:
            module = self.__dict__[name]
            if module is not None:
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix: str = ""):
        """Yield (dotted name, module) for this module and every descendant, pre-order.

        This module itself comes first with the name ``prefix`` ("" by default).
        Iterative, so very deep models cannot hit the recursion limit.
        """
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{child_name}" if name else child_name, child)
                        for child_name, child in module.named_children()]
            stack.extend(reversed(children))  # reversed: pop() then yields them in order

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        """Yield (dotted name, Parameter): each module's own parameters, modules pre-order.

        The order is PyTorch's and fixed by the model's code, so an optimizer's
        per-parameter state lines up across runs. A parameter shared by two
        modules is yielded once. ``prefix`` starts every name; ``recurse=False``
        gives this module's own parameters only.
        """
        seen = set()
        for module_name, module in (self.named_modules(prefix) if recurse else [(prefix, self)]):
            for name in module._param_names:
                param = module.__dict__[name]
                if param is None or id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self, recurse: bool = True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        """Yield (dotted name, array) for every buffer, in the same order as parameters."""
        for module_name, module in (self.named_modules(prefix) if recurse else [(prefix, self)]):
            for name in module._buffer_names:
                array = module.__dict__[name]
                if array is not None:
                    yield (f"{module_name}.{name}" if module_name else name), array

    def buffers(self, recurse: bool = True):
        for _, array in self.named_buffers(recurse=recurse):
            yield array

    def apply(self, fn) -> "Module":
        """Call ``fn(module)`` on each child's tree in order, then on this module (PyTorch's order); returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ---- modes, gradients, devices ------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Set ``training`` on this module and every descendant; returns self."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        """Evaluation mode (Dropout off, BatchNorm uses running statistics); returns self."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget every parameter's gradient: ``.grad`` None, or zeros in place (``set_to_none=False``)."""
        for param in self.parameters():
            param.zero_grad(set_to_none)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        """Freeze (False) or unfreeze every parameter; returns self."""
        for param in self.parameters():
            param.requires_grad = bool(requires_grad)
        return self

    def to(self, device=None, dtype=None) -> "Module":
        """Move parameters, their gradients and buffers to ``device`` and/or cast floats to ``dtype``.

        The Parameter objects stay the same (only their ``.data`` is replaced), so an
        optimizer built before ``to`` keeps working. Returns self.

        Args:
            device: "cpu", "cuda" or "cuda:N"; None keeps each array where it is.
            dtype: e.g. np.float64 for gradient checks; None keeps dtypes.
        """
        if device is not None and not isinstance(device, (str, backend.Device)):
            dtype, device = np.dtype(device), None          # to(np.float64): PyTorch's to(dtype)
        device = backend.parse_device(device) if device is not None else None

        def convert(array):
            if device is not None:
                array = backend.to_device(array, device)
            if dtype is not None and array.dtype.kind == "f":
                array = array.astype(dtype, copy=False)
            return array

        for param in self.parameters():
            param.data = convert(param.data)
            if param.grad is not None:
                param.grad.data = convert(param.grad.data)
        for module in self.modules():
            for name in module._buffer_names:
                array = module.__dict__[name]
                if array is not None:
                    object.__setattr__(module, name, convert(array))
        return self

    def cpu(self) -> "Module":
        return self.to("cpu")

    def float(self) -> "Module":
        return self.to(dtype=np.float32)

    def double(self) -> "Module":
        return self.to(dtype=np.float64)

    # ---- state ---------------------------------------------------------------
    def _state_items(self):
        """(dotted name, owner module, attribute name, array) for every saved value, in order.

        Per module: its parameters, then its buffers; modules pre-order (PyTorch's order).
        """
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            for name in module._param_names:
                param = module.__dict__[name]
                if param is not None:
                    yield prefix + name, module, name, param.data
            transient = module.__dict__.get("_transient_buffers", ())
            for name in module._buffer_names:
                array = module.__dict__[name]
                if array is not None and name not in transient:
                    yield prefix + name, module, name, array

    def state_dict(self, prefix: str = "") -> "OrderedDict[str, np.ndarray]":
        """An ordered dict: ``prefix`` + dotted name -> host NumPy copy of every parameter and buffer.

        Copies, on purpose (PyTorch's values share the model's memory): a saved state
        cannot change when training goes on.
        """
        return OrderedDict((prefix + key, np.array(backend.to_numpy(array), copy=True))
                           for key, _, _, array in self._state_items())

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy values from ``state_dict`` into this model's parameters and buffers.

        Values (NumPy/CuPy arrays or Tensors) are copied into the existing arrays, on
        their current device and in their current dtype; Parameter objects stay the
        same. Nothing is changed unless every check passes. Keys for state a layer's
        PyTorch twin keeps and minidl's does not (``bn1.num_batches_tracked``, PyTorch's
        batch-norm step counter) are accepted and skipped, so a torchvision state_dict
        loads strictly as it is.

        Args:
            state_dict: a mapping name -> array, e.g. from ``state_dict()``.
            strict: if True, missing and unexpected keys are errors; if False they are
                skipped and reported in the result.

        Returns:
            IncompatibleKeys(missing_keys, unexpected_keys).

        Raises:
            ValueError: naming the missing keys, the unexpected keys (strict only) and
                every shape mismatch with both shapes.
        """
        items = {key: (module, name, array) for key, module, name, array in self._state_items()}
        foreign = self._foreign_keys(state_dict, items)
        values = {key: (value.data if isinstance(value, Tensor) else value) for key, value in state_dict.items()
                  if key not in foreign}
        missing = [key for key in items if key not in values]
        unexpected = [key for key in values if key not in items]
        mismatched = [f"{key}: checkpoint {tuple(np.shape(values[key]))} vs model {tuple(items[key][2].shape)}"
                      for key in items if key in values and tuple(np.shape(values[key])) != tuple(items[key][2].shape)]
        problems = []
        if strict and missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {', '.join(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches: {'; '.join(mismatched)}")
        if problems:
            raise ValueError(f"{type(self).__name__}.load_state_dict: " + ". ".join(problems))
        for key, (module, name, target) in items.items():
            if key not in values:
                continue
            source = values[key]
            if not backend.is_array(source):
                source = np.asarray(source)
            device = backend.device_of(target)
            source = backend.to_device(source, device)
            with backend.device_context(device):  # the cast and the copy run on target's GPU
                target[...] = source.astype(target.dtype, copy=False)  # in place: same array
        return IncompatibleKeys(missing, unexpected)

    def _foreign_keys(self, state_dict, items) -> set:
        """The keys of ``state_dict`` that name a module's ``_foreign_state`` (and nothing of ours)."""
        modules = dict(self.named_modules())
        foreign = set()
        for key in state_dict:
            owner, _, attribute = key.rpartition(".")
            if key not in items and attribute in getattr(modules.get(owner), "_foreign_state", ()):
                foreign.add(key)
        return foreign

    # ---- calling and printing -------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def __call__(self, *args, **kwargs):
        if has_forward_hooks(self):
            return call_with_hooks(self, args, kwargs)
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        """The text inside this module's parentheses when printed; layers override it."""
        return ""

    def __repr__(self) -> str:
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in children:
            child_text = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_text}")
        lines.append(")")
        return "\n".join(lines)
