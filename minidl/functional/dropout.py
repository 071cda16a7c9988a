"""Inverted dropout: zero each element with probability p and scale the rest by 1/(1-p)."""
from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd import Function, Tensor


class Dropout(Function):
    # x (any shape) -> y = x * mask / (1 - p), same shape; mask ~ Bernoulli(1 - p).
    def __init__(self, p, rng):
        self.p, self.rng = p, rng

    def forward(self, x):
        # Draw on the host from the explicit generator so runs are reproducible on
        # every device, then move the mask to x's device.
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        scale = backend.to_device(keep, backend.device_of(x)).astype(x.dtype)
        scale *= x.dtype.type(1.0 / (1.0 - self.p))
        self.save_for_backward(scale)
        return x * scale

    def backward(self, gy):
        (scale,) = self.saved_arrays
        gx = gy * scale
        assert gx.shape == scale.shape
        return gx


def dropout(x: Tensor, p: float = 0.5, training: bool = True, rng=None) -> Tensor:
    """Inverted dropout; the identity when ``training`` is False or p == 0.

    Args:
        x: input tensor, any shape.
        p: probability of zeroing an element, in [0, 1).
        training: apply dropout only in training mode.
        rng: a ``numpy.random.Generator``; required in training mode (explicit
            randomness keeps runs reproducible).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    if rng is None:
        raise ValueError("dropout: training mode needs an explicit rng (numpy.random.Generator)")
    return Dropout(p, rng)(x)
