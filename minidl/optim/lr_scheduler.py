"""Learning-rate schedules for any optimizer, every parameter group (the base class: scheduler.py).

StepLR, MultiStepLR, CosineAnnealingLR and ReduceLROnPlateau are PyTorch's; CosineLR,
LinearWarmupDecayLR and OneCycleLR are clocked by optimizer steps. PyTorch's other
per-epoch schedules (LambdaLR, ExponentialLR, LinearLR, ...) are in epoch_schedules.py
and importable from here too, as ``torch.optim.lr_scheduler.LambdaLR`` is.
"""
from __future__ import annotations

import math
import numbers

from .optimizer import check_number
from .scheduler import LRScheduler, _count, _warmup_count  # noqa: F401  (importable from here as before)


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epochs_done // step_size), per group (PyTorch's StepLR, stepped per epoch).

    ``step_size_epochs=`` is minidl's earlier name for ``step_size``.
    """

    _state_keys, _clock = ("epoch",), "epoch"

    def __init__(self, optimizer, step_size=None, gamma=0.1, *, step_size_epochs=None):
        super().__init__(optimizer)
        if (step_size is None) == (step_size_epochs is None):
            raise TypeError("StepLR: give step_size (or its older name step_size_epochs), once")
        self.step_size = _count("StepLR: step_size", step_size if step_size is not None else step_size_epochs, 1)
        self.gamma = check_number("StepLR: gamma", gamma, 0.0, False)
        self.epoch = 0

    def step_epoch(self, metric=None) -> None:
        self._tick()

    def lr_at(self, t, base_lr):
        return base_lr * self.gamma ** (t // self.step_size)


class MultiStepLR(LRScheduler):
    """lr = base_lr * gamma ** (how many of ``milestones`` the epochs done have reached), per group.

    PyTorch's MultiStepLR stepped once per epoch: He et al.'s ResNet schedule is
    ``MultiStepLR(optimizer, milestones=[epochs // 2, epochs * 3 // 4])``.
    """

    _state_keys, _clock = ("epoch",), "epoch"

    def __init__(self, optimizer, milestones, gamma=0.1):
        super().__init__(optimizer)
        milestones = list(milestones)
        if not milestones or any(not isinstance(m, numbers.Integral) or isinstance(m, bool) or m < 1
                                 for m in milestones) or milestones != sorted(milestones):
            raise ValueError(f"MultiStepLR: milestones must be increasing epoch counts >= 1, got {milestones!r}")
        self.milestones = [int(m) for m in milestones]
        self.gamma = check_number("MultiStepLR: gamma", gamma, 0.0, False)
        self.epoch = 0

    def step_epoch(self, metric=None) -> None:
        self._tick()

    def lr_at(self, t, base_lr):
        return base_lr * self.gamma ** sum(t >= m for m in self.milestones)


class CosineLR(LRScheduler):
    """Linear warmup, then cosine decay from each group's base_lr to min_lr over the remaining steps.

    After t optimizer steps (t = 0 before the first), the lr for the next step is
        t < warmup_steps:  base_lr * (t + 1) / warmup_steps
        otherwise:         min_lr + (base_lr - min_lr) * (1 + cos(pi * q)) / 2,
                           q = min((t - warmup_steps) / (total_steps - warmup_steps), 1)
    (PyTorch's CosineAnnealingLR with eta_min = min_lr, plus the warmup.)
    """

    _state_keys, _clock = ("steps_done",), "steps_done"

    def __init__(self, optimizer, total_steps, min_lr=0.0, warmup_steps=0):
        super().__init__(optimizer)
        self.total_steps = _count("CosineLR: total_steps", total_steps, 1)
        self.warmup_steps = _warmup_count("CosineLR", warmup_steps, total_steps)
        self.min_lr = check_number("CosineLR: min_lr", min_lr)
        if self.min_lr > min(self.base_lrs):
            raise ValueError(f"CosineLR: min_lr ({min_lr}) exceeds a group's lr ({min(self.base_lrs)})")
        self.steps_done = 0
        self._apply()

    def step_batch(self) -> None:
        self._tick()

    def lr_at(self, t, base_lr):
        if t < self.warmup_steps:
            return base_lr * (t + 1) / self.warmup_steps
        q = min((t - self.warmup_steps) / (self.total_steps - self.warmup_steps), 1.0)
        return self.min_lr + (base_lr - self.min_lr) * (1.0 + math.cos(math.pi * q)) / 2.0


class CosineAnnealingLR(LRScheduler):
    """PyTorch's CosineAnnealingLR: lr = eta_min + (base_lr - eta_min) (1 + cos(pi t / T_max)) / 2.

    t counts epochs here (``step_epoch``, or ``step()`` at the cadence you choose), as in
    PyTorch's usual use; past T_max the cosine goes on and the rate rises again, as
    PyTorch's does. (``CosineLR`` counts optimizer steps, has a warm-up, and stays at
    its floor after its last step.)
    """

    _state_keys, _clock = ("epoch",), "epoch"

    def __init__(self, optimizer, T_max, eta_min=0.0):
        super().__init__(optimizer)
        self.T_max = _count("CosineAnnealingLR: T_max", T_max, 1)
        self.eta_min = check_number("CosineAnnealingLR: eta_min", eta_min)
        self.epoch = 0

    def step_epoch(self, metric=None) -> None:
        self._tick()

    def lr_at(self, t, base_lr):
        return self.eta_min + (base_lr - self.eta_min) * (1.0 + math.cos(math.pi * t / self.T_max)) / 2.0


class LinearWarmupDecayLR(LRScheduler):
    """A straight line up, then a straight line down: airbench's schedule (a trapezoid without the flat top).

    After t optimizer steps (t = 0 before the first), the lr of the next step is base_lr times
        t < warmup_steps:  start_factor + (1 - start_factor) * t / warmup_steps
        otherwise:         1 + (end_factor - 1) * min((t - warmup_steps) / (total_steps - warmup_steps), 1)
    so it rises from start_factor * base_lr to base_lr over ``warmup_steps`` steps, then falls
    to end_factor * base_lr at ``total_steps`` and stays there. (PyTorch: ``SequentialLR`` of
    two ``LinearLR``s with these factors; airbench94 uses 23% warm-up from 0.2 and ends at 0.07.)
    """

    _state_keys, _clock = ("steps_done",), "steps_done"

    def __init__(self, optimizer, total_steps, warmup_steps=0, start_factor=0.2, end_factor=0.0):
        super().__init__(optimizer)
        self.total_steps = _count("LinearWarmupDecayLR: total_steps", total_steps, 1)
        self.warmup_steps = _warmup_count("LinearWarmupDecayLR", warmup_steps, total_steps)
        self.start_factor = check_number("LinearWarmupDecayLR: start_factor", start_factor)
        self.end_factor = check_number("LinearWarmupDecayLR: end_factor", end_factor)
        self.steps_done = 0
        self._apply()

    def step_batch(self) -> None:
        self._tick()

    def lr_at(self, t, base_lr):
        if t < self.warmup_steps:
            return base_lr * (self.start_factor + (1.0 - self.start_factor) * t / self.warmup_steps)
        q = min((t - self.warmup_steps) / (self.total_steps - self.warmup_steps), 1.0)
        return base_lr * (1.0 + (self.end_factor - 1.0) * q)


class OneCycleLR(LRScheduler):
    """PyTorch's one-cycle policy with cosine annealing, without momentum cycling.

    Difference from PyTorch, on purpose: ``cycle_momentum`` defaults to False and True is
    refused (PyTorch's default cycles SGD's momentum or Adam's beta1 between 0.85 and 0.95
    against the rate); the rates match PyTorch's with ``cycle_momentum=False``.

    Per group: starts at max_lr / div_factor, rises to max_lr over the first
    pct_start * total_steps - 1 steps, then falls to start / final_div_factor at
    step total_steps - 1 (each phase a half cosine). Steps past total_steps keep the
    final lr. Sets the groups' lr to the starting value at once. ``max_lr`` is one
    number for every group or a list with one per group (PyTorch's rule).
    """

    _state_keys, _clock = ("steps_done",), "steps_done"

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None, pct_start=0.3,
                 anneal_strategy="cos", cycle_momentum=False, base_momentum=0.85, max_momentum=0.95,
                 div_factor=25.0, final_div_factor=1e4):
        super().__init__(optimizer)
        if total_steps is None:   # PyTorch's other way to say it
            if epochs is None or steps_per_epoch is None:
                raise ValueError("OneCycleLR: give total_steps, or epochs and steps_per_epoch")
            total_steps = _count("OneCycleLR: epochs", epochs, 1) * _count("OneCycleLR: steps_per_epoch",
                                                                             steps_per_epoch, 1)
        if anneal_strategy != "cos":
            raise ValueError(f"OneCycleLR: only anneal_strategy='cos' is implemented, got {anneal_strategy!r}")
        if cycle_momentum:
            raise ValueError("OneCycleLR: minidl does not cycle momentum (PyTorch's default does); pass "
                             "cycle_momentum=False, which is minidl's default")
        del base_momentum, max_momentum   # accepted for PyTorch's signature; they act only with cycle_momentum
        peaks = list(max_lr) if isinstance(max_lr, (list, tuple)) else [max_lr] * len(self.base_lrs)
        if len(peaks) != len(self.base_lrs):
            raise ValueError(f"OneCycleLR: {len(peaks)} max_lr values for {len(self.base_lrs)} parameter groups")
        self.base_lrs = [check_number("OneCycleLR: max_lr", m, 0.0, False) for m in peaks]  # the peaks
        self.total_steps = _count("OneCycleLR: total_steps", total_steps, 2)
        if not 0.0 < pct_start < 1.0:
            raise ValueError(f"OneCycleLR: pct_start must be in (0, 1), got {pct_start!r}")
        self.pct_start = float(pct_start)
        self.div_factor = check_number("OneCycleLR: div_factor", div_factor, 0.0, False)
        self.final_div_factor = check_number("OneCycleLR: final_div_factor", final_div_factor, 0.0, False)
        self.warmup_end = self.pct_start * self.total_steps - 1  # a float, as in PyTorch
        self.steps_done = 0
        self._apply()

    @property
    def max_lr(self) -> float:
        return self.base_lrs[0]

    @staticmethod
    def _cos(start, end, pct):
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)

    def step_batch(self) -> None:
        self._tick()

    def lr_at(self, t, base_lr):
        initial = base_lr / self.div_factor
        final = initial / self.final_div_factor
        t = min(t, self.total_steps - 1)
        if t <= self.warmup_end:
            return self._cos(initial, base_lr, t / self.warmup_end if self.warmup_end > 0 else 1.0)
        pct = (t - self.warmup_end) / (self.total_steps - 1 - self.warmup_end)
        return self._cos(base_lr, final, pct)


class ReduceLROnPlateau(LRScheduler):
    """Multiply every group's lr by ``factor`` when the epoch metric has stopped improving (PyTorch's).

    Args, in PyTorch's order and with its defaults: mode "min" (a loss; "max" for an
    accuracy), factor 0.1, patience 10, threshold 1e-4 with threshold_mode "rel" (improving
    means beating best * (1 -/+ threshold)) or "abs" (best -/+ threshold), cooldown 0
    (epochs after a cut that count as neither good nor bad), min_lr 0 (one number, or one
    per group), eps 1e-8 (a cut smaller than this is skipped). After ``patience`` epochs
    without improvement the next bad one cuts the lr and the count restarts.
    """

    _state_keys = ("best", "bad_epochs", "epoch", "cooldown_counter")
    _steps_on_metrics = True   # step(metrics) is an epoch end

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0.0, eps=1e-8):
        super().__init__(optimizer)
        if mode not in ("max", "min"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'max' or 'min', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor!r}")
        self.mode, self.factor, self.threshold_mode = mode, float(factor), threshold_mode
        self.patience = _count("ReduceLROnPlateau: patience", patience, 0)
        self.cooldown = _count("ReduceLROnPlateau: cooldown", cooldown, 0)
        floors = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr] * len(self.base_lrs)
        if len(floors) != len(self.base_lrs):
            raise ValueError(f"ReduceLROnPlateau: {len(floors)} min_lr values for {len(self.base_lrs)} parameter "
                             "groups")
        self.min_lrs = [check_number("ReduceLROnPlateau: min_lr", m) for m in floors]
        self.threshold = check_number("ReduceLROnPlateau: threshold", threshold)
        self.eps = check_number("ReduceLROnPlateau: eps", eps)
        self.best, self.bad_epochs, self.epoch, self.cooldown_counter = None, 0, 0, 0  # best None: no metric yet

    @property
    def min_lr(self) -> float:
        return self.min_lrs[0]

    def _improves(self, metric: float) -> bool:
        if self.best is None:
            return True
        sign = 1.0 if self.mode == "max" else -1.0
        margin = self.best * self.threshold * sign if self.threshold_mode == "rel" else self.threshold * sign
        return sign * (metric - (self.best + margin)) > 0

    def step_epoch(self, metric=None) -> None:
        if metric is None:
            raise ValueError("ReduceLROnPlateau.step_epoch: needs the epoch's metric (e.g. validation accuracy)")
        metric = float(metric)
        self.epoch += 1
        if self._improves(metric):
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.bad_epochs = 0   # PyTorch: bad epochs during the cooldown do not count
        if self.bad_epochs > self.patience:
            for group, floor in zip(self.optimizer.param_groups, self.min_lrs):
                new_lr = max(group["lr"] * self.factor, floor)
                if group["lr"] - new_lr > self.eps:   # a negligible change is skipped
                    group["lr"] = new_lr
            self.cooldown_counter, self.bad_epochs = self.cooldown, 0

    def load_state_dict(self, state: dict) -> None:
        """Restore the counters; the rates themselves live in the optimizer's state."""
        state = {"cooldown_counter": 0, **state}   # checkpoints from before the cooldown existed
        super().load_state_dict({k: v for k, v in state.items() if k not in ("base_lrs", "base_lr")})


# PyTorch's other per-epoch schedules, importable from here as from torch.optim.lr_scheduler
from .epoch_schedules import (ConstantLR, CosineAnnealingWarmRestarts, ExponentialLR, LambdaLR,  # noqa: E402,F401
                              LinearLR, MultiplicativeLR, PolynomialLR)
