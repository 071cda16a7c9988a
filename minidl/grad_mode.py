"""Gradient modes: whether calling a ``Function`` records it for backward.

``no_grad()`` turns recording off inside a ``with`` block or a decorated function
(inference, optimizer updates), ``enable_grad()`` turns it back on inside one, and
``set_grad_enabled(mode)`` does either. The mode is per thread, as PyTorch's: a worker
thread starts with recording on, whatever the main thread is doing.
"""
from __future__ import annotations

import functools
import threading

_grad_mode = threading.local()


def is_grad_enabled() -> bool:
    """Whether new Function calls are recorded for backward (per thread)."""
    return getattr(_grad_mode, "enabled", True)


class set_grad_enabled:
    """Record Function calls for backward (``mode`` True) or not, in a ``with`` block or a
    decorated function; the previous mode comes back afterwards (per thread, as PyTorch)."""

    def __init__(self, mode: bool):
        self.mode, self._previous = bool(mode), []

    def __enter__(self):
        self._previous.append(is_grad_enabled())
        _grad_mode.enabled = self.mode

    def __exit__(self, *exc_info):
        _grad_mode.enabled = self._previous.pop()

    def __call__(self, fn):
        mode = self.mode

        @functools.wraps(fn)
        def with_mode(*args, **kwargs):
            with set_grad_enabled(mode):
                return fn(*args, **kwargs)
        return with_mode


class no_grad(set_grad_enabled):
    """Inside this block (or function: ``@no_grad()`` or ``@no_grad``) Function calls record
    nothing and outputs never require grad."""

    def __new__(cls, fn=None):
        self = super().__new__(cls)
        if fn is not None:    # a bare @no_grad: decorate fn at once
            self.__init__()
            return self(fn)
        return self

    def __init__(self, fn=None):
        super().__init__(False)


class enable_grad(no_grad):
    """Record again inside a ``no_grad`` block (``with enable_grad():`` or ``@enable_grad``)."""

    def __init__(self, fn=None):
        set_grad_enabled.__init__(self, True)
