"""Large dense layers split over the processes of one host: no all-reduce of their weight gradients.

A dense layer's weight gradient over a batch is a sum of outer products,
gW = G^T X, with G (B, out) the output gradients and X (B, in) the inputs: its
*sufficient factors* (Xie et al., "Distributed machine learning via sufficient
factor broadcasting", 2016). For AlexNet's fc6 a process's 16 rows of factors hold
16 x (4,096 + 9,216) numbers, 180 times fewer than the 37.7M of the gradient that
an all-reduce would move; fc6 and fc7 are 96% of AlexNet's 217 MB of gradients.

So, for processes on one host, each converted layer (``FactorSharedLinear``) works
through shared memory (``_shm.HostMemory``: every process's segment mapped into all):

* forward (inside ``DataParallel.batch``): each process writes its input rows X
  into its segment and raises a flag; then computes the output columns it owns for
  the whole global batch, X_all @ W[own]^T + b[own], the layer split by output rows
  as in Krizhevsky's "one weird trick" (2014), and takes its rows of every process's
  columns;
* backward: the input gradient as usual (gy @ W); instead of the weight gradient,
  each process writes G / processes beside X and raises a flag; once all are there
  it computes the rows of the global gradient that it owns, G_all[:, own]^T @ X_all,
  into one gradient array that all processes share;
* ``finish`` (in ``GradientReducer.wait``) waits until every process has written
  its rows and points ``weight.grad`` at the shared array. Every process then runs
  the same optimizer step on the same numbers: the weights stay equal everywhere.

The products are the ones one process computes on the whole batch (the global
batch's rows in rank order, the same sums of the same terms), cut into 1/N of the
weights' rows each; products with N times more rows also run faster. Memory: one
gradient per host instead of one per process.

Reuse needs no barrier of its own: a process overwrites its slots only in the next
step, after ``finish`` saw every process done reading them, and its gradient rows
only once every process has published the next step's factors, which each does
after its optimizer step has read the gradient. Flags carry the step's number; a
step opens in ``prepare`` (``DataParallel.batch`` or ``backward``), closes in ``finish``.
"""
from __future__ import annotations

import copy

import time

import numpy as np

from .. import nn
from ..autograd import Function, Tensor, is_grad_enabled
from ..functional.shape import reshape
from ..kernels import dispatch
from ..kernels.cpu.threads import matmul, parallel_map, workers
from ._shm import HostMemory

FACTOR_MIN_WEIGHTS = 2**22   # smaller dense layers stay in the buckets: their all-reduce takes milliseconds


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
    """Forward and weight gradients of ``layers`` (FactorSharedLinear) over the processes of one host.

    Collective: every process of ``world`` (all on one host) builds it with the same
    layers. Per step: ``prepare(total)``, each layer's ``forward`` and ``publish``
    (from its backward), ``progress`` whenever convenient, ``finish`` before the
    optimizer step.
    """

    def __init__(self, world, layers: list):
        self.memory = HostMemory(world.comm)
        self.rank, self.size = self.memory.rank, self.memory.size
        self.layers = layers
        count = len(layers)
        self.flag_inputs, self.flag_outputs = self.memory.claim_flags(count), self.memory.claim_flags(count)
        self.flag_factors, self.flag_rows = self.memory.claim_flags(count), self.memory.claim_flags(count)
        self.counts = self.memory.allocate(8 * count, np.int64)   # counts[q][i]: process q's rows of layer i
        self.grads = []   # per layer: the whole gradient, in process 0's segment, shared by all
        for layer in layers:
            w = layer.weight.data
            segment = self.memory.allocate(w.nbytes if self.rank == 0 else 0, w.dtype)[0]
            self.grads.append(segment.reshape(w.shape))
        self.parts = [[slice(layer.out_features * q // self.size, layer.out_features * (q + 1) // self.size)
                       for q in range(self.size)] for layer in layers]   # output rows each process owns
        self.capacity, self.slots = 0, None
        self.step, self.open = 0, False
        self.forwarded = self.published = self.computed = [False] * count

    # ---- the step ---------------------------------------------------------------
    def prepare(self, total: int) -> None:
        """Open a step of ``total`` global rows, unless one is open (collective: every process, the same total)."""
        if total > self.capacity:   # room for up to `total` rows per process (every process grows alike)
            self.capacity = max(int(total), 2 * self.capacity)
            self.slots = [self.memory.allocate(self.capacity * self._width(i) * layer.weight.data.itemsize,
                                               layer.weight.data.dtype) for i, layer in enumerate(self.layers)]
        if self.open:
            return
        self.step, self.open = self.step + 1, True
        count = len(self.layers)
        self.forwarded, self.published, self.computed = [False] * count, [False] * count, [False] * count

    def _width(self, index: int) -> int:
        layer = self.layers[index]
        return layer.in_features + layer.out_features + max(p.stop - p.start for p in self.parts[index])

    def _slot(self, index: int, q: int):
        """Views of process q's slot of layer ``index``: X (capacity, in), G (capacity, out), Y (capacity, own).

        Y holds the output columns process q owns, for every row of the global batch.
        """
        layer, slot, cap = self.layers[index], self.slots[index][q], self.capacity
        a, b = cap * layer.in_features, cap * (layer.in_features + layer.out_features)
        own = self.parts[index][q].stop - self.parts[index][q].start
        return (slot[:a].reshape(cap, layer.in_features), slot[a:b].reshape(cap, layer.out_features),
                slot[b:b + cap * own].reshape(cap, own))

    def _rows(self, index: int) -> list:
        return [int(self.counts[q][index]) for q in range(self.size)]

    def _wait(self, flag: int, poll=lambda: None) -> None:
        while not self.memory.all_raised(flag, self.step):
            poll()
            time.sleep(0)   # lets this process's other threads (the data prefetch) run meanwhile

    def _check_rows(self, n: int) -> None:
        if n > self.capacity:
            raise RuntimeError(f"FactorSharing: {n} rows exceed the step's {self.capacity}; call prepare(total)")

    # ---- forward ------------------------------------------------------------------
    def forward(self, index: int, x, weight, bias):
        """Layer ``index``'s outputs for this process's rows x (n, in), by output rows; None outside a step.

        Returns:
            y (n, out) = x @ weight.T + bias, or None when no step is open (the
            caller then computes y alone, and backward sends x with the factors).
        """
        if not self.open or self.forwarded[index]:
            return None
        n = x.shape[0]
        self._check_rows(n)
        self._slot(index, self.rank)[0][:n] = x
        self.counts[self.rank][index] = n
        self.forwarded[index] = True
        self.memory.raise_flag(self.flag_inputs[index], self.step)
        self._wait(self.flag_inputs[index])
        rows = self._rows(index)
        x_all = np.concatenate([self._slot(index, q)[0][:c] for q, c in enumerate(rows)])
        own = self.parts[index][self.rank]
        ys = self._slot(index, self.rank)[2][:len(x_all)]
        _matmul_into(x_all, weight[own].T, ys)   # (n_total, in) @ (in, own): my columns, every row
        if bias is not None:
            ys += bias[own]
        self.memory.raise_flag(self.flag_outputs[index], self.step)
        self._wait(self.flag_outputs[index])
        start = sum(rows[:self.rank])   # my rows among the global batch's, in rank order
        y = np.empty((n, weight.shape[0]), dtype=ys.dtype)
        for q, part in enumerate(self.parts[index]):
            y[:, part] = self._slot(index, q)[2][start:start + n]
        return y

    # ---- backward -----------------------------------------------------------------
    def publish(self, index: int, x, gy) -> None:
        """This process's factors of layer ``index``: inputs x (n, in) and output gradients gy (n, out).

        x is None when this step's split forward wrote it already; both are None for
        a layer that backward did not reach (no rows).
        """
        if self.published[index]:
            raise RuntimeError(f"{type(self.layers[index]).__name__}: run twice in one step; a layer split over "
                               "the processes runs once per forward and backward (DataParallel(share_factors="
                               "False) lifts this)")
        xs, gs, _ = self._slot(index, self.rank)
        n = 0 if gy is None else gy.shape[0]
        self._check_rows(n)
        if n:
            if x is not None:
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
        # every process's factors in rank order: X_all (n_total, in), G_all[:, own] (n_total, own)
        own, rows = self.parts[index][self.rank], self._rows(index)
        xs = np.concatenate([self._slot(index, q)[0][:c] for q, c in enumerate(rows)])
        gs = np.concatenate([self._slot(index, q)[1][:c, own] for q, c in enumerate(rows)])
        out = self.grads[index][own]
        if len(xs):
            _matmul_into(gs.T, xs, out)   # (own, n_total) @ (n_total, in): my rows of G^T X
        else:
            out[...] = 0
        self.computed[index] = True
        self.memory.raise_flag(self.flag_rows[index], self.step)

    def finish(self, poll=lambda: None) -> None:
        """Wait until every process has computed its rows; then each layer's ``weight.grad`` is the shared gradient.

        ``poll`` runs while waiting (the reducer's MPI requests progress there: a
        process must never wait here while another needs it to move an all-reduce on).
        Outside a step (no ``prepare`` since the last ``finish``) there is nothing to do.
        """
        if not self.open:
            return
        for index, published in enumerate(self.published):
            if not published:   # backward did not reach the layer: no rows from this process
                self.publish(index, None, None)
        for index in range(len(self.layers)):
            while not self.computed[index]:
                self.progress()
                if not self.computed[index]:
                    poll()
                    time.sleep(0)
            self._wait(self.flag_rows[index], poll)
        for layer, grad in zip(self.layers, self.grads):
            layer.weight.grad = Tensor(grad)
        self.open = False


class _SplitLinear(Function):
    # x (N, in), W (out, in), b (out,) -> y (N, out) = x @ W.T + b, by output rows over the processes;
    # backward: gx = gy @ W and gb = sum of gy here, gW from every process's factors (x, gy).
    def __init__(self, sharing: FactorSharing, index: int):
        self.sharing, self.index = sharing, index

    def forward(self, x, weight, bias=None):
        self.fast = dispatch.linear(x) is not None   # the CPU's split products, else the reference's
        self.x, self.weight = x, weight
        y = self.sharing.forward(self.index, x, weight, bias)
        self.split = y is not None   # then the inputs are in shared memory already
        if y is None:   # outside DataParallel.batch (or run twice): this process's rows alone, as F.linear
            y = matmul(x, weight.T) if self.fast else x @ weight.T
            if bias is not None:
                y += bias
        return y

    def backward(self, gy):
        need_x = self.needs_input_grad[0]
        need_b = len(self.needs_input_grad) == 3 and self.needs_input_grad[2]
        gx = None
        if need_x:
            gx = matmul(gy, self.weight) if self.fast else gy @ self.weight
        assert gx is None or gx.shape == self.x.shape
        self.sharing.publish(self.index, None if self.split else self.x, gy)
        self.x = self.weight = None
        if len(self.needs_input_grad) == 2:
            return gx, None
        return gx, None, (gy.sum(axis=0) if need_b else None)


class FactorSharedLinear(nn.Linear):
    """An ``nn.Linear`` that a ``FactorSharing`` runs split by output rows over the processes of a host.

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

    def __deepcopy__(self, memo):
        """A copy is the plain ``nn.Linear`` (copied parameters): the sharing belongs to the running
        processes and their shared memory (``nn.fuse_for_inference`` copies a model this way)."""
        plain = nn.Linear.__new__(nn.Linear)
        nn.Module.__init__(plain)
        memo[id(self)] = plain
        plain.in_features, plain.out_features = self.in_features, self.out_features
        plain.weight = copy.deepcopy(self.weight, memo)
        plain.bias = None if self.bias is None else copy.deepcopy(self.bias, memo)
        plain.training = self.training
        return plain

    def forward(self, x):
        if not (self.training and is_grad_enabled() and self.weight.requires_grad):
            return super().forward(x)
        shape = tuple(x.shape)
        if len(shape) != 2:   # leading axes as one batch axis, as F.linear does
            x = reshape(x, (-1, self.in_features))
        fn = _SplitLinear(self._sharing, self._index)
        y = fn(x, self.weight) if self.bias is None else fn(x, self.weight, self.bias)
        return y if len(shape) == 2 else reshape(y, shape[:-1] + (self.out_features,))

    def extra_repr(self):
        return super().extra_repr() + ", split over the host's processes"
