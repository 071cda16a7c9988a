"""Softmax cross-entropy, the loss for classification with integer labels.

Labels are checked where they are, so that checking never costs a host
synchronisation per batch on a GPU:

* labels on the host (a NumPy array, a list, a CPU Tensor) are checked on the host
  before anything else, and a label outside [0, K) raises a ValueError naming the
  values (free: the host already has them);
* labels already on a GPU (what a ``DataLoader`` on CUDA delivers; the loader checks
  its labels once, on the host, when it is built) are checked on the device, inside
  the loss's own kernels: a label outside [0, K) makes the loss NaN instead of
  silently reading another class's score (CuPy wraps out-of-range indices), and the
  trainer's non-finite guard stops the run. Reading the range back with ``int()``
  would stall the GPU twice per batch.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from .activation import log_softmax_array


class SoftmaxCrossEntropy(Function):
    # logits (N, K), labels (N,) ints in [0, K) -> loss () = mean_n -log softmax(logits)[n, label_n]
    # Fusing softmax into the loss makes the gradient simply (softmax - onehot) / N
    # and keeps logits of +-1000 finite: only log-softmax of shifted logits is formed.
    def __init__(self, check_on_device: bool):
        self.check_on_device = check_on_device

    def forward(self, logits, labels):
        xp = backend.get_array_module(logits)
        n, k = logits.shape
        log_p = log_softmax_array(logits, axis=1)
        self.save_for_backward(log_p, labels)
        loss = -log_p[xp.arange(n), labels].mean()
        if self.check_on_device:  # labels unchecked so far: NaN unless all lie in [0, K), no sync
            valid = ((labels >= 0) & (labels < k)).all()
            loss = xp.where(valid, loss, loss.dtype.type(np.nan))
        return loss

    def backward(self, gy):
        log_p, labels = self.saved_arrays
        xp = backend.get_array_module(log_p)
        n = log_p.shape[0]
        g = xp.exp(log_p)
        g[xp.arange(n), labels] -= 1
        g *= gy / n
        assert g.shape == log_p.shape
        return g, None


def softmax_cross_entropy(logits: Tensor, labels) -> Tensor:
    """Mean over the batch of -log softmax(logits)[label].

    Args:
        logits: (N, K) float tensor of unnormalised scores, N >= 1.
        labels: (N,) integer class indices in [0, K), a Tensor or an array (or list).
            Host labels are range-checked on the host; labels on a GPU are checked
            there without a host sync, and an out-of-range one makes the loss NaN
            (see the module docstring).
    Returns:
        a scalar tensor.
    Raises:
        ValueError for logits that are not 2-D, an empty batch, labels of the wrong
        shape or dtype, and host labels outside [0, K).
    """
    label_array = labels.data if isinstance(labels, Tensor) else labels
    if not backend.is_array(label_array):
        label_array = np.asarray(label_array)
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy: expected logits of shape (N, K), got {logits.shape}")
    n, k = logits.shape
    if n == 0:
        raise ValueError("softmax_cross_entropy: got an empty batch (logits of shape (0, K)); the mean loss "
                         "of no samples is undefined")
    if label_array.ndim != 1 or label_array.shape[0] != n:
        raise ValueError(f"softmax_cross_entropy: expected labels of shape ({n},), got {tuple(label_array.shape)}")
    if label_array.dtype.kind not in "iu":
        raise ValueError(f"softmax_cross_entropy: labels must be integer class indices, got dtype {label_array.dtype}")
    on_host = backend.device_of(label_array).type == "cpu"
    if on_host and (int(label_array.min()) < 0 or int(label_array.max()) >= k):
        raise ValueError(f"softmax_cross_entropy: labels must lie in [0, {k}), got values from "
                         f"{int(label_array.min())} to {int(label_array.max())}")
    label_array = backend.to_device(label_array, logits.device)
    return SoftmaxCrossEntropy(check_on_device=not on_host)(logits, label_array)
