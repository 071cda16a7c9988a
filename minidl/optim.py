"""Stochastic gradient descent and learning-rate schedules.

SGD follows PyTorch's update rule exactly, for every parameter p with gradient g:

    g = g * min(1, max_grad_norm / ||G||)     (only with max_grad_norm; ||G|| is the L2
                                               norm of all gradients together, as
                                               torch.nn.utils.clip_grad_norm_ computes it)
    g = g + weight_decay * p                  (L2 penalty folded into the gradient)
    buf = g                  on the first step, then
    buf = momentum * buf + g on later steps
    g = g + momentum * buf   with nesterov, else g = buf   (only when momentum > 0)
    p = p - lr * g

The update happens in place on ``p.data`` with reused scratch memory, so a step
allocates nothing once the momentum buffers exist. On the CPU it walks each
parameter in cache-sized chunks, so the weights, gradient and momentum buffer each
cross memory once per step, and the chunks of all parameters together are shared
over minidl's worker threads in one region (each thread has its own scratch), so a
step costs one hand-off, not one per parameter, and every core's memory bandwidth
works on it. Every element's update is the same arithmetic whichever thread runs it.

Schedules share one interface, so a training loop needs no case analysis:
``step_batch()`` after every optimizer step, ``step_epoch(metric=None)`` at every
epoch end (each is a no-op for schedules driven by the other), and JSON-able
``state_dict()`` / ``load_state_dict()``. They set ``optimizer.lr``.
"""
from __future__ import annotations

import math
import threading

import numpy as np

from . import backend
from ._cpu_threads import map_pieces


def _check_number(name, value, low=0.0, low_inclusive=True):
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if ok:
        ok = value >= low if low_inclusive else value > low
    if not ok:
        bound = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be a number {bound} {low}, got {value!r}")
    return float(value)


# Elements per chunk of an SGD step on the CPU: w, g, buf and two scratch pieces of
# 512K float32 values take 10 MB, within the 32 MB L3 cache, and chunks are few enough
# that Python's per-chunk overhead stays small (measured on AlexNet's 57M weights:
# 84 ms per step, against 118 ms unchunked, 96 ms at 128K and 325 ms at 8K).
_STEP_CHUNK = 512 * 1024


class SGD:
    """SGD with optional (Nesterov) momentum and weight decay; PyTorch's rule (see module doc).

    Args:
        params: an iterable of Parameters (e.g. ``model.parameters()``); the order
            fixes the order of ``state_dict()["momentum_buffers"]``.
        lr: learning rate (a schedule may change ``self.lr`` between steps).
        momentum: momentum factor, >= 0.
        weight_decay: L2 penalty factor, >= 0.
        nesterov: use Nesterov momentum (needs momentum > 0).
        max_grad_norm: when given, the gradients of a step are scaled down together
            whenever their joint L2 norm exceeds it (gradient clipping); the
            gradients in ``.grad`` are left as they are.
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False, max_grad_norm=None):
        self.params = list(params)
        if not self.params:
            raise ValueError("SGD: got an empty parameter list")
        self.lr = _check_number("SGD: lr", lr)
        self.momentum = _check_number("SGD: momentum", momentum)
        self.weight_decay = _check_number("SGD: weight_decay", weight_decay)
        if nesterov and self.momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.nesterov = bool(nesterov)
        self.max_grad_norm = None if max_grad_norm is None else _check_number(
            "SGD: max_grad_norm", max_grad_norm, low_inclusive=False)
        self.momentum_buffers = [None] * len(self.params)
        self._scratch_arrays = {}  # (device, dtype, thread) -> two flat scratch arrays

    def zero_grad(self) -> None:
        """Forget all gradients (sets ``.grad`` to None; the next backward starts fresh)."""
        for p in self.params:
            p.grad = None

    def _scratch(self, like, size: int):
        """Two flat scratch arrays of ``size`` elements on ``like``'s device and dtype (reused, one pair per thread)."""
        key = (str(backend.device_of(like)), str(like.dtype), threading.get_ident())
        pair = self._scratch_arrays.get(key)
        if pair is None or pair[0].size < size:
            with backend.device_context(backend.device_of(like)):
                xp = backend.get_array_module(like)
                pair = self._scratch_arrays[key] = (xp.empty(size, like.dtype), xp.empty(size, like.dtype))
        return pair[0][:size], pair[1][:size]

    def _clip_factor(self):
        """None, or the factor min(1, max_grad_norm / ||G||) that every gradient of this step is scaled by.

        On a GPU the factor stays a device scalar: deciding on the host whether to clip
        would wait for the GPU every step.
        """
        grads = [p.grad.data for p in self.params if p.grad is not None]
        if self.max_grad_norm is None or not grads:
            return None
        xp = backend.get_array_module(grads[0])
        if xp is np:
            squares = sum(float(np.vdot(g.reshape(-1), g.reshape(-1))) for g in grads)
            factor = self.max_grad_norm / (math.sqrt(squares) + 1e-6)  # 1e-6: PyTorch's
            return None if factor >= 1.0 else factor  # below the limit: no extra pass
        with backend.device_context(backend.device_of(grads[0])):
            squares = sum(xp.vdot(g.reshape(-1), g.reshape(-1)) for g in grads)  # one dot product each
            return xp.minimum(1.0, self.max_grad_norm / (xp.sqrt(squares) + 1e-6)).astype(grads[0].dtype)

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        factor = self._clip_factor()
        cpu_pieces, cpu_bytes = [], 0
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            w, g = p.data, p.grad.data
            if g.shape != w.shape:
                raise ValueError(f"SGD.step: parameter {i} has shape {w.shape} but its gradient {g.shape}")
            first = self.momentum != 0 and self.momentum_buffers[i] is None
            device = backend.device_of(w)
            with backend.device_context(device):
                if first:
                    self.momentum_buffers[i] = backend.get_array_module(w).empty_like(w)
                buf = self.momentum_buffers[i]
                arrays = (w, g) if buf is None else (w, g, buf)
                if device.type != "cpu" or not all(a.flags.c_contiguous for a in arrays):
                    # A GPU takes it in one piece; a non-contiguous view cannot be
                    # flattened in place: one whole pass.
                    self._update(*arrays, first=first, factor=factor)
                else:
                    # Flat views, walked in chunks: each chunk's updates run in cache, so
                    # every array crosses memory once instead of once per arithmetic step.
                    flat = [a.reshape(-1) for a in arrays]
                    cpu_pieces += [([a[start:start + _STEP_CHUNK] for a in flat], first)
                                   for start in range(0, w.size, _STEP_CHUNK)]
                    cpu_bytes += sum(a.nbytes for a in arrays)
        if cpu_pieces:  # pieces write disjoint memory: all of them in one region of the workers
            def update(piece):
                arrays, first = piece
                self._update(*arrays, first=first, factor=factor)
            map_pieces(cpu_pieces[0][0][0], update, cpu_pieces, nbytes=cpu_bytes)

    def _update(self, w, g, buf=None, first=False, factor=None):
        """PyTorch's SGD rule (module doc) on one piece of a parameter, in place on w and buf."""
        xp = backend.get_array_module(w)
        tmp, step = (t.reshape(w.shape) for t in self._scratch(w, w.size))
        if factor is not None:
            xp.multiply(g, factor, out=tmp)   # the clipped gradient
            g = tmp
        if self.weight_decay != 0:
            if factor is None:
                xp.multiply(w, self.weight_decay, out=tmp)
                tmp += g
            else:  # tmp holds the clipped gradient already
                xp.multiply(w, self.weight_decay, out=step)
                tmp += step
            g = tmp  # g + decay * w, never written into p.grad (it may be shared)
        if buf is not None:
            if first:
                buf[...] = g
            else:
                buf *= self.momentum
                buf += g
            if self.nesterov:
                xp.multiply(buf, self.momentum, out=step)
                step += g                       # g + momentum * buf
                g = step
            else:
                g = buf
        xp.multiply(g, self.lr, out=step)
        w -= step

    def state_dict(self) -> dict:
        """Hyper-parameters and momentum buffers: JSON-able numbers and host NumPy arrays only."""
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "nesterov": self.nesterov, "max_grad_norm": self.max_grad_norm,
                "momentum_buffers": [None if b is None else np.array(backend.to_numpy(b), copy=True)
                                     for b in self.momentum_buffers]}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``'s contents; buffers go to each parameter's device and dtype."""
        buffers = state.get("momentum_buffers")
        if buffers is None or len(buffers) != len(self.params):
            got = "none" if buffers is None else len(buffers)
            raise ValueError(f"SGD.load_state_dict: expected {len(self.params)} momentum buffers, got {got}")
        for i, (p, b) in enumerate(zip(self.params, buffers)):
            if b is not None and tuple(np.shape(b)) != p.shape:
                raise ValueError(f"SGD.load_state_dict: momentum buffer {i} has shape {tuple(np.shape(b))}, "
                                 f"parameter has {p.shape}")
        self.lr = _check_number("SGD: lr", state["lr"])
        self.momentum = _check_number("SGD: momentum", state["momentum"])
        self.weight_decay = _check_number("SGD: weight_decay", state["weight_decay"])
        self.nesterov = bool(state["nesterov"])
        clip = state.get("max_grad_norm")  # absent in checkpoints from before clipping existed
        self.max_grad_norm = None if clip is None else _check_number("SGD: max_grad_norm", clip, low_inclusive=False)
        self.momentum_buffers = [None if b is None else _copy_to(b, p) for p, b in zip(self.params, buffers)]


def _copy_to(array, param):
    """A fresh copy of ``array`` on ``param``'s device, in its dtype (made there: CuPy allocates on the current GPU)."""
    device = param.device
    with backend.device_context(device):
        return backend.to_device(array if backend.is_array(array) else np.asarray(array), device).astype(
            param.dtype, copy=True)


# ---- learning-rate schedules ----------------------------------------------------

class LRScheduler:
    """Base class: owns an optimizer and sets its ``lr``. Subclasses override what they use.

    A training loop calls ``step_batch()`` after every ``optimizer.step()`` and
    ``step_epoch(metric)`` at the end of every epoch, whatever the schedule.
    """

    _state_keys: tuple = ()

    def __init__(self, optimizer):
        if not hasattr(optimizer, "lr"):
            raise ValueError(f"{type(self).__name__}: expected an optimizer with an lr attribute, got {optimizer!r}")
        self.optimizer = optimizer

    @property
    def lr(self) -> float:
        return self.optimizer.lr

    def step_batch(self) -> None:
        """Called after every optimizer step (no-op for epoch-based schedules)."""

    def step_epoch(self, metric=None) -> None:
        """Called at every epoch end (no-op for batch-based schedules)."""

    def state_dict(self) -> dict:
        """JSON-able numbers only (checkpoints store it without pickle)."""
        return {key: getattr(self, key) for key in self._state_keys}

    def load_state_dict(self, state: dict) -> None:
        missing = [key for key in self._state_keys if key not in state]
        if missing:
            raise ValueError(f"{type(self).__name__}.load_state_dict: missing keys {missing}")
        for key in self._state_keys:
            setattr(self, key, state[key])
        self._apply()

    def _apply(self) -> None:
        """Set optimizer.lr from the restored counters (schedules that compute lr from them)."""


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epochs_done // step_size_epochs); base_lr is the optimizer's lr now."""

    _state_keys = ("base_lr", "epoch")

    def __init__(self, optimizer, step_size_epochs, gamma=0.1):
        super().__init__(optimizer)
        if not isinstance(step_size_epochs, (int, np.integer)) or step_size_epochs < 1:
            raise ValueError(f"StepLR: step_size_epochs must be an int >= 1, got {step_size_epochs!r}")
        self.step_size, self.gamma = int(step_size_epochs), _check_number("StepLR: gamma", gamma, 0.0, False)
        self.base_lr, self.epoch = float(optimizer.lr), 0

    def step_epoch(self, metric=None) -> None:
        self.epoch += 1
        self._apply()

    def _apply(self) -> None:
        self.optimizer.lr = self.base_lr * self.gamma ** (self.epoch // self.step_size)


class CosineLR(LRScheduler):
    """Linear warmup, then cosine decay from base_lr to min_lr over the remaining steps.

    After t optimizer steps (t = 0 before the first), the lr for the next step is
        t < warmup_steps:  base_lr * (t + 1) / warmup_steps
        otherwise:         min_lr + (base_lr - min_lr) * (1 + cos(pi * q)) / 2,
                           q = min((t - warmup_steps) / (total_steps - warmup_steps), 1)
    base_lr is the optimizer's lr at construction.
    """

    _state_keys = ("base_lr", "step")

    def __init__(self, optimizer, total_steps, min_lr=0.0, warmup_steps=0):
        super().__init__(optimizer)
        if not isinstance(total_steps, (int, np.integer)) or total_steps < 1:
            raise ValueError(f"CosineLR: total_steps must be an int >= 1, got {total_steps!r}")
        if not isinstance(warmup_steps, (int, np.integer)) or not 0 <= warmup_steps < total_steps:
            raise ValueError(f"CosineLR: warmup_steps must be an int in [0, total_steps={total_steps}), "
                             f"got {warmup_steps!r}")
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.min_lr = _check_number("CosineLR: min_lr", min_lr)
        self.base_lr, self.step = float(optimizer.lr), 0
        if self.min_lr > self.base_lr:
            raise ValueError(f"CosineLR: min_lr ({min_lr}) exceeds the optimizer's lr ({self.base_lr})")
        self._apply()

    def lr_at(self, t: int) -> float:
        if t < self.warmup_steps:
            return self.base_lr * (t + 1) / self.warmup_steps
        q = min((t - self.warmup_steps) / (self.total_steps - self.warmup_steps), 1.0)
        return self.min_lr + (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * q)) / 2.0

    def step_batch(self) -> None:
        self.step += 1
        self._apply()

    def _apply(self) -> None:
        self.optimizer.lr = self.lr_at(self.step)


class OneCycleLR(LRScheduler):
    """PyTorch's one-cycle policy with cosine annealing (no momentum cycling).

    Starts at max_lr / div_factor, rises to max_lr over the first
    pct_start * total_steps - 1 steps, then falls to start / final_div_factor at
    step total_steps - 1 (each phase a half cosine). Steps past total_steps keep
    the final lr. Sets the optimizer's lr to the starting value at once.
    """

    _state_keys = ("step",)

    def __init__(self, optimizer, max_lr, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
        super().__init__(optimizer)
        self.max_lr = _check_number("OneCycleLR: max_lr", max_lr, 0.0, False)
        if not isinstance(total_steps, (int, np.integer)) or total_steps < 2:
            raise ValueError(f"OneCycleLR: total_steps must be an int >= 2, got {total_steps!r}")
        if not 0.0 < pct_start < 1.0:
            raise ValueError(f"OneCycleLR: pct_start must be in (0, 1), got {pct_start!r}")
        self.total_steps, self.pct_start = int(total_steps), float(pct_start)
        self.initial_lr = self.max_lr / _check_number("OneCycleLR: div_factor", div_factor, 0.0, False)
        self.final_lr = self.initial_lr / _check_number("OneCycleLR: final_div_factor", final_div_factor, 0.0, False)
        self.warmup_end = self.pct_start * self.total_steps - 1  # a float, as in PyTorch
        self.step = 0
        self._apply()

    @staticmethod
    def _cos(start, end, pct):
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)

    def lr_at(self, t: int) -> float:
        t = min(t, self.total_steps - 1)
        if t <= self.warmup_end:
            return self._cos(self.initial_lr, self.max_lr, t / self.warmup_end if self.warmup_end > 0 else 1.0)
        pct = (t - self.warmup_end) / (self.total_steps - 1 - self.warmup_end)
        return self._cos(self.max_lr, self.final_lr, pct)

    def step_batch(self) -> None:
        self.step += 1
        self._apply()

    def _apply(self) -> None:
        self.optimizer.lr = self.lr_at(self.step)


class ReduceLROnPlateau(LRScheduler):
    """Multiply lr by ``factor`` when the epoch metric has not improved for more than ``patience`` epochs.

    PyTorch's rule with relative threshold: in mode "max" a metric improves when
    it exceeds best * (1 + threshold) ("min": falls below best * (1 - threshold)).
    After ``patience`` epochs without improvement the next bad one cuts the lr
    (never below min_lr) and the count restarts.
    """

    _state_keys = ("best", "bad_epochs", "epoch")

    def __init__(self, optimizer, mode="max", factor=0.1, patience=2, min_lr=0.0, threshold=1e-4):
        super().__init__(optimizer)
        if mode not in ("max", "min"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'max' or 'min', got {mode!r}")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor!r}")
        if not isinstance(patience, (int, np.integer)) or patience < 0:
            raise ValueError(f"ReduceLROnPlateau: patience must be an int >= 0, got {patience!r}")
        self.mode, self.factor, self.patience = mode, float(factor), int(patience)
        self.min_lr = _check_number("ReduceLROnPlateau: min_lr", min_lr)
        self.threshold = _check_number("ReduceLROnPlateau: threshold", threshold)
        self.best, self.bad_epochs, self.epoch = None, 0, 0  # best None: no metric seen yet

    def _improves(self, metric: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return metric > self.best * (1.0 + self.threshold)
        return metric < self.best * (1.0 - self.threshold)

    def step_epoch(self, metric=None) -> None:
        if metric is None:
            raise ValueError("ReduceLROnPlateau.step_epoch: needs the epoch's metric (e.g. validation accuracy)")
        metric = float(metric)
        self.epoch += 1
        if self._improves(metric):
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            new_lr = max(self.optimizer.lr * self.factor, self.min_lr)
            if self.optimizer.lr - new_lr > 1e-8:  # PyTorch's eps: ignore negligible changes
                self.optimizer.lr = new_lr
            self.bad_epochs = 0
