"""Containers: ``Sequential`` (modules run in order), ``ModuleList`` and ``ModuleDict``.

Each holds its modules as ordinary children, named "0", "1", ... (or by key), so
``parameters()`` and ``state_dict()`` see them as PyTorch's do ("0.weight",
"blocks.1.conv.weight"). A name that would hide a method of the container ("train",
"forward") is refused: minidl keeps children as attributes.
"""
from __future__ import annotations

from collections import OrderedDict

from .chain import forward_chain
from .module import Module


def _checked(owner: str, index, module) -> Module:
    if not isinstance(module, Module):
        raise TypeError(f"{owner}: item {index!r} is a {type(module).__name__}, not a Module")
    return module


class _IndexedModules(Module):
    """What Sequential and ModuleList share: children "0", "1", ... kept numbered in order."""

    def _items(self) -> list:
        return list(self.named_children())

    def _renumber(self, modules: list) -> None:
        for name in list(self._module_names):
            delattr(self, name)
        for index, module in enumerate(modules):
            setattr(self, str(index), module)

    def _index(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{type(self).__name__}: index {index} is out of range for {len(self)} modules")
        return index % len(self)

    def __getitem__(self, index):
        if isinstance(index, slice):    # a container of the same kind, the modules keep their names
            return type(self)(OrderedDict(self._items()[index]))
        return self._items()[self._index(index)][1]

    def __setitem__(self, index: int, module) -> None:
        setattr(self, self._items()[self._index(index)][0], _checked(type(self).__name__, index, module))

    def __delitem__(self, index) -> None:
        modules = [m for _, m in self._items()]
        del modules[index if isinstance(index, slice) else self._index(index)]
        self._renumber(modules)

    def __len__(self) -> int:
        return len(self._module_names)

    def __iter__(self):
        return self.children()

    def append(self, module: Module):
        """Add ``module`` at the end; returns self."""
        setattr(self, str(len(self)), _checked(type(self).__name__, len(self), module))
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> None:
        """Put ``module`` before position ``index``; the later ones are numbered on."""
        modules = [m for _, m in self._items()]
        modules.insert(index, _checked(type(self).__name__, index, module))
        self._renumber(modules)


class Sequential(_IndexedModules):
    """Modules applied one after the other: ``Sequential(conv, relu, pool)(x)``.

    Children are named "0", "1", ... (so state_dict keys read "0.weight"), or by the
    keys of one ``OrderedDict`` argument, as PyTorch's. They can be indexed (a slice
    gives a Sequential), iterated, counted, appended, inserted and deleted.
    """

    runs_children_in_order = True   # its forward is its children in order (nn.fuse_for_inference reads it)

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(str(name), _checked("Sequential", name, module))
            return
        for index, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(f"Sequential: argument {index} is a {type(module).__name__}, not a Module")
            setattr(self, str(index), module)

    def forward(self, x):
        return forward_chain(self.children(), x)   # in order; a training batch norm + ReLU as one call

    def shape_info(self, shape):
        """The output shape of the children applied in order to per-sample ``shape``; no formula."""
        for module in self.children():
            shape, _ = module.shape_info(shape)
        return tuple(shape), ""


class ModuleList(_IndexedModules):
    """A list of modules whose parameters the owner sees (a plain list would hide them).

    It has no forward: the owner's forward decides how to use them.
    """

    def __init__(self, modules=None):
        super().__init__()
        if isinstance(modules, OrderedDict):    # from a slice of another ModuleList
            for name, module in modules.items():
                self.add_module(name, module)
        elif modules is not None:
            self.extend(modules)


class ModuleDict(Module):
    """Modules by name, in insertion order; the owner's forward picks them (no forward of its own)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str) -> Module:
        if key not in self._module_names:
            raise KeyError(f"ModuleDict: no module {key!r}; it has {list(self._module_names)}")
        return self.__dict__[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, _checked("ModuleDict", key, module))

    def __delitem__(self, key: str) -> None:
        self[key]   # the KeyError above for a missing key
        delattr(self, key)

    def __contains__(self, key) -> bool:
        return key in self._module_names

    def __len__(self) -> int:
        return len(self._module_names)

    def __iter__(self):
        return iter(list(self._module_names))

    def keys(self):
        return list(self._module_names)

    def values(self):
        return [self.__dict__[key] for key in self._module_names]

    def items(self):
        return [(key, self.__dict__[key]) for key in self._module_names]

    def update(self, modules) -> None:
        """Add (or replace) modules from a mapping or from (key, module) pairs."""
        pairs = modules.items() if hasattr(modules, "items") else modules
        for key, module in pairs:
            self[key] = module

    def pop(self, key: str) -> Module:
        module = self[key]
        del self[key]
        return module
