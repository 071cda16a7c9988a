"""``nll_loss`` and ``mse_loss``: losses written as compositions of autograd's operations (and ``one_hot``).

Neither has a Function of its own: indexing, multiplication and sums already have
backwards, so autograd derives these losses' gradients from the expressions below,
which read like their definitions. (Cross-entropy, in loss.py, has a Function of its own
because its fused gradient, softmax - onehot, is cheaper and more exact than the
composition.) The options and their checks are cross-entropy's.

nll_loss, with log-probabilities x (a class axis 1) and class indices y, PyTorch's:
    loss_i = -w[y_i] * x[i, y_i]   (0 where y_i == ignore_index)
    "mean": sum_i loss_i / sum_i w[y_i] over the samples not ignored; "sum"; "none".
mse_loss: (x - t)^2 elementwise, then its mean, its sum, or nothing.
"""
from __future__ import annotations

from .. import backend
from ..autograd import Tensor
from .loss import _device, check_labels, check_options, class_weights, label_array
from .shape import permute, reshape


def nll_loss(input: Tensor, target, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
             reduction: str = "mean") -> Tensor:
    """The negative log-likelihood of class indices under log-probabilities (PyTorch's ``nll_loss``).

    Use it after ``log_softmax``: ``nll_loss(log_softmax(x, dim=1), y)`` is ``cross_entropy(x, y)``.

    Args:
        input: log-probabilities (N, K), (N, K, d1, ..., dk) or (K,) for one sample.
        target: class indices (N,), (N, d1, ..., dk) or (), in [0, K) or ``ignore_index``.
        weight, size_average, ignore_index, reduce, reduction: as ``cross_entropy``.
    Shapes: "none" gives (N, d1, ..., dk) (or () for one sample); the others a scalar.
    """
    reduction = check_options("nll_loss", size_average, reduce, reduction, 0.0)
    if input.ndim < 1:
        raise ValueError(f"nll_loss: expected input (N, K, ...) or (K,), got shape {tuple(input.shape)}")
    if input.dtype.kind != "f":
        raise ValueError(f"nll_loss: expected floating-point log-probabilities, got dtype {input.dtype}")
    labels = target.data if isinstance(target, Tensor) else label_array(target)
    if input.ndim == 1:   # one sample: a batch of one, and back
        loss = nll_loss(reshape(input, (1,) + tuple(input.shape)), labels.reshape((1,) + tuple(labels.shape)),
                        weight, None, ignore_index, None, reduction)
        return reshape(loss, ()) if reduction == "none" else loss
    k, device, xp = input.shape[1], _device(input), backend.get_array_module(input.data)
    check_labels("nll_loss", labels, tuple(input.shape), ignore_index)
    labels = backend.to_device(labels, device).reshape(-1)
    # (N, K, d1, ...) -> (N, d1, ..., K) -> (M, K): one row of log-probabilities per sample
    rows = reshape(permute(input, (0,) + tuple(range(2, input.ndim)) + (1,)), (-1, k))
    kept = labels != ignore_index
    safe = xp.where(kept, labels, 0)                        # an ignored row reads class 0, weighted 0
    w = class_weights("nll_loss", weight, k, input.dtype, device)
    per_row = (kept if w is None else w[safe] * kept).astype(input.dtype)   # constants: no gradient
    losses = -rows[xp.arange(rows.shape[0]), safe] * per_row
    if reduction == "none":
        return reshape(losses, (input.shape[0],) + tuple(input.shape[2:]))
    total = losses.sum()
    if reduction == "sum":
        return total
    return total * (1.0 / float(per_row.sum()) if float(per_row.sum()) else float("nan"))


def mse_loss(input: Tensor, target, size_average=None, reduce=None, reduction: str = "mean") -> Tensor:
    """The squared error (input - target)^2, averaged, summed or kept per element (PyTorch's ``mse_loss``).

    Args:
        input: any shape. target: the same shape (a Tensor, which gets its gradient if it
            requires one, or an array or list, a constant).
        size_average, reduce, reduction: as ``cross_entropy``.
    Difference from PyTorch, on purpose: shapes that differ are refused, not broadcast
    with a warning (broadcasting a (N, 1) target against (N,) outputs is a classic bug).
    """
    reduction = check_options("mse_loss", size_average, reduce, reduction, 0.0)
    if not isinstance(target, Tensor):
        target = backend.to_device(label_array(target), _device(input)).astype(input.dtype, copy=False)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"mse_loss: input {tuple(input.shape)} and target {tuple(target.shape)} must have "
                         f"the same shape")
    diff = input - target
    squared = diff * diff
    if reduction == "none":
        return squared
    return squared.sum() if reduction == "sum" else squared.mean()


def one_hot(tensor, num_classes: int = -1) -> Tensor:
    """Class indices (any shape) as one-hot rows: (..., num_classes) int64, PyTorch's ``one_hot``.

    ``num_classes`` -1 takes the largest index + 1. No gradient (the input is integers).
    """
    labels = tensor.data if isinstance(tensor, Tensor) else label_array(tensor)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"one_hot: expected integer class indices, got dtype {labels.dtype}")
    xp = backend.get_array_module(labels)
    if num_classes == -1:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"one_hot: class indices must lie in [0, {num_classes}), got values from "
                         f"{int(labels.min())} to {int(labels.max())}")
    return Tensor((labels[..., None] == xp.arange(num_classes)).astype(xp.int64))
