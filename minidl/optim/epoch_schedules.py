"""More of ``torch.optim.lr_scheduler``'s per-epoch schedules, each a closed form in the epoch count t.

    LambdaLR                     lr = base_lr * lr_lambda(t)           (your function, per group if a list)
    MultiplicativeLR             lr = base_lr * lr_lambda(1) * ... * lr_lambda(t)
    ExponentialLR                lr = base_lr * gamma ** t
    LinearLR                     the factor goes linearly from start_factor to end_factor over total_iters
    ConstantLR                   the factor is ``factor`` until total_iters, then 1
    PolynomialLR                 lr = base_lr * (1 - min(t, total_iters) / total_iters) ** power
    CosineAnnealingWarmRestarts  the cosine of CosineAnnealingLR, restarted after T_0, T_0 T_mult, ... epochs

Like every minidl schedule (``lr_scheduler.py``) they act on every parameter group,
count epochs with ``step()`` or ``step_epoch()``, and save only numbers in
``state_dict()`` (the lambdas of LambdaLR and MultiplicativeLR are code: pass the same
ones again when resuming, as in PyTorch).
"""
from __future__ import annotations

import math

from .scheduler import LRScheduler, _count
from .optimizer import check_number


class _EpochSchedule(LRScheduler):
    """A schedule of epochs done, t: subclasses give ``lr_at(t, base_lr)``."""

    _state_keys, _clock = ("epoch",), "epoch"

    def __init__(self, optimizer):
        super().__init__(optimizer)
        self.epoch = 0

    def step_epoch(self, metric=None) -> None:
        self._tick()


class _LambdaSchedule(_EpochSchedule):
    """A schedule of the user's functions, one per group: subclasses give ``rate(base_lr, lr_lambda, t)``."""

    def __init__(self, optimizer, lr_lambda):
        self.lr_lambdas = _lambdas(type(self).__name__, lr_lambda, len(getattr(optimizer, "param_groups", ())))
        super().__init__(optimizer)

    def _apply(self) -> None:   # each group's rate from its own function
        for group, base, lr_lambda in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            group["lr"] = self.rate(base, lr_lambda, self.epoch)


def _lambdas(name: str, lr_lambda, groups: int) -> list:
    """One callable per parameter group: a single function for all, or a list of them."""
    lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * groups
    if len(lambdas) != groups or not all(callable(f) for f in lambdas):
        raise ValueError(f"{name}: lr_lambda must be a function or a list of {groups} functions "
                         f"(one per parameter group), got {lr_lambda!r}")
    return lambdas


def _factor(name: str, value, low: float, high: float, low_inclusive: bool) -> float:
    value = check_number(name, value, low, low_inclusive)
    if value > high:
        raise ValueError(f"{name} must be at most {high}, got {value!r}")
    return value


class LambdaLR(_LambdaSchedule):
    """lr = base_lr * lr_lambda(t), per group (PyTorch's LambdaLR): any schedule as a function of the epoch."""

    def __init__(self, optimizer, lr_lambda):
        super().__init__(optimizer, lr_lambda)
        self._apply()   # epoch 0's rate, lr_lambda(0), from the start (PyTorch's)

    @staticmethod
    def rate(base_lr, lr_lambda, t):
        return base_lr * lr_lambda(t)


class MultiplicativeLR(_LambdaSchedule):
    """lr = the previous epoch's lr * lr_lambda(t) for t >= 1 (PyTorch's MultiplicativeLR), per group."""

    @staticmethod
    def rate(base_lr, lr_lambda, t):
        lr = base_lr
        for k in range(1, t + 1):   # a product from the start: the same rate after a resume
            lr *= lr_lambda(k)
        return lr


class ExponentialLR(_EpochSchedule):
    """lr = base_lr * gamma ** t (PyTorch's ExponentialLR)."""

    def __init__(self, optimizer, gamma):
        super().__init__(optimizer)
        self.gamma = check_number("ExponentialLR: gamma", gamma, 0.0, False)

    def lr_at(self, t, base_lr):
        return base_lr * self.gamma ** t


class LinearLR(_EpochSchedule):
    """The rate's factor goes linearly from start_factor to end_factor over total_iters epochs, then stays
    (PyTorch's LinearLR, a warm-up when start_factor < end_factor)."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5):
        super().__init__(optimizer)
        self.start_factor = _factor("LinearLR: start_factor", start_factor, 0.0, 1.0, False)
        self.end_factor = _factor("LinearLR: end_factor", end_factor, 0.0, 1.0, True)
        self.total_iters = _count("LinearLR: total_iters", total_iters, 1)
        self._apply()

    def lr_at(self, t, base_lr):
        done = min(t, self.total_iters) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * done)


class ConstantLR(_EpochSchedule):
    """lr = base_lr * factor for the first total_iters epochs, then base_lr (PyTorch's ConstantLR)."""

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5):
        super().__init__(optimizer)
        self.factor = _factor("ConstantLR: factor", factor, 0.0, 1.0, True)
        self.total_iters = _count("ConstantLR: total_iters", total_iters, 0)
        self._apply()

    def lr_at(self, t, base_lr):
        return base_lr * (self.factor if t < self.total_iters else 1.0)


class PolynomialLR(_EpochSchedule):
    """lr = base_lr * (1 - min(t, total_iters) / total_iters) ** power (PyTorch's PolynomialLR)."""

    def __init__(self, optimizer, total_iters=5, power=1.0):
        super().__init__(optimizer)
        self.total_iters = _count("PolynomialLR: total_iters", total_iters, 1)
        self.power = check_number("PolynomialLR: power", power)

    def lr_at(self, t, base_lr):
        return base_lr * (1.0 - min(t, self.total_iters) / self.total_iters) ** self.power


class CosineAnnealingWarmRestarts(_EpochSchedule):
    """SGDR (Loshchilov & Hutter 2017): the cosine from base_lr to eta_min over T_i epochs, then again from
    base_lr, with T_0, T_0 T_mult, T_0 T_mult^2, ... (PyTorch's CosineAnnealingWarmRestarts, integer epochs)."""

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0.0):
        super().__init__(optimizer)
        self.T_0 = _count("CosineAnnealingWarmRestarts: T_0", T_0, 1)
        self.T_mult = _count("CosineAnnealingWarmRestarts: T_mult", T_mult, 1)
        self.eta_min = check_number("CosineAnnealingWarmRestarts: eta_min", eta_min)

    def lr_at(self, t, base_lr):
        t_cur, t_i = t, self.T_0
        while t_cur >= t_i:       # walk the restarts: each period T_mult times the one before
            t_cur, t_i = t_cur - t_i, t_i * self.T_mult
        return self.eta_min + (base_lr - self.eta_min) * (1.0 + math.cos(math.pi * t_cur / t_i)) / 2.0
