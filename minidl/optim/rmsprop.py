"""RMSprop, with PyTorch's update rule (torch.optim's single-tensor step, step for step).

For every parameter p with gradient g, in its group's settings:

    g = -g                                    with maximize
    g = g + weight_decay * p                  the L2 penalty folded into the gradient
    v = alpha * v + (1 - alpha) * g * g       running mean of the squared gradient
    a = a + (1 - alpha) * (g - a)             centered: running mean of the gradient (torch's lerp),
    avg = sqrt(v - a * a) + eps               so v - a^2 estimates the variance; else
    avg = sqrt(v) + eps
    buf = momentum * buf + g / avg            with momentum > 0, then p = p - lr * buf;
    p = p - lr * g / avg                      without

Unlike Adam there is no bias correction, and eps is added after the square root
(PyTorch's place; Hinton's lecture and Keras put it inside). PyTorch counts steps in the
state (``step``) without using them outside its CUDA-graph variant; minidl keeps the
count too, so the state has PyTorch's keys.

The update is in place on ``p.data``; ``p.grad`` is never changed.
"""
from __future__ import annotations

from .. import backend
from .optimizer import Optimizer, check_number, check_switches, takes_closure


class RMSprop(Optimizer):
    """RMSprop (Hinton, 2012) with PyTorch's signature, defaults and rule (see the module doc).

    Args:
        params: Parameters (e.g. ``model.parameters()``) or parameter groups (dicts).
        lr: learning rate, >= 0 (a schedule may change each group's ``"lr"`` between steps).
        alpha: smoothing constant of the running means, >= 0.
        eps: added to the denominator, >= 0.
        weight_decay: L2 penalty factor, >= 0.
        momentum: momentum factor, >= 0.
        centered: divide by an estimate of the gradient's variance instead of its second moment.
        capturable, foreach, differentiable: PyTorch's implementation switches; minidl has
            one update, so only None/False are accepted. (In PyTorch's signature they are
            positional, between ``centered`` and ``maximize``; so they are here.)
        maximize: ascend the objective instead.
    Raises:
        ValueError for a bad hyper-parameter or an implementation switch turned on.
    """

    _count_keys = ("step",)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        check_switches("RMSprop", capturable=capturable, foreach=foreach, differentiable=differentiable)
        super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                                      weight_decay=weight_decay, maximize=maximize))

    def _check_group(self, group: dict) -> None:
        for key in ("lr", "momentum", "alpha", "eps", "weight_decay"):
            group[key] = check_number(f"RMSprop: {key}", group[key])
        group["centered"], group["maximize"] = bool(group["centered"]), bool(group["maximize"])

    @takes_closure
    def step(self):
        """Update every parameter that has a gradient, in place."""
        self._update_each(self._with_grads())

    def _update(self, p, group: dict) -> None:
        """The rule of the module doc on one parameter (the reference)."""
        w, g = p.data, p.grad.data
        xp = backend.get_array_module(w)
        lr, alpha, eps, momentum = group["lr"], group["alpha"], group["eps"], group["momentum"]
        state = self.state.setdefault(p, {})
        if not state:
            state.update(step=0.0, square_avg=xp.zeros_like(w))
        if momentum > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = xp.zeros_like(w)
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = xp.zeros_like(w)
        if group["maximize"]:
            g = -g
        state["step"] += 1
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * w
        v = state["square_avg"]
        v *= alpha
        v += (1 - alpha) * g * g
        if group["centered"]:
            a = state["grad_avg"]
            a += (1 - alpha) * (g - a)
            avg = xp.sqrt(v - a * a) + eps
        else:
            avg = xp.sqrt(v) + eps
        if momentum > 0:
            buf = state["momentum_buffer"]
            buf *= momentum
            buf += g / avg
            w -= lr * buf
        else:
            w -= lr * g / avg
