"""Stochastic gradient descent, with PyTorch's update rule.

For every parameter p with gradient g, in its group's settings:

    g = g * min(1, max_grad_norm / ||G||)     only with max_grad_norm (minidl's): ||G|| is the
                                              L2 norm of all gradients together, as
                                              torch.nn.utils.clip_grad_norm_ computes it
    g = -g                                    with maximize
    g = g + weight_decay * p                  the L2 penalty folded into the gradient
    buf = g                                   on the first step, then
    buf = momentum * buf + (1 - dampening) * g
    g = g + momentum * buf                    with nesterov, else g = buf (only when momentum > 0)
    p = p - lr * g

The update is in place on ``p.data``; ``p.grad`` is never changed. This module is the
reference; ``step`` asks ``minidl.kernels.dispatch`` for a fast path first (on the CPU,
every parameter in cache-sized chunks, all of them in one region of the worker
threads), which does the same arithmetic in the same order.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..kernels import dispatch
from .optimizer import Optimizer, check_number, takes_closure


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum and weight decay; PyTorch's rule (see the module doc).

    Args:
        params: Parameters (e.g. ``model.parameters()``) or parameter groups (dicts).
        lr: learning rate (a schedule may change each group's ``"lr"`` between steps).
        momentum: momentum factor, >= 0.
        dampening: scales the new gradient in the momentum buffer by 1 - dampening.
        weight_decay: L2 penalty factor, >= 0.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).
        maximize: ascend the objective instead.
        max_grad_norm: minidl's (PyTorch calls ``clip_grad_norm_`` before the step): the
            gradients of all groups are scaled down together whenever their joint L2
            norm exceeds it; the gradients in ``.grad`` are left as they are.
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False, max_grad_norm=None):
        self.max_grad_norm = None if max_grad_norm is None else check_number(
            "SGD: max_grad_norm", max_grad_norm, low_inclusive=False)
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def _check_group(self, group: dict) -> None:
        for key in ("lr", "momentum", "dampening", "weight_decay"):
            group[key] = check_number(f"SGD: {key}", group[key])
        group["nesterov"], group["maximize"] = bool(group["nesterov"]), bool(group["maximize"])
        if group["nesterov"] and (group["momentum"] == 0 or group["dampening"] != 0):
            raise ValueError("SGD: nesterov=True needs momentum > 0 and dampening 0")

    def _clip_factor(self, grads):
        """None, or the factor min(1, max_grad_norm / ||G||) every gradient of this step is scaled by.

        On a GPU the factor stays a device scalar: deciding on the host whether to clip
        would wait for the GPU every step.
        """
        if self.max_grad_norm is None or not grads:
            return None
        xp = backend.get_array_module(grads[0])
        if xp is np:
            squares = sum(float(np.vdot(g.reshape(-1), g.reshape(-1))) for g in grads)
            factor = self.max_grad_norm / (math.sqrt(squares) + 1e-6)  # 1e-6: PyTorch's
            return None if factor >= 1.0 else factor  # below the limit: nothing to scale
        with backend.device_context(backend.device_of(grads[0])):
            squares = sum(xp.vdot(g.reshape(-1), g.reshape(-1)) for g in grads)
            return xp.minimum(1.0, self.max_grad_norm / (xp.sqrt(squares) + 1e-6)).astype(grads[0].dtype)

    @takes_closure
    def step(self):
        """Update every parameter that has a gradient, in place."""
        todo = self._with_grads()
        factor = self._clip_factor([p.grad.data for p, _ in todo])
        buffers = [self.state[p]["momentum_buffer"] for p, _ in todo if "momentum_buffer" in self.state.get(p, {})]
        fast = dispatch.sgd_step([p.data for p, _ in todo] + buffers, [p.grad.data for p, _ in todo])
        if fast is None:
            self._update_each(todo, factor)
            return
        updates = []
        for p, group in todo:
            buf, first = None, False
            if group["momentum"] != 0:
                state = self.state.setdefault(p, {})
                first = "momentum_buffer" not in state
                if first:
                    state["momentum_buffer"] = np.empty_like(p.data)
                buf = state["momentum_buffer"]
            hyper = tuple(group[k] for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"))
            updates.append((p.data, p.grad.data, buf, first, hyper))
        fast.step(updates, factor)

    def _update(self, p, group: dict, factor) -> None:
        """The rule of the module doc on one parameter (the reference)."""
        w, g = p.data, p.grad.data
        if factor is not None:
            g = g * factor
        if group["maximize"]:
            g = -g
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * w
        momentum = group["momentum"]
        if momentum != 0:
            state = self.state.setdefault(p, {})
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= momentum
                buf += g if group["dampening"] == 0 else (1 - group["dampening"]) * g
            g = g + momentum * buf if group["nesterov"] else buf
        w -= group["lr"] * g

    def state_dict(self) -> dict:
        """The base's ``state_dict`` plus ``max_grad_norm``."""
        return {**super().state_dict(), "max_grad_norm": self.max_grad_norm}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore ``state_dict()``; checkpoints of minidl's earlier SGD (one group) load too."""
        if "momentum_buffers" in state_dict:
            state_dict = _from_single_group_format(state_dict)
        clip = state_dict.get("max_grad_norm")
        super().load_state_dict(state_dict)
        self.max_grad_norm = None if clip is None else check_number("SGD: max_grad_norm", clip, low_inclusive=False)


def _from_single_group_format(old: dict) -> dict:
    """minidl's earlier SGD state (lr, momentum, ..., momentum_buffers in parameter order) as PyTorch's layout."""
    buffers = old["momentum_buffers"]
    group = {"lr": old["lr"], "momentum": old["momentum"], "dampening": 0.0, "weight_decay": old["weight_decay"],
             "nesterov": old["nesterov"], "maximize": False, "params": list(range(len(buffers)))}
    return {"state": {i: {"momentum_buffer": b} for i, b in enumerate(buffers) if b is not None},
            "param_groups": [group], "max_grad_norm": old.get("max_grad_norm")}
