"""Inverted dropout: zero each element with probability p and scale the rest by 1/(1-p) (p = 1: all zeros).

``dropout2d`` zeros whole channels instead (Tompson et al. 2015): neighbouring pixels of
a feature map are strongly correlated, so dropping single pixels barely regularises a
convolution; dropping a channel of an image does.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd import Function, Tensor


class Dropout(Function):
    # x (any shape) -> y = x * keep / (1 - p), same shape; keep ~ Bernoulli(1 - p), bool,
    # one per element, or with channels=True one per (image, channel): (N, C, 1, ...),
    # broadcast over the pixels. With batch_slice = (start, total): draws the global
    # batch's (total, ...) mask and keeps rows start..start+N (x's rows within it).
    def __init__(self, p, rng, batch_slice=None, channels=False):
        self.p, self.rng, self.batch_slice, self.channels = p, rng, batch_slice, channels

    def forward(self, x):
        # Draw on the host from the explicit generator so runs are reproducible on
        # every device, then move the mask to x's device.
        shape = x.shape[:2] + (1,) * (x.ndim - 2) if self.channels else x.shape
        if self.batch_slice is None:
            keep = self.rng.random(shape, dtype=np.float32) >= self.p
        else:
            start, total = self.batch_slice
            keep = self.rng.random((total,) + shape[1:], dtype=np.float32)[start:start + x.shape[0]] >= self.p
        # The mask stays bool (1 byte per element, not a float mask's 4); x * keep * scale
        # rounds exactly as x * scale on the kept elements.
        keep = backend.to_device(keep, backend.device_of(x))
        # p = 1 keeps nothing; the scale 0 (not 1/0) makes y and gx zeros, as PyTorch does.
        self.scale = x.dtype.type(0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p))
        self.save_for_backward(keep)
        y = x * keep
        y *= self.scale
        return y

    def backward(self, gy):
        (keep,) = self.saved_arrays
        gx = gy * keep
        gx *= self.scale
        assert gx.shape == gy.shape
        return gx


def dropout(x: Tensor, p: float = 0.5, training: bool = True, rng=None, batch_slice=None, *,
            inplace: bool = False) -> Tensor:
    """Inverted dropout; the identity when ``training`` is False or p == 0.

    Args:
        x: input tensor, any shape; N may be 0 (with batch_slice too: the process
            still draws the global batch's numbers, so the others' masks stay right).
        p: probability of zeroing an element, in [0, 1]; p = 1 zeros everything.
        training: apply dropout only in training mode.
        rng: a ``numpy.random.Generator``; required in training mode (explicit
            randomness keeps runs reproducible).
        batch_slice: None, or (start, total) when x holds rows start..start+N of a
            global batch of ``total`` rows split over data-parallel processes: the
            mask is drawn for the global batch and these rows kept, so every
            process draws the same numbers and together they apply exactly the
            mask one process would.
        inplace: PyTorch's argument, accepted so that its calls run (keyword only);
            minidl always returns a new Tensor and leaves x as it is.

    Differences from PyTorch, on purpose: the fourth positional argument is ``rng``
    (PyTorch's is ``inplace``), and training needs that explicit generator where
    PyTorch draws from a global one.
    """
    return _dropout("dropout", x, p, training, rng, batch_slice, channels=False)


def dropout2d(x: Tensor, p: float = 0.5, training: bool = True, rng=None, batch_slice=None, *,
              inplace: bool = False) -> Tensor:
    """Channel dropout: zero each (image, channel) map with probability p, scale the rest by 1/(1-p).

    As ``torch.nn.functional.dropout2d`` for batches of images. Args as ``dropout``
    (with the same two differences from PyTorch); x must be (N, C, H, W).

    Shapes: x (N, C, H, W) -> same; a channel's H x W values are kept or zeroed together.
    """
    if x.ndim != 4:
        raise ValueError(f"dropout2d: expected input (N, C, H, W), got {tuple(x.shape)}")
    return _dropout("dropout2d", x, p, training, rng, batch_slice, channels=True)


def _dropout(fn: str, x, p, training, rng, batch_slice, channels: bool):
    """Both dropouts after their arguments are checked (``fn`` names the caller in errors)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{fn}: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if rng is None:
        raise ValueError(f"{fn}: training mode needs an explicit rng (numpy.random.Generator)")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{fn}: rng must be a numpy.random.Generator, got {rng!r} (the fourth positional "
                        "argument is rng; PyTorch's is inplace, which minidl takes by name)")
    if batch_slice is not None:
        start, total = batch_slice
        if not 0 <= start <= start + x.shape[0] <= total:
            raise ValueError(f"{fn}: batch_slice (start {start}, total {total}) does not hold the "
                             f"{x.shape[0]} rows of x")
    return Dropout(p, rng, batch_slice, channels)(x)
