"""The base of every learning-rate schedule: ``LRScheduler`` (the schedules: lr_scheduler.py, epoch_schedules.py).

Each schedule sets ``group["lr"]`` of every group of its optimizer. Those that compute
the rate from a step or epoch count keep each group's starting rate (``base_lrs``) and
scale it, so groups keep their ratios. They share one interface, so a training loop
needs no case analysis: ``step_batch()`` after every optimizer step,
``step_epoch(metric=None)`` at every epoch end (each a no-op for schedules driven by
the other), and JSON-able ``state_dict()`` / ``load_state_dict()``. PyTorch's one call,
``scheduler.step()``, works too: it advances the schedule's own clock, at whatever
cadence the loop calls it (minidl's Trainer names the two clocks instead).
"""
from __future__ import annotations

import numbers


def _count(where: str, value, low: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        raise ValueError(f"{where} must be an int >= {low}, got {value!r}")
    return int(value)


def _warmup_count(where: str, warmup_steps, total_steps: int) -> int:
    """A warm-up length: an int in [0, total_steps)."""
    if not isinstance(warmup_steps, numbers.Integral) or not 0 <= warmup_steps < total_steps:
        raise ValueError(f"{where}: warmup_steps must be an int in [0, total_steps={total_steps}), "
                         f"got {warmup_steps!r}")
    return int(warmup_steps)


# A batch-clocked schedule's counter is saved under "step" (its name before ``step()`` became a method).
_SAVED_AS = {"steps_done": "step"}
_LOADED_AS = {"step": "steps_done"}


class LRScheduler:
    """Base class: owns an optimizer and sets the ``lr`` of its groups. Subclasses override what they use.

    Schedules that compute the rate from their counters implement ``lr_at(t, base_lr)``
    for counter value t and set ``_clock`` to the attribute that counts.
    """

    _state_keys: tuple = ()
    _clock: str | None = None
    _steps_on_metrics = False   # ReduceLROnPlateau: step() is an epoch end with its metric

    def __init__(self, optimizer):
        groups = getattr(optimizer, "param_groups", None)
        if not groups or not all("lr" in g for g in groups):
            raise ValueError(f"{type(self).__name__}: expected an optimizer with parameter groups that have an "
                             f"'lr', got {optimizer!r}")
        self.optimizer = optimizer
        self.base_lrs = [float(g["lr"]) for g in groups]

    @property
    def lr(self) -> float:
        """The first group's learning rate now."""
        return self.optimizer.param_groups[0]["lr"]

    def get_last_lr(self) -> list:
        """Every group's learning rate now (PyTorch's name)."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def step_batch(self) -> None:
        """Called after every optimizer step (no-op for epoch-based schedules)."""

    def step_epoch(self, metric=None) -> None:
        """Called at every epoch end (no-op for batch-based schedules)."""

    def step(self, metrics=None) -> None:
        """PyTorch's one call: advance this schedule's own clock by one (its batch or its epoch
        counter; ReduceLROnPlateau takes the epoch's ``metrics``). Call it at the cadence you
        mean, as in PyTorch; minidl's Trainer calls ``step_batch`` and ``step_epoch`` instead."""
        if self._clock == "epoch" or self._steps_on_metrics:
            self.step_epoch(metrics)
        else:
            self.step_batch()

    def lr_at(self, t: int, base_lr: float) -> float:
        raise NotImplementedError

    def _apply(self) -> None:
        """Set every group's lr from the counter (schedules with a ``_clock``)."""
        if self._clock is not None:
            t = getattr(self, self._clock)
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = self.lr_at(t, base)

    def _tick(self) -> None:
        setattr(self, self._clock, getattr(self, self._clock) + 1)
        self._apply()

    def state_dict(self) -> dict:
        """JSON-able numbers only (checkpoints store it without pickle)."""
        return {"base_lrs": list(self.base_lrs), **{_SAVED_AS.get(key, key): getattr(self, key)
                                                    for key in self._state_keys}}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``; minidl's earlier single-rate state (``base_lr``) loads too."""
        state = {_LOADED_AS.get(key, key): value for key, value in state.items()}
        missing = [key for key in self._state_keys if key not in state]
        if missing:
            raise ValueError(f"{type(self).__name__}.load_state_dict: missing keys {missing}")
        base_lrs = state.get("base_lrs")
        if base_lrs is None and "base_lr" in state:
            base_lrs = [state["base_lr"]] * len(self.base_lrs)
        if base_lrs is not None:
            if len(base_lrs) != len(self.base_lrs):
                raise ValueError(f"{type(self).__name__}.load_state_dict: {len(base_lrs)} base rates for "
                                 f"{len(self.base_lrs)} parameter groups")
            self.base_lrs = [float(b) for b in base_lrs]
        for key in self._state_keys:
            setattr(self, key, state[key])
        self._apply()


