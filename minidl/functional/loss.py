"""Cross-entropy, the loss for classification: PyTorch's ``cross_entropy`` and minidl's ``softmax_cross_entropy``.

With log-probabilities log_p = log_softmax(input) along the class axis 1, every
variant is one weighted sum per sample i (a row, or a pixel of (N, K, d1, ...) input),

    loss_i = -sum_c q[i, c] * log_p[i, c]

with a target weighting q built from the options (w: class weights, 1 without;
eps: label smoothing; K classes):

* class indices y_i: q[i, c] = (1 - eps) * w[y_i] * [c == y_i] + eps / K * w[c],
  and q[i] = 0 where y_i == ignore_index;
* class probabilities t (a target of the input's shape): q[i, c] = w[c] * ((1 - eps) * t[i, c] + eps / K).

"mean" divides the sum of the losses by sum_i w[y_i] over the samples not ignored
(class indices) or by the number of samples (probabilities): PyTorch's denominators.
An empty denominator (no samples, or every one ignored) gives NaN, as in PyTorch.
Backward needs no more: dloss/dlog_p[i, c] = -g_i q[i, c] (g: the upstream gradient
of sample i), then log-softmax's backward dx = d - softmax * sum_c d; with
probabilities, dloss/dt[i, c] = -g_i w[c] (1 - eps) log_p[i, c].

Labels are checked where they are, so that checking never costs a host
synchronisation per batch on a GPU:

* labels on the host (a NumPy array, a list, a CPU Tensor) are checked on the host
  before anything else, and a label outside [0, K) raises a ValueError naming the
  values (free: the host already has them);
* labels already on a GPU (what a ``DataLoader`` on CUDA delivers; the loader checks
  its labels once, on the host, when it is built) are checked on the device, inside
  the loss's own kernels: a label outside [0, K) makes its loss NaN instead of
  silently reading another class's score (CuPy wraps out-of-range indices), and the
  trainer's non-finite guard stops the run. Reading the range back with ``int()``
  would stall the GPU twice per batch.
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from .activation import log_softmax_array
from .shape import reshape

REDUCTIONS = ("mean", "sum", "none")


# ---- argument checks ---------------------------------------------------------------------

def per_class(k: int, ndim: int) -> tuple:
    """The shape (1, K, 1, ...) that lays a (K,) array along the class axis 1 of an ndim-D array."""
    return (1, k) + (1,) * (ndim - 2)


def label_array(values):
    """Labels or probabilities given as an array or a list, as an array (a list becomes NumPy)."""
    return values if backend.is_array(values) else np.asarray(values)


def _device(x):
    return backend.device_of(x.data if isinstance(x, Tensor) else x)


def check_options(fn: str, size_average, reduce, reduction, label_smoothing) -> str:
    """The reduction to use (PyTorch's rule for its deprecated size_average/reduce); the options checked."""
    if size_average is not None or reduce is not None:
        warnings.warn(f"{fn}: size_average and reduce are deprecated, as in PyTorch; use reduction",
                      DeprecationWarning, stacklevel=3)
        reduce = True if reduce is None else reduce
        size_average = True if size_average is None else size_average
        reduction = "none" if not reduce else ("mean" if size_average else "sum")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must be in [0, 1], got {label_smoothing}")
    return reduction


def class_weights(fn: str, weight, k: int, dtype, device):
    """``weight`` as a raw (K,) array of the scores' dtype on their device, or None."""
    if weight is None:
        return None
    w = weight.data if isinstance(weight, Tensor) else label_array(weight)
    if tuple(w.shape) != (k,) or w.dtype.kind not in "fiu":
        raise ValueError(f"{fn}: weight must be ({k},) numbers, one per class, got shape {tuple(w.shape)} "
                         f"and dtype {w.dtype}")
    return backend.to_device(w, device).astype(dtype, copy=False)


def check_labels(fn: str, labels, input_shape: tuple, ignore_index) -> bool:
    """Check class indices against scores of ``input_shape`` (N, K, *D); True when they are on the host.

    Host labels are checked for range too (values other than ``ignore_index`` in
    [0, K)); labels on a GPU are checked inside the loss (module doc).
    """
    k, expected = input_shape[1], input_shape[:1] + input_shape[2:]
    if tuple(labels.shape) != expected:
        either = f" (class indices) or {input_shape} (class probabilities)" if fn == "cross_entropy" else ""
        raise ValueError(f"{fn}: expected labels of shape {expected}{either}, got {tuple(labels.shape)}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{fn}: labels must be integer class indices, got dtype {labels.dtype}")
    on_host = backend.device_of(labels).type == "cpu"
    if on_host and labels.size:
        outside = (labels < 0) | (labels >= k)
        if ignore_index is not None:
            outside &= labels != ignore_index
        if outside.any():
            also, counted = "", labels
            if ignore_index is not None:
                also, counted = f" or be ignore_index ({ignore_index})", labels[labels != ignore_index]
            raise ValueError(f"{fn}: labels must lie in [0, {k}){also}, got values from "
                             f"{int(counted.min())} to {int(counted.max())}")
    return on_host


# ---- the loss --------------------------------------------------------------------------------


class CrossEntropy(Function):
    # logits (N,K,*D) [, probabilities t (N,K,*D)] -> log_p (N,K,*D) -> q (N,K,*D), the target
    # weighting -> loss_i (N,*D) = -sum_c q * log_p -> "none": (N,*D); "sum", "mean": ()
    # Class indices, when given, are the constant `labels` (N,*D); weight is a constant (K,).
    def __init__(self, labels, weight, ignore_index, reduction: str, label_smoothing: float,
                 check_on_device: bool = False):
        self.labels, self.weight, self.ignore_index = labels, weight, ignore_index
        self.reduction, self.eps, self.check_on_device = reduction, label_smoothing, check_on_device

    def _index_weighting(self, log_p):
        """q of class indices, and PyTorch's "mean" denominator: sum_i w[y_i] over the counted samples."""
        xp = backend.get_array_module(log_p)
        labels, k, eps = self.labels, log_p.shape[1], self.eps
        counted = xp.ones(labels.shape, dtype=bool) if self.ignore_index is None else labels != self.ignore_index
        self.in_range = (labels >= 0) & (labels < k)
        self.safe = xp.where(counted & self.in_range, labels, 0)   # every gather stays inside the K classes
        self.counted = counted
        self.w_label = counted.astype(log_p.dtype) if self.weight is None else self.weight[self.safe] * counted
        onehot = xp.arange(k).reshape(per_class(k, log_p.ndim)) == xp.expand_dims(self.safe, 1)
        q = onehot * xp.expand_dims((1.0 - eps) * self.w_label, 1)
        if eps:
            q = q + (eps / k) * self._class_weights(log_p) * xp.expand_dims(counted, 1)
        return q, self.w_label.sum()

    def _class_weights(self, log_p):
        """w as (1, K, 1, ...), or 1 without weights."""
        return 1.0 if self.weight is None else self.weight.reshape(per_class(log_p.shape[1], log_p.ndim))

    def forward(self, logits, target=None):
        xp = backend.get_array_module(logits)
        log_p = log_softmax_array(logits, axis=1)
        k, eps = log_p.shape[1], self.eps
        if target is None:
            q, denominator = self._index_weighting(log_p)
            # Each label's own score is gathered, not multiplied out of q: a -inf score
            # elsewhere must not turn 0 * -inf into NaN.
            picked = xp.take_along_axis(log_p, xp.expand_dims(self.safe, 1), axis=1).squeeze(1)
            losses = -(1.0 - eps) * self.w_label * picked
            if eps:
                losses = losses - (eps / k) * (log_p * self._class_weights(log_p)).sum(axis=1)
            losses = xp.where(self.counted, losses, losses.dtype.type(0))
            if self.check_on_device:   # labels checked here: an out-of-range one makes its loss NaN
                losses = xp.where(self.in_range | ~self.counted, losses, losses.dtype.type(np.nan))
        else:   # class probabilities
            q = target * (1.0 - eps) + eps / k if eps else target
            if self.weight is not None:
                q = q * self._class_weights(log_p)
            losses = -(q * log_p).sum(axis=1)
            denominator = log_p.dtype.type(losses.size)
        self.save_for_backward(log_p, q)
        self.denominator = denominator
        if self.reduction == "none":
            return losses
        total = losses.sum()
        if self.reduction == "sum":
            return xp.asarray(total)
        with np.errstate(divide="ignore", invalid="ignore"):   # 0 / 0: NaN, as PyTorch
            return xp.asarray(total / denominator)

    def backward(self, gy):
        log_p, q = self.saved_arrays
        xp = backend.get_array_module(log_p)
        if self.reduction == "none":
            g = gy
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                g = gy / self.denominator if self.reduction == "mean" else gy
            g = xp.broadcast_to(g, log_p.shape[:1] + log_p.shape[2:])
        if self.labels is not None:   # ignored samples send nothing (not 0 * inf when all are ignored)
            g = xp.where(self.counted, g, 0)
        d = -q * xp.expand_dims(g, 1)                            # dloss/dlog_p
        gx = d - xp.exp(log_p) * d.sum(axis=1, keepdims=True)   # through log-softmax
        assert gx.shape == log_p.shape
        if len(self.needs_input_grad) == 1:
            return gx
        gt = None
        if self.needs_input_grad[1]:   # probabilities: dloss/dt = -g (1 - eps) w log_p
            gt = -(1.0 - self.eps) * self._class_weights(log_p) * log_p * xp.expand_dims(g, 1)
            assert gt.shape == log_p.shape
        return gx, gt


class SoftmaxCrossEntropy(CrossEntropy):
    """``softmax_cross_entropy``'s case of CrossEntropy, (N, K) logits and a mean, under its own name in graphs."""

    def __init__(self, labels, check_on_device: bool):
        super().__init__(labels, None, None, "mean", 0.0, check_on_device)


def cross_entropy(input: Tensor, target, weight=None, size_average=None, ignore_index: int = -100,
                  reduce=None, reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """PyTorch's cross-entropy of the softmax of ``input`` against class indices or class probabilities.

    Args:
        input: unnormalised scores, (N, K), (N, K, d1, ..., dk) (a class axis 1, e.g.
            per pixel), or (K,) for one sample. N may be 0.
        target: class indices of shape (N,), (N, d1, ..., dk) or () (integers in
            [0, K) or ``ignore_index``; an array, list or Tensor), or class
            probabilities of input's shape (floats: a Tensor of input's dtype, which
            gets its gradient if it requires one, or an array or list, cast to that
            dtype). The shapes decide, as in PyTorch.
        weight: optional (K,) class weights (a constant: no gradient flows to it).
        size_average, reduce: PyTorch's deprecated spelling of ``reduction``; when
            either is given, it decides (with a DeprecationWarning).
        ignore_index: class indices equal to it count for nothing, in the loss and in
            "mean"'s denominator (with probability targets it must stay -100, as in PyTorch).
        reduction: "mean" (weighted mean, see the module doc), "sum" or "none"
            (a loss per sample: (N, d1, ..., dk), or () for one sample).
        label_smoothing: eps in [0, 1]: the target becomes (1 - eps) * target + eps / K.
    Returns:
        the loss Tensor.
    Raises:
        ValueError naming cross_entropy and the argument for shapes, dtypes and values
        it cannot take, and host labels outside [0, K) (other than ignore_index).
    """
    reduction = check_options("cross_entropy", size_average, reduce, reduction, label_smoothing)
    if input.ndim < 1:
        raise ValueError(f"cross_entropy: expected input (N, K, ...) or (K,), got shape {tuple(input.shape)}")
    if input.ndim == 1:   # one sample: a batch of one, and back
        target = target if isinstance(target, Tensor) else label_array(target)   # reshape needs a shape
        loss = cross_entropy(reshape(input, (1,) + tuple(input.shape)), reshape(target, (1,) + tuple(target.shape)),
                             weight, None, ignore_index, None, reduction, label_smoothing)
        return reshape(loss, ()) if reduction == "none" else loss
    k, device, dtype = input.shape[1], _device(input), input.dtype
    if dtype.kind != "f":
        raise ValueError(f"cross_entropy: expected floating-point input scores, got dtype {dtype}")
    weight = class_weights("cross_entropy", weight, k, dtype, device)
    if not isinstance(target, Tensor):
        target = label_array(target)
    if tuple(target.shape) == tuple(input.shape):
        if target.dtype.kind != "f":
            raise ValueError(f"cross_entropy: a target of input's shape {tuple(input.shape)} holds class "
                             f"probabilities and must be floating-point, got dtype {target.dtype}")
        if not isinstance(target, Tensor):   # a constant: in the scores' dtype, on their device
            target = backend.to_device(target, device).astype(dtype, copy=False)
        elif target.dtype != dtype:
            raise ValueError(f"cross_entropy: probabilities must share input's dtype {dtype}, got {target.dtype}")
        if ignore_index != -100:   # PyTorch refuses it too: no sample of a distribution can be ignored
            raise ValueError(f"cross_entropy: ignore_index ({ignore_index}) applies to class indices only, "
                             f"not to class probabilities (a target of input's shape)")
        return CrossEntropy(None, weight, None, reduction, label_smoothing)(input, target)
    labels = target.data if isinstance(target, Tensor) else target
    on_host = check_labels("cross_entropy", labels, tuple(input.shape), ignore_index)
    labels = backend.to_device(labels, device)
    return CrossEntropy(labels, weight, ignore_index, reduction, label_smoothing, check_on_device=not on_host)(input)


def softmax_cross_entropy(logits: Tensor, labels) -> Tensor:
    """Mean over the batch of -log softmax(logits)[label]: ``cross_entropy(logits, labels)`` for (N, K) logits.

    Args:
        logits: (N, K) float tensor of unnormalised scores, N >= 1.
        labels: (N,) integer class indices in [0, K), a Tensor or an array (or list).
            Host labels are range-checked on the host; labels on a GPU are checked
            there without a host sync, and an out-of-range one makes the loss NaN
            (see the module docstring).
    Returns:
        a scalar tensor.
    Raises:
        ValueError for logits that are not 2-D, an empty batch (where ``cross_entropy``
        returns PyTorch's NaN: a training loop's mean loss of no samples is a bug to
        report, not a number to step with; a data-parallel process with no rows uses
        ``cross_entropy(..., reduction="sum")`` and divides by the global count), labels
        of the wrong shape or dtype, and host labels outside [0, K).
    """
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy: expected logits of shape (N, K), got {logits.shape}")
    n = logits.shape[0]
    if n == 0:
        raise ValueError("softmax_cross_entropy: got an empty batch (logits of shape (0, K)); the mean loss "
                         "of no samples is undefined")
    array = labels.data if isinstance(labels, Tensor) else label_array(labels)
    on_host = check_labels("softmax_cross_entropy", array, tuple(logits.shape), None)
    array = backend.to_device(array, _device(logits))
    return SoftmaxCrossEntropy(array, check_on_device=not on_host)(logits)
