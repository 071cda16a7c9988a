"""Adadelta, with PyTorch's update rule (torch.optim's single-tensor step, step for step).

Zeiler (2012): a per-weight step size from two running means, so that the update has
the units of the weights and needs no tuned rate (PyTorch's lr, default 1, only scales
it). For every parameter p with gradient g, in its group's settings:

    g = -g                                          with maximize
    g = g + weight_decay * p                        the L2 penalty folded into the gradient
    v = rho * v + (1 - rho) * g * g                 running mean of the squared gradient
    delta = sqrt(u + eps) / sqrt(v + eps) * g       u: running mean of the squared updates
    u = rho * u + (1 - rho) * delta * delta
    p = p - lr * delta

The state has PyTorch's keys (``step``, ``square_avg`` for v, ``acc_delta`` for u). The
update is in place on ``p.data``; ``p.grad`` is never changed.
"""
from __future__ import annotations

from .. import backend
from .optimizer import Optimizer, check_number, check_switches, takes_closure


class Adadelta(Optimizer):
    """Adadelta with PyTorch's signature, defaults and rule (see the module doc).

    Args:
        params: Parameters or parameter groups (dicts).
        lr: scales the update (1.0, as the paper: no rate to tune), >= 0.
        rho: decay of both running means, in [0, 1].
        eps: keeps both square roots away from 0, >= 0.
        weight_decay: L2 penalty factor, >= 0.
        foreach, capturable, differentiable: PyTorch's implementation switches (None/False only).
        maximize: ascend the objective instead.
    """

    _count_keys = ("step",)

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *, capturable=False,
                 maximize=False, differentiable=False):
        check_switches("Adadelta", foreach=foreach, capturable=capturable, differentiable=differentiable)
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize))

    def _check_group(self, group: dict) -> None:
        for key in ("lr", "eps", "weight_decay"):
            group[key] = check_number(f"Adadelta: {key}", group[key])
        group["rho"] = check_number("Adadelta: rho", group["rho"])
        if group["rho"] > 1.0:
            raise ValueError(f"Adadelta: rho must be in [0, 1], got {group['rho']}")
        group["maximize"] = bool(group["maximize"])

    @takes_closure
    def step(self):
        """Update every parameter that has a gradient, in place."""
        self._update_each(self._with_grads())

    def _update(self, p, group: dict) -> None:
        w, g = p.data, p.grad.data
        xp = backend.get_array_module(w)
        rho, eps = group["rho"], group["eps"]
        state = self.state.setdefault(p, {})
        if not state:
            state.update(step=0.0, square_avg=xp.zeros_like(w), acc_delta=xp.zeros_like(w))
        state["step"] += 1
        if group["maximize"]:
            g = -g
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * w
        v, u = state["square_avg"], state["acc_delta"]
        v *= rho
        v += (1 - rho) * g * g
        delta = xp.sqrt(u + eps) / xp.sqrt(v + eps) * g
        u *= rho
        u += (1 - rho) * delta * delta
        w -= group["lr"] * delta
