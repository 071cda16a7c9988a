"""Which rows of a global batch the next forward holds: the context that data parallelism sets.

Under data parallelism each process runs the model on its slice of a global batch.
Layers whose result depends on the whole batch's randomness (Dropout: one mask for
the global batch, drawn from a generator that every process holds alike) need to
know which slice that is. The training step says so around the forward:

    with nn.batch_slice(start, total):   # x holds rows start..start+len(x) of `total`
        outputs = model(x)

and ``nn.Dropout`` reads ``current_batch_slice()`` when it runs. Outside such a
block (one process, evaluation, any code that never sets it) it is None and every
layer sees its input as the whole batch. ``minidl.distributed.DataParallel.batch``
opens the block for the Trainer; nothing else sets it.

The value lives in a ``contextvars.ContextVar``: it is scoped to the ``with`` block
and to the thread (or asyncio task) that opened it, and nested blocks restore the
outer value on exit.
"""
from __future__ import annotations

import contextlib
import contextvars

_current = contextvars.ContextVar("minidl_batch_slice", default=None)


def current_batch_slice() -> tuple | None:
    """``(start, total)`` set by the innermost ``batch_slice`` block, or None outside one."""
    return _current.get()


@contextlib.contextmanager
def batch_slice(start: int, total: int):
    """Within the block, forwards hold rows ``start..start+N`` of a global batch of ``total`` rows.

    Args:
        start: the first row of this process's slice, 0 <= start <= total.
        total: the global batch's number of rows, >= 1.
    Raises:
        ValueError for a start outside [0, total] or a total below 1.
    """
    start, total = int(start), int(total)
    if total < 1 or not 0 <= start <= total:
        raise ValueError(f"batch_slice: expected 0 <= start <= total and total >= 1, got start {start}, "
                         f"total {total}")
    token = _current.set((start, total))
    try:
        yield
    finally:
        _current.reset(token)
