"""Softmax cross-entropy, the loss for classification with integer labels."""
from __future__ import annotations

from .. import backend
from ..autograd import Function, Tensor
from .activation import log_softmax_array


class SoftmaxCrossEntropy(Function):
    # logits (N, K), labels (N,) ints in [0, K) -> loss () = mean_n -log softmax(logits)[n, label_n]
    # Fusing softmax into the loss makes the gradient simply (softmax - onehot) / N
    # and keeps logits of +-1000 finite: only log-softmax of shifted logits is formed.
    def forward(self, logits, labels):
        xp = backend.get_array_module(logits)
        n = logits.shape[0]
        log_p = log_softmax_array(logits, axis=1)
        self.save_for_backward(log_p, labels)
        return -log_p[xp.arange(n), labels].mean()

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
        logits: (N, K) float tensor of unnormalised scores.
        labels: (N,) integer class indices in [0, K), a Tensor or an array.
    Returns:
        a scalar tensor.
    """
    label_array = labels.data if isinstance(labels, Tensor) else labels
    label_array = backend.to_device(label_array, logits.device)
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy: expected logits of shape (N, K), got {logits.shape}")
    n, k = logits.shape
    if label_array.ndim != 1 or label_array.shape[0] != n:
        raise ValueError(f"softmax_cross_entropy: expected labels of shape ({n},), got {tuple(label_array.shape)}")
    if label_array.dtype.kind not in "iu":
        raise ValueError(f"softmax_cross_entropy: labels must be integer class indices, got dtype {label_array.dtype}")
    if n and (int(label_array.min()) < 0 or int(label_array.max()) >= k):
        raise ValueError(f"softmax_cross_entropy: labels must lie in [0, {k}), got values from "
                         f"{int(label_array.min())} to {int(label_array.max())}")
    return SoftmaxCrossEntropy()(logits, label_array)
