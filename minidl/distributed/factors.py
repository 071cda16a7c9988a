"""Large dense layers' weight gradients from their factors, shared in the host's memory: no all-reduce.

A dense layer's weight gradient over a batch is a sum of outer products,
gW = G^T X, with G (B, out) the output gradients and X (B, in) the inputs: its
*sufficient factors* (Xie et al., "Distributed machine learning via sufficient
factor broadcasting", 2016). For AlexNet's fc6 a process's 16 rows of factors hold
16 x (4,096 + 9,216) numbers, 180 times fewer than the 37.7M of the gradient that
an all-reduce would move, and the all-reduce of those gradients (fc6 and fc7 are
96% of AlexNet's 217 MB) was most of a data-parallel step's communication.

So, for processes on one host, each converted layer (``FactorSharedLinear``):

* in backward computes its input gradient as usual, and, instead of its weight
  gradient, writes its factors (X and G / processes) into this process's segment of
  shared memory (``_shm.HostMemory``) and raises a flag;
* once every process's factors of the step are there, each process computes the
  rows of the global gradient that it owns, G_all[:, own]^T @ X_all (the global
  batch's rows in rank order: the very products one process computes on the whole
  batch), into one gradient array that all processes share;
* ``finish`` (in ``GradientReducer.wait``) waits until every process has written its
  rows and points ``weight.grad`` at the shared array. Every process then runs the
  same optimizer step on the same numbers, so the weights stay equal everywhere.

Each process computes 1/N of the gradient's rows over the whole global batch:
the same multiplications as before, in products with N times more rows. Memory:
one gradient per host instead of one per process.

Reuse of the shared arrays needs no extra barrier: a process overwrites its factors
only after every process has finished computing from them (``finish`` waited for
that), and its gradient rows only once every process has published the next step's
factors, which each does after its optimizer step has read the gradient.
"""
from __future__ import annotations

import numpy as np

from .. import nn
from ..autograd import Function, Tensor, is_grad_enabled
from ..functional.basic import reshape
from ..kernels import dispatch
from ..kernels.cpu.threads import parallel_map, workers
from ._shm import HostMemory

FACTOR_MIN_WEIGHTS = 2**20   # smaller dense layers stay in the all-reduced buckets (little to gain)


def _matmul_into(a, b, out) -> None:
    """``out[...] = a @ b`` for 2-D arrays, in blocks of out's rows over the CPU workers."""
    count = workers()
    if count == 1 or out.shape[0] < 2 * count:
        np.matmul(a, b, out=out)
        return
    bounds = [out.shape[0] * i // (2 * count) for i in range(2 * count + 1)]
    parallel_map(lambda part: np.matmul(a[part], b, out=out[part]),
                 [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:]) if hi > lo])


class FactorSharing:
    """The weight gradients of ``layers`` (FactorSharedLinear) over the processes of one host.

    Collective: every process of ``world`` (all on one host) builds it with the same
    layers. Per step: ``prepare(total)`` before backward, ``publish`` from each
    layer's backward, ``progress`` whenever convenient, ``finish`` before the step.
    """

    def __init__(self, world, layers: list):
        self.memory = HostMemory(world.comm)
        self.rank, self.size = self.memory.rank, self.memory.size
        self.layers = layers
        self.flag_factors = self.memory.claim_flags(len(layers))
        self.flag_rows = self.memory.claim_flags(len(layers))
        self.counts = self.memory.allocate(8 * len(layers), np.int64)   # counts[q][i]: rows q published
        self.grads = []   # per layer: the whole gradient, in process 0's segment, shared by all
        for layer in layers:
            w = layer.weight.data
            segment = self.memory.allocate(w.nbytes if self.rank == 0 else 0, w.dtype)[0]
            self.grads.append(segment.reshape(w.shape))
        out = [layer.out_features for layer in layers]
        self.own = [slice(o * self.rank // self.size, o * (self.rank + 1) // self.size) for o in out]
        self.capacity, self.slots = 0, None
        self.step = 0
        self.published = self.computed = [False] * len(layers)

    # ---- per step -------------------------------------------------------------
    def prepare(self, total: int) -> None:
        """Start a step of ``total`` global rows (collective: every process passes the same total)."""
        if total > self.capacity:   # factor space for up to `total` rows per process
            self.capacity = max(int(total), 2 * self.capacity)
            self.slots = [self.memory.allocate(self.capacity * (layer.in_features + layer.out_features)
                                               * layer.weight.data.itemsize, layer.weight.data.dtype)
                          for layer in self.layers]
        self.step += 1
        self.published = [False] * len(self.layers)
        self.computed = [False] * len(self.layers)

    def _factors(self, index: int, q: int):
        """(X, G) views of process q's factor slot for layer ``index``: (capacity, in), (capacity, out)."""
        layer, slot = self.layers[index], self.slots[index][q]
        split = self.capacity * layer.in_features
        return (slot[:split].reshape(self.capacity, layer.in_features),
                slot[split:].reshape(self.capacity, layer.out_features))

    def publish(self, index: int, x, gy) -> None:
        """This process's factors of layer ``index`` for the step: inputs x (n, in), output gradients gy (n, out)."""
        if self.published[index]:
            raise RuntimeError(f"{type(self.layers[index]).__name__}: called twice in one step; a layer whose "
                               "gradients come from shared factors runs once per forward and backward "
                               "(DataParallel(share_factors=False) lifts this)")
        n = 0 if x is None else x.shape[0]
        if n > self.capacity:
            raise RuntimeError(f"FactorSharing: {n} rows exceed the step's {self.capacity}; call prepare(total)")
        xs, gs = self._factors(index, self.rank)
        if n:
            xs[:n] = x
            np.multiply(gy, gs.dtype.type(1.0 / self.size), out=gs[:n])   # the mean over processes, as the buckets
        self.counts[self.rank][index] = n
        self.published[index] = True
        self.memory.raise_flag(self.flag_factors[index], self.step)
        self.progress()

    def progress(self) -> None:
        """Compute this process's gradient rows of every layer whose factors are all published."""
        for index in range(len(self.layers)):
            if self.published[index] and not self.computed[index] \
                    and self.memory.all_raised(self.flag_factors[index], self.step):
                self._compute(index)

    def _compute(self, index: int) -> None:
        # factors of every process, in rank order: X_all (n_total, in), G_all[:, own] (n_total, own rows)
        counts = [int(self.counts[q][index]) for q in range(self.size)]
        parts = [self._factors(index, q) for q in range(self.size)]
        own = self.own[index]
        xs = np.concatenate([x[:n] for (x, _), n in zip(parts, counts)])
        gs = np.concatenate([g[:n, own] for (_, g), n in zip(parts, counts)])
        rows = self.grads[index][own]
        if len(xs):
            _matmul_into(gs.T, xs, rows)   # (own rows, n_total) @ (n_total, in): this process's rows of G^T X
        else:
            rows[...] = 0
        self.computed[index] = True
        self.memory.raise_flag(self.flag_rows[index], self.step)

    def finish(self, poll=lambda: None) -> None:
        """Wait until every process has computed its rows; then each layer's ``weight.grad`` is the shared gradient.

        A layer that backward did not reach contributes no rows. ``poll`` runs while
        waiting (the reducer's MPI requests progress there: a process must never
        wait here while others need it to move an all-reduce on).
        """
        for index, published in enumerate(self.published):
            if not published:
                self.publish(index, None, None)
        pending = list(range(len(self.layers)))
        while pending:
            self.progress()
            pending = [i for i in pending if not self.memory.all_raised(self.flag_rows[i], self.step)]
            if pending:
                poll()
        for layer, grad in zip(self.layers, self.grads):
            layer.weight.grad = Tensor(grad)


class _FactorLinear(Function):
    # x (N, in), W (out, in), b (out,) -> y (N, out) = x @ W.T + b;
    # backward: gx = gy @ W and gb = sum of gy here, gW from the factors (x, gy) of every process.
    def __init__(self, sharing: FactorSharing, index: int):
        self.sharing, self.index = sharing, index

    def forward(self, x, weight, bias=None):
        self.kernel = dispatch.linear(x)   # the CPU's split products, or None for the reference's
        self.x, self.weight = x, weight
        if self.kernel is not None:
            return self.kernel.forward(x, weight, bias)
        y = x @ weight.T
        return y if bias is None else y + bias

    def backward(self, gy):
        need_x = self.needs_input_grad[0]
        need_b = len(self.needs_input_grad) == 3 and self.needs_input_grad[2]
        if self.kernel is not None:
            gx, _, *gb = self.kernel.backward(gy, (need_x, False) + ((need_b,) if need_b else ()))
            gb = gb[0] if gb else None
        else:
            gx = gy @ self.weight if need_x else None
            gb = gy.sum(axis=0) if need_b else None
        assert gx is None or gx.shape == self.x.shape
        self.sharing.publish(self.index, self.x, gy)
        self.x = self.weight = None
        return (gx, None) if len(self.needs_input_grad) == 2 else (gx, None, gb)


class FactorSharedLinear(nn.Linear):
    """An ``nn.Linear`` whose weight gradient a ``FactorSharing`` forms from every process's factors.

    Made by ``DataParallel`` from an existing layer (``convert``): the same Parameter
    objects, name and place, so state_dict keys, optimizers and checkpoints are
    unchanged. Outside training (eval mode, ``no_grad``) it is the plain layer.
    """

    @classmethod
    def convert(cls, layer: nn.Linear, sharing: FactorSharing, index: int) -> "FactorSharedLinear":
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = layer.in_features, layer.out_features
        new.weight, new.bias = layer.weight, layer.bias
        new.training = layer.training
        object.__setattr__(new, "_sharing", sharing)
        object.__setattr__(new, "_index", index)
        return new

    def forward(self, x):
        if not (self.training and is_grad_enabled() and self.weight.requires_grad):
            return super().forward(x)
        shape = tuple(x.shape)
        if len(shape) != 2:   # leading axes as one batch axis, as F.linear does
            x = reshape(x, (-1, self.in_features))
        fn = _FactorLinear(self._sharing, self._index)
        y = fn(x, self.weight) if self.bias is None else fn(x, self.weight, self.bias)
        return y if len(shape) == 2 else reshape(y, shape[:-1] + (self.out_features,))

    def extra_repr(self):
        return super().extra_repr() + ", weight gradient from shared factors"
