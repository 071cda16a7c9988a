"""Unbatched inputs: a single sample (C, H, W) runs as a batch of one, as PyTorch allows."""
from __future__ import annotations


def as_batch(fn: str, x):
    """``x`` as a batch, and whether it came as one sample.

    Args:
        fn: the caller, for the error message.
        x: a Tensor or array, (N, C, H, W) or (C, H, W).
    Returns:
        (x, False), or (x reshaped to (1, C, H, W), True).
    Raises:
        ValueError naming ``fn`` for any other number of axes.
    """
    shape = tuple(x.shape)
    if len(shape) == 3:
        return x.reshape(1, *shape), True
    if len(shape) == 4:
        return x, False
    raise ValueError(f"{fn}: expected input (N, C, H, W) or (C, H, W), got shape {shape}")


def drop_batch(y, added: bool):
    """Undo ``as_batch``: the sample of a batch of one when the batch axis was added."""
    return y.reshape(*y.shape[1:]) if added else y
