"""Classification metrics over a loader: mean loss, top-1 and top-5 accuracy.

The counting stays on the device (NumPy or CuPy) until the end of a pass, so a GPU
is never stopped to read a number per batch; under data parallelism the sums are
taken over all processes.
"""
from __future__ import annotations

import numpy as np

from . import backend
from . import functional as F
from .autograd import no_grad


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


def evaluate(model, loader, parallel=None) -> dict:
    """Mean loss, top-1 and top-5 accuracy of ``model`` over one pass of ``loader``.

    Runs in eval mode (dropout off, BatchNorm on running statistics) under
    ``no_grad``; the model's previous mode is restored afterwards. The sums stay on
    the device until the end: one transfer per evaluation, not per batch.

    Args:
        parallel: a ``minidl.distributed.DataParallel`` when each process evaluates
            its shard of ``loader``: the sums are then taken over all processes.
    Returns:
        {"loss": float, "acc": float, "top5": float}; accuracies are fractions in [0, 1].
    """
    was_training = model.training
    model.eval()
    totals = None  # (loss sum, top-1, top-5, images) on the device, float64
    try:
        with no_grad():
            for x, y in loader.epoch_batches(0):
                xp = backend.get_array_module(x.data)
                n = int(y.shape[0])
                if n == 0:  # this process holds none of a short last batch
                    batch = xp.zeros(4)
                else:
                    logits = model(x)
                    loss = F.softmax_cross_entropy(logits, y).data.astype(np.float64) * n
                    batch = xp.concatenate([loss.reshape(1), correct_counts(logits.data, y, (1, 5)).astype(np.float64),
                                            xp.asarray([float(n)])])
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
