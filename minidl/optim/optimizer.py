"""The base of every optimizer: parameter groups, per-parameter state, and PyTorch's state_dict.

An optimizer holds its parameters in ``param_groups``: a list of dicts, each with its
own ``"params"`` and its own hyper-parameters (``"lr"``, ``"momentum"``, ...), so one
model can train its layers at different rates, or exempt biases from weight decay:

    SGD([{"params": model.conv1.parameters(), "lr": 0.01},
         {"params": model.fc8.parameters()}], lr=0.1, momentum=0.9)

A group that leaves a hyper-parameter out takes the constructor's value (PyTorch's
rule). ``state`` maps a parameter to what the optimizer keeps for it between steps
(SGD: its momentum buffer). ``state_dict()`` has PyTorch's layout: ``{"state": {index:
{name: array}}, "param_groups": [{hyper-parameters..., "params": [indices]}]}``, the
indices numbering the parameters in group order, with host NumPy arrays, so
checkpoints store it without pickle. Counts in the state (Adam's ``step``) are Python
floats; PyTorch keeps them as 0-d float tensors, and such a 0-d array loads as its float.
"""
from __future__ import annotations

import functools
import numbers

import numpy as np

from .. import backend
from ..autograd import Tensor, enable_grad


def check_number(where: str, value, low: float = 0.0, low_inclusive: bool = True) -> float:
    """``value`` as a float, or a ValueError naming ``where`` unless it is a number >= (or >) ``low``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        ok = value >= low if low_inclusive else value > low
    if not ok:
        bound = ">=" if low_inclusive else ">"
        raise ValueError(f"{where} must be a number {bound} {low}, got {value!r}")
    return float(value)


def check_switches(where: str, **switches) -> None:
    """Refuse PyTorch's implementation switches (foreach, fused, capturable, differentiable) when turned on.

    PyTorch picks among several implementations of one update with them; minidl has one
    update per optimizer (and its fast paths are chosen by ``minidl.kernels.dispatch``),
    so only the values that ask for nothing special are accepted: None or False.

    Raises:
        ValueError naming the switch and the value that came.
    """
    for name, value in switches.items():
        if value is not None and value is not False:
            raise ValueError(f"{where}: minidl has no {name!r} implementation switch (one update, fast paths "
                             f"chosen by minidl.kernels.dispatch); leave {name} out or pass None/False, got {value!r}")


def takes_closure(step):
    """Give an optimizer's ``step(self)`` PyTorch's ``step(closure=None)``.

    The closure (zero the gradients, compute the loss, ``backward``, return the loss)
    runs first, with gradients enabled; the step then uses the gradients it left, and
    its loss comes back.
    """
    @functools.wraps(step)
    def step_with_closure(self, closure=None):
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        step(self)
        return loss
    return step_with_closure


# What PyTorch's optimizers keep in a parameter group and minidl's do not: its implementation
# switches (see check_switches) and the schedulers' starting rate. A state_dict from PyTorch
# loads with them dropped, as long as the switches ask for nothing special.
_TORCH_ONLY_SETTINGS = ("foreach", "fused", "capturable", "differentiable", "initial_lr", "decoupled_weight_decay")


def _host(value):
    """A PyTorch tensor (in a state_dict that PyTorch made) as a NumPy array; anything else as it is."""
    if not backend.is_array(value) and hasattr(value, "detach") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy()
    return value


def _param_list(where: str, params) -> list:
    """``params`` as a list of leaf Tensors: PyTorch's rules, and (name, tensor) pairs from named_parameters()."""
    if isinstance(params, Tensor):
        raise TypeError(f"{where}: params must be an iterable of Parameters (or of parameter groups), "
                        f"got one tensor of shape {params.shape}; wrap it in a list")
    items = list(params)
    items = [item[1] if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) else item
             for item in items]
    for index, p in enumerate(items):
        if not isinstance(p, Tensor):
            raise TypeError(f"{where}: parameter {index} is a {type(p).__name__}, not a Parameter (Tensor)")
        if p.creator is not None:
            raise ValueError(f"{where}: parameter {index} is not a leaf (it was computed from others), "
                             "so no gradient accumulates in it")
    return items


def _copy_to(array, param):
    """A fresh copy of ``array`` on ``param``'s device, in its dtype (made there: CuPy allocates on the current GPU)."""
    device = param.device
    with backend.device_context(device):
        return backend.to_device(array if backend.is_array(array) else np.asarray(array), device).astype(
            param.dtype, copy=True)


class Optimizer:
    """Base class: subclasses give ``defaults`` and implement ``step()`` (and may check a group).

    Args:
        params: an iterable of Parameters (or of ``named_parameters()``'s pairs), or of
            dicts ``{"params": [...], "lr": ..., ...}`` (parameter groups). Their order
            fixes the indices of ``state_dict()``.
        defaults: every hyper-parameter with its value for groups that do not set it.
    Raises:
        ValueError for no parameters, a parameter in two groups, or a bad hyper-parameter.
    """

    _count_keys: tuple = ()   # per-parameter state entries that are numbers, not arrays (Adam: "step")

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.state: dict = {}            # parameter -> its state between steps
        self.param_groups: list = []
        if isinstance(params, Tensor):
            params = _param_list(type(self).__name__, params)   # raises: one tensor is not a list
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        for group in params if isinstance(params[0], dict) else [{"params": params}]:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        """Append a group: its parameters, and the defaults for every hyper-parameter it leaves out."""
        name = type(self).__name__
        if not isinstance(group, dict) or "params" not in group:
            raise ValueError(f"{name}: a parameter group is a dict with a 'params' entry, got {group!r}")
        params = group["params"]
        params = _param_list(name, [params] if isinstance(params, Tensor) else params)
        if not params:
            raise ValueError(f"{name}: parameter group {len(self.param_groups)} has no parameters")
        unknown = sorted(set(group) - set(self.defaults) - {"params"})
        if unknown:
            raise ValueError(f"{name}: parameter group {len(self.param_groups)} has unknown settings {unknown}; "
                             f"{name} takes {sorted(self.defaults)}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError(f"{name}: a parameter appears in more than one group (or twice in one)")
        full = {**self.defaults, **group, "params": params}
        self._check_group(full)
        self.param_groups.append(full)

    def _check_group(self, group: dict) -> None:
        """Raise ValueError for a bad hyper-parameter of ``group`` (subclasses check theirs)."""

    @property
    def lr(self) -> float:
        """The first group's learning rate (minidl's shortcut; setting it sets every group's)."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value) -> None:
        for group in self.param_groups:
            group["lr"] = value

    def parameters(self) -> list:
        """Every parameter, in group order: the order of ``state_dict()``'s indices."""
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget all gradients: ``.grad = None`` (the next backward starts fresh), or zeros."""
        for p in self.parameters():
            p.zero_grad(set_to_none)

    def step(self, closure=None):
        raise NotImplementedError(f"{type(self).__name__} must implement step")

    def _with_grads(self) -> list:
        """(parameter, its group) for every parameter that has a gradient, in group order.

        Raises:
            ValueError when a gradient's shape is not its parameter's.
        """
        todo = [(p, group) for group in self.param_groups for p in group["params"] if p.grad is not None]
        for p, _ in todo:
            if p.grad.shape != p.shape:
                raise ValueError(f"{type(self).__name__}.step: a parameter of shape {p.shape} has a gradient of "
                                 f"shape {p.grad.shape}")
        return todo

    def _update_each(self, todo, *extra) -> None:
        """The reference update: ``self._update(p, group, ..., *extra)`` for each item of ``todo``
        (tuples that start with the parameter), with the parameter's GPU current."""
        for item in todo:
            with backend.device_context(item[0].device):
                self._update(*item, *extra)

    def state_dict(self) -> dict:
        """``{"state": {index: {name: array}}, "param_groups": [...]}`` with host NumPy copies."""
        index = {id(p): i for i, p in enumerate(self.parameters())}
        state = {index[id(p)]: {k: np.array(backend.to_numpy(v), copy=True) if backend.is_array(v) else v
                                for k, v in s.items()}
                 for p, s in self.state.items() if id(p) in index}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [index[id(p)] for p in g["params"]]}
                  for g in self.param_groups]
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore ``state_dict()``'s contents; arrays go to each parameter's device and dtype.

        Raises:
            ValueError when the groups or the state's shapes do not match these parameters.
        """
        name = type(self).__name__
        groups = state_dict.get("param_groups")
        if groups is None or len(groups) != len(self.param_groups):
            got = "none" if groups is None else len(groups)
            raise ValueError(f"{name}.load_state_dict: expected {len(self.param_groups)} parameter group(s), got {got}")
        for i, (saved, group) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{name}.load_state_dict: group {i} holds {len(group['params'])} parameters, "
                                 f"the saved one {len(saved['params'])}")
        params = self.parameters()
        restored = {}
        for i, entries in state_dict.get("state", {}).items():
            i = int(i)
            if not 0 <= i < len(params):
                raise ValueError(f"{name}.load_state_dict: state for parameter {i}, but there are {len(params)}")
            p = params[i]
            entries = {k: _host(v) for k, v in entries.items()}
            # a count given as a 0-d array or NumPy scalar (PyTorch's step tensor): its Python float
            entries = {k: float(v) if k in self._count_keys and not isinstance(v, numbers.Real) else v
                       for k, v in entries.items()}
            for key, value in entries.items():
                if backend.is_array(value) and tuple(np.shape(value)) != p.shape:
                    raise ValueError(f"{name}.load_state_dict: {key} of parameter {i} has shape "
                                     f"{tuple(np.shape(value))}, the parameter {p.shape}")
            restored[p] = {k: _copy_to(v, p) if backend.is_array(v) else v for k, v in entries.items()}
        for saved, group in zip(groups, self.param_groups):
            switches = {k: v for k, v in saved.items()
                        if k in _TORCH_ONLY_SETTINGS and k not in ("initial_lr", "decoupled_weight_decay")}
            check_switches(f"{name}.load_state_dict", **switches)
            if bool(saved.get("decoupled_weight_decay", False)) != (name == "AdamW") and \
                    "decoupled_weight_decay" in saved:
                raise ValueError(f"{name}.load_state_dict: the saved groups have decoupled_weight_decay="
                                 f"{saved['decoupled_weight_decay']!r}: that is AdamW's rule, and this is {name}")
            settings = {k: v for k, v in saved.items() if k != "params" and k not in _TORCH_ONLY_SETTINGS}
            unknown = sorted(set(settings) - set(self.defaults))
            if unknown:
                raise ValueError(f"{name}.load_state_dict: the saved groups have settings {name} does not know: "
                                 f"{unknown}")
            self._check_group({**group, **settings})
            group.update(settings)
        self.state = restored
