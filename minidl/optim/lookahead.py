"""Lookahead (Zhang, Lucas, Hinton and Ba, 2019): every k steps, pull the weights back towards a slow average.

Any optimizer makes the "fast" steps. Lookahead keeps a second, "slow" copy of the
weights; after every k-th step it moves the slow copy part of the way towards the fast
weights and then restarts the fast weights from there:

    slow = slow + alpha * (fast - slow)     (an exponential moving average of the fast
    fast = slow                              weights, sampled every k steps)

With alpha = 1 nothing happens (slow follows fast); with a small alpha the weights
move only by a fraction of what the fast steps proposed, which averages away the noise
of the last k steps. airbench94 uses k = 5 and lets alpha fall from 1 to about 0.23
over the run (``alpha`` may be a function of the step count): early on the weights move
freely, at the end they average over many steps, much as a decaying learning rate.

The slow weights are part of ``state_dict()``, so checkpoints resume exactly. Given the
``module``, its floating-point buffers (batch norms' running statistics) are averaged
alike, as airbench does: the statistics then belong to the averaged weights.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import backend
from .optimizer import _copy_to, takes_closure


class Lookahead:
    """Wrap ``optimizer``: its steps, then every ``k``-th step the pull towards the slow weights (module doc).

    Args:
        optimizer: a ``minidl.optim.Optimizer`` (its parameter groups, lr and schedules
            stay its own: ``param_groups`` and ``lr`` are the wrapped optimizer's).
        k: steps between synchronisations, >= 1.
        alpha: the fast weights' share at a synchronisation, in [0, 1]: a number, or a
            function of the number of steps taken so far (k, 2k, ...) that returns one.
        module: None, or the model whose floating-point buffers are averaged too (read
            from it at every synchronisation, so moving it to a device is fine).
    """

    def __init__(self, optimizer, k: int = 5, alpha=0.5, module=None):
        if not hasattr(optimizer, "param_groups") or not callable(getattr(optimizer, "step", None)):
            raise ValueError(f"Lookahead: expected a minidl optimizer to wrap, got {optimizer!r}")
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
            raise ValueError(f"Lookahead: k must be an int >= 1, got {k!r}")
        if not callable(alpha):
            self._check_alpha(alpha)
        self.optimizer, self.k, self.alpha, self.module = optimizer, int(k), alpha, module
        self.steps = 0
        self.slow = [self._copy(p.data) for p in optimizer.parameters()]
        self.slow_buffers = [self._copy(b) for b in self._buffers()]

    def _buffers(self) -> list:
        """The module's floating-point buffers, in its order (none without a module)."""
        if self.module is None:
            return []
        return [b for b in self.module.buffers() if b.dtype.kind == "f"]

    @staticmethod
    def _copy(array):
        with backend.device_context(backend.device_of(array)):
            return array.copy()

    @staticmethod
    def _check_alpha(value) -> float:
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
            raise ValueError(f"Lookahead: alpha must be a number in [0, 1], got {value!r}")
        return float(value)

    # ---- the wrapped optimizer's face -----------------------------------------------
    @property
    def param_groups(self) -> list:
        return self.optimizer.param_groups

    @property
    def lr(self) -> float:
        return self.optimizer.lr

    @lr.setter
    def lr(self, value) -> None:
        self.optimizer.lr = value

    def parameters(self) -> list:
        return self.optimizer.parameters()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)

    # ---- the steps ------------------------------------------------------------------------
    def current_alpha(self) -> float:
        """alpha at the current step count."""
        return self._check_alpha(self.alpha(self.steps) if callable(self.alpha) else self.alpha)

    @takes_closure
    def step(self):
        """The wrapped optimizer's step; after every k-th, slow += alpha (fast - slow) and fast = slow."""
        self.optimizer.step()
        self.steps += 1
        if self.steps % self.k == 0:
            self.synchronise(self.current_alpha())

    def synchronise(self, alpha: float) -> None:
        """Move the slow weights ``alpha`` of the way to the fast ones, then set the fast weights to them."""
        fast = [p.data for p in self.optimizer.parameters()] + self._buffers()
        for array, slow in zip(fast, self.slow + self.slow_buffers):
            with backend.device_context(backend.device_of(array)):
                slow += array.dtype.type(alpha) * (array - slow)
                array[...] = slow

    # ---- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The wrapped optimizer's state_dict, plus ``"lookahead"``: k, the step count, the slow weights and buffers."""
        def host(arrays):
            return {str(i): np.array(backend.to_numpy(a), copy=True) for i, a in enumerate(arrays)}
        return {**self.optimizer.state_dict(), "lookahead": {"k": self.k, "steps": self.steps, "slow": host(self.slow),
                                                             "slow_buffers": host(self.slow_buffers)}}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore ``state_dict()``. Raises ValueError when it holds no (matching) lookahead state."""
        own = state_dict.get("lookahead")
        params = self.optimizer.parameters()
        if own is None or len(own.get("slow", {})) != len(params):
            got = "none" if own is None else f"{len(own.get('slow', {}))} slow weights"
            raise ValueError(f"Lookahead.load_state_dict: expected the state of a Lookahead over {len(params)} "
                             f"parameters, got {got}")
        slow = [own["slow"][str(i)] for i in range(len(params))]
        for i, (p, s) in enumerate(zip(params, slow)):
            if tuple(np.shape(s)) != p.shape:
                raise ValueError(f"Lookahead.load_state_dict: slow weight {i} has shape {tuple(np.shape(s))}, the "
                                 f"parameter {p.shape}")
        buffers = self._buffers()
        saved = own.get("slow_buffers", {})
        if len(saved) != len(buffers) or any(tuple(np.shape(saved[str(i)])) != b.shape for i, b in enumerate(buffers)):
            raise ValueError(f"Lookahead.load_state_dict: {len(saved)} slow buffers in the state, but the module has "
                             f"{len(buffers)} floating-point buffers (or their shapes differ)")
        self.optimizer.load_state_dict({key: value for key, value in state_dict.items() if key != "lookahead"})
        self.k, self.steps = int(own["k"]), int(own["steps"])
        self.slow = [_copy_to(s, p) for p, s in zip(params, slow)]
        self.slow_buffers = [self._buffer_copy(saved[str(i)], b) for i, b in enumerate(buffers)]

    @staticmethod
    def _buffer_copy(array, like):
        """A copy of ``array`` on ``like``'s device, in its dtype."""
        device = backend.device_of(like)
        with backend.device_context(device):
            return backend.to_device(np.asarray(backend.to_numpy(array)), device).astype(like.dtype, copy=True)

    def __repr__(self) -> str:
        return f"Lookahead({type(self.optimizer).__name__}, k={self.k})"
