"""Adam and AdamW, with PyTorch's update rule (torch.optim's single-tensor step, step for step).

For every parameter p with gradient g, in its group's settings, on step t = 1, 2, ...:

    g = -g                                    with maximize
    p = p * (1 - lr * weight_decay)           AdamW (decoupled decay): the weights shrink
                                              themselves, before the moments see g; or
    g = g + weight_decay * p                  Adam: the L2 penalty folded into the gradient
    m = m + (1 - beta1) * (g - m)             first moment: beta1 * m + (1 - beta1) * g (torch's lerp)
    v = beta2 * v + (1 - beta2) * g * g       second moment
    v_max = max(v_max, v); v = v_max          with amsgrad: never let the step grow back
    p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

The two fractions are the bias corrections of moments that start at zero; eps is added
after the second moment is corrected (where PyTorch adds it). Each parameter counts its
own steps (``state[p]["step"]``, a Python float, as PyTorch's float step tensor), so a
parameter that first gets a gradient late starts its corrections at t = 1.

The update is in place on ``p.data``; ``p.grad`` is never changed. This module is the
reference; ``step`` asks ``minidl.kernels.dispatch`` for a fast path first, which does
the same arithmetic in the same order. ``AdamW`` is ``Adam``
with ``decoupled_weight_decay=True`` (PyTorch's relation: the same class of update, and
weight decay 1e-2 by default).
"""
from __future__ import annotations

import numbers

from .. import backend
from ..kernels import dispatch
from .optimizer import Optimizer, check_number, check_switches, takes_closure


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with PyTorch's signature, defaults and rule (see the module doc).

    Args:
        params: Parameters (e.g. ``model.parameters()``) or parameter groups (dicts).
        lr: learning rate, >= 0 (a schedule may change each group's ``"lr"`` between steps).
        betas: (beta1, beta2), the decay rates of the two moments, each in [0, 1).
        eps: added to the denominator, >= 0.
        weight_decay: >= 0; an L2 penalty in the gradient, or with
            ``decoupled_weight_decay`` a shrinking of the weights (AdamW).
        amsgrad: AMSGrad (Reddi et al., 2018): divide by the largest second moment so far.
        foreach, capturable, differentiable, fused: PyTorch's implementation switches;
            minidl has one update, so only None/False are accepted.
        maximize: ascend the objective instead.
        decoupled_weight_decay: AdamW's decay (Loshchilov & Hutter, 2019).
    Raises:
        ValueError for a bad hyper-parameter or an implementation switch turned on.
    """

    _count_keys = ("step",)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False):
        check_switches(type(self).__name__, foreach=foreach, capturable=capturable, differentiable=differentiable,
                       fused=fused)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, decoupled_weight_decay=decoupled_weight_decay))

    def _check_group(self, group: dict) -> None:
        name = type(self).__name__
        for key in ("lr", "eps", "weight_decay"):
            group[key] = check_number(f"{name}: {key}", group[key])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        for i, beta in enumerate(betas):
            if not isinstance(beta, numbers.Real) or isinstance(beta, bool) or not 0.0 <= beta < 1.0:
                raise ValueError(f"{name}: betas[{i}] must be a number in [0, 1), got {beta!r}")
        group["betas"] = (float(betas[0]), float(betas[1]))
        for key in ("amsgrad", "maximize", "decoupled_weight_decay"):
            group[key] = bool(group[key])

    def _state_of(self, p, group: dict) -> dict:
        """``p``'s state, made on its first step: the step count and zero moments (PyTorch's keys)."""
        state = self.state.setdefault(p, {})
        with backend.device_context(p.device):
            xp = backend.get_array_module(p.data)
            if not state:
                state.update(step=0.0, exp_avg=xp.zeros_like(p.data), exp_avg_sq=xp.zeros_like(p.data))
            if group["amsgrad"] and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        return state

    @takes_closure
    def step(self):
        """Update every parameter that has a gradient, in place.

        This is the reference's loop; ``minidl.kernels.dispatch`` may give a fast path
        (on the CPU: every parameter in cache-sized chunks, all of them in one region of
        the worker threads) that does the same arithmetic in the same order.
        """
        todo = [(p, group, self._state_of(p, group)) for p, group in self._with_grads()]
        moments = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
        fast = dispatch.adam_step([a for p, _, state in todo for a in (p.data, *(state[k] for k in moments if k in state))],
                                  [p.grad.data for p, _, _ in todo])
        if fast is None:
            self._update_each(todo)
            return
        updates = []
        for p, group, state in todo:
            state["step"] += 1
            (beta1, beta2), t = group["betas"], state["step"]
            hyper = (group["lr"], beta1, beta2, group["eps"], group["weight_decay"], group["decoupled_weight_decay"],
                     group["maximize"], group["lr"] / (1 - beta1 ** t), (1 - beta2 ** t) ** 0.5)
            v_max = state["max_exp_avg_sq"] if group["amsgrad"] else None
            updates.append((p.data, p.grad.data, state["exp_avg"], state["exp_avg_sq"], v_max, hyper))
        fast.step(updates)

    def _update(self, p, group: dict, state: dict) -> None:
        """The rule of the module doc on one parameter (the reference)."""
        w, g = p.data, p.grad.data
        xp = backend.get_array_module(w)
        lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if group["maximize"]:
            g = -g
        state["step"] += 1
        t = state["step"]
        if decay != 0:
            if group["decoupled_weight_decay"]:
                w *= 1 - lr * decay
            else:
                g = g + decay * w
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m += (1 - beta1) * (g - m)
        v *= beta2
        v += (1 - beta2) * g * g
        if group["amsgrad"]:
            v = xp.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        bias_correction1 = 1 - beta1 ** t
        bias_correction2 = 1 - beta2 ** t
        denom = xp.sqrt(v) / bias_correction2 ** 0.5 + eps
        w -= lr / bias_correction1 * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay (1e-2 by default); PyTorch's signature and rule (see the module doc).

    Args: as ``Adam``, without ``decoupled_weight_decay`` (always True here: a group
    that sets it False is refused; use ``Adam`` for an L2 penalty).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def _check_group(self, group: dict) -> None:
        super()._check_group(group)
        if not group["decoupled_weight_decay"]:
            raise ValueError("AdamW: decoupled_weight_decay is always True (use Adam for an L2 penalty)")
