"""Metrics over a loader: mean loss, and for classifiers top-1 and top-5 accuracy.

The counting stays on the device (NumPy or CuPy) until the end of a pass, so a GPU
is never stopped to read a number per batch; under data parallelism the sums are
taken over all processes.
"""
from __future__ import annotations

import numpy as np

from . import backend
from . import functional as F
from .autograd import Tensor, no_grad
from .nn.fuse import fuse_for_inference


def correct_counts(logits, labels, ks=(1,)):
    """How many rows have their label among the k highest logits, for each k in ``ks``.

    Args:
        logits: (N, K) raw array (NumPy or CuPy).
        labels: (N,) integer array on the same device.
        ks: the k values.
    Returns:
        an int64 array (len(ks),) on the logits' device: counting stays there, so a
        GPU is not stopped to read a number per batch. Top-1 uses argmax (ties go to
        the lowest index); top-k counts a row when fewer than k classes score
        strictly higher than the label, which needs no sort.
    """
    # logits (N,K), labels (N,) -> label score (N,1) -> rank (N,) -> counts (len(ks),)
    xp = backend.get_array_module(logits)
    counts = []
    for k in ks:
        if k == 1:
            counts.append((logits.argmax(axis=1) == labels).sum())
        else:
            label_score = logits[xp.arange(logits.shape[0]), labels][:, None]
            counts.append(((logits > label_score).sum(axis=1) < k).sum())
    return xp.stack(counts).astype(np.int64)


def count_correct(logits, labels, k: int = 1) -> int:
    """``correct_counts`` for one k, as a Python int."""
    return int(correct_counts(logits, labels, (k,))[0])


def is_classification(outputs, targets) -> bool:
    """Whether accuracy applies: outputs (N, K) scores and targets (N,) integer class indices."""
    return (outputs.ndim == 2 and getattr(targets, "ndim", None) == 1 and targets.dtype.kind in "iu"
            and targets.shape[0] == outputs.shape[0])


def batch_sums(loss, outputs, targets, ks=(1,)):
    """(loss sum, correct count for each k, rows) of a batch, as a float64 array on the device.

    Args:
        loss: the batch's mean loss (a scalar Tensor), or None for an empty batch.
        outputs: the model's output array (N, ...); targets: (N, ...).
        ks: the top-k accuracies to count; they are NaN where accuracy does not
            apply (``is_classification``) and 0 for an empty batch.
    Returns:
        (2 + len(ks),) float64: what a pass sums over batches (and processes).
    """
    xp = backend.get_array_module(outputs)
    targets = targets.data if isinstance(targets, Tensor) else targets
    n = int(outputs.shape[0])
    if n == 0:
        return xp.zeros(2 + len(ks))
    if is_classification(outputs, targets):
        correct = correct_counts(outputs, targets, ks).astype(np.float64)
    else:
        correct = xp.full(len(ks), np.nan)
    return xp.concatenate([loss.data.astype(np.float64).reshape(1) * n, correct, xp.asarray([float(n)])])


TTA_LEVELS = (0, 1, 2)


def tta_logits(net, x, level: int = 0):
    """``net``'s logits for ``x`` averaged over test-time augmentations (airbench's levels).

    level 0: net(x). level 1: the mean over x and its mirror image (left-right).
    level 2: half the level-1 logits, plus half their mean over two translations of x by
    one pixel (down-right and up-left, the border reflected): six passes in all.
    A network trained on flipped and translated images has learnt to answer alike for
    them; averaging its answers smooths out the errors it makes on one view.

    Args:
        net: a callable model; x: a Tensor (N, C, H, W) (gradients are not needed: call
            under ``no_grad``).
    Returns:
        the logits Tensor (N, K).
    """
    # x (N,C,H,W) -> views (N,C,H,W) each -> logits (N,K) averaged
    if level not in TTA_LEVELS:
        raise ValueError(f"tta_logits: level must be one of {TTA_LEVELS}, got {level!r}")
    data = x.data if isinstance(x, Tensor) else x
    xp = backend.get_array_module(data)

    def mirrored(images):
        return (net(Tensor(images)) + net(Tensor(xp.ascontiguousarray(images[:, :, :, ::-1])))) * 0.5

    if level == 0:
        return net(x if isinstance(x, Tensor) else Tensor(x))
    logits = mirrored(data)
    if level == 2:
        h, w = data.shape[2:]
        padded = xp.pad(data, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
        shifted = (mirrored(xp.ascontiguousarray(padded[:, :, :h, :w]))
                   + mirrored(xp.ascontiguousarray(padded[:, :, 2:, 2:]))) * 0.5
        logits = (logits + shifted) * 0.5
    return logits


def evaluate(model, loader, parallel=None, loss_fn=None, fuse: bool = True, tta: int = 0) -> dict:
    """Mean loss, top-1 and top-5 accuracy of ``model`` over one pass of ``loader``.

    Runs in eval mode (dropout off, BatchNorm on running statistics) under
    ``no_grad``; the model's previous mode is restored afterwards. The sums stay on
    the device until the end: one transfer per evaluation, not per batch.

    Args:
        parallel: a ``minidl.distributed.DataParallel`` when each process evaluates
            its shard of ``loader``: the sums are then taken over all processes.
        loss_fn: ``loss_fn(outputs, targets)`` -> the batch's mean loss (a scalar
            Tensor); default ``F.softmax_cross_entropy``.
        fuse: run ``nn.fuse_for_inference(model)``, a copy with the batch norms folded
            and the ReLUs fused (the same outputs to float32 rounding, fewer passes);
            False runs ``model`` itself.
        tta: test-time augmentation, a level of ``tta_logits`` (0: none); the loss is
            that of the averaged logits.
    Returns:
        {"loss": float, "acc": float, "top5": float}; accuracies are fractions in
        [0, 1], NaN when the outputs are not (N, K) class scores for integer labels.
    """
    loss_fn = F.softmax_cross_entropy if loss_fn is None else loss_fn
    if tta not in TTA_LEVELS:
        raise ValueError(f"evaluate: tta must be one of {TTA_LEVELS}, got {tta!r}")
    was_training = model.training
    model.eval()
    net = fuse_for_inference(model) if fuse else model
    totals = None  # (loss sum, top-1, top-5, images) on the device, float64
    try:
        with no_grad():
            for x, y in loader.epoch_batches(0):
                if int(y.shape[0]) == 0:  # this process holds none of a short last batch
                    batch = backend.get_array_module(x.data).zeros(4)
                else:
                    outputs = tta_logits(net, x, tta)
                    batch = batch_sums(loss_fn(outputs, y), outputs.data, y, (1, 5))
                totals = batch if totals is None else totals + batch
    finally:
        model.train(was_training)
    if totals is None:
        raise ValueError("evaluate: the loader yielded no samples")
    if parallel is not None:
        parallel.all_reduce(totals)
    loss_sum, top1, top5, seen = (float(v) for v in backend.to_numpy(totals))
    if seen == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    return {"loss": loss_sum / seen, "acc": top1 / seen, "top5": top5 / seen}
