"""The gradient reducer: average gradients over all processes, in buckets, during backward.

After backward, every process holds the gradient of its own slice of the global
batch. Data parallelism needs their mean on every process before the optimizer
step. Sending each of AlexNet's 16 parameter gradients separately would pay a
collective's fixed cost 16 times; sending all at the end would leave the network
idle during backward. So, like Horovod's tensor fusion and PyTorch DDP's buckets:

* the parameters are packed, in reverse registration order (the order backward
  finishes them: the last layer's gradients are final first), into buckets of
  about ``bucket_bytes`` each; a bucket is one flat array, allocated once;
* a post-accumulate-grad hook on each parameter (``minidl.autograd``) counts down
  its bucket; when every gradient in a bucket is final, the bucket is packed and a
  non-blocking all-reduce of it starts, while backward goes on with earlier layers;
* ``wait()``, before the optimizer step, starts what has not started (parameters
  that backward did not reach contribute zeros), waits for every bucket and points
  each ``p.grad`` at its part of the bucket. Gradients are divided by the number of
  processes as they are packed, so the sum the all-reduce forms is the mean.

Buckets start strictly in order, on every process alike: collectives must be
called in the same order everywhere, and backward finishes the same parameters in
the same order on every process. So a parameter that backward does not reach
holds back its bucket, and every later one, until ``wait()``.

Exactness: a sum over processes adds the same numbers as one process would, but in
another grouping (each process first sums its own slice), so results agree with a
one-process run to rounding, not bit for bit.
"""
from __future__ import annotations

import time

from .. import backend
from ..autograd import Tensor
from .collectives import iall_reduce
from .world import World, get_world as _current_world

DEFAULT_BUCKET_BYTES = 25 * 2**20  # PyTorch DDP's default: large enough to reach full bandwidth


class _Bucket:
    """Parameters whose gradients travel together in one flat array."""

    def __init__(self, params: list):
        self.params = params
        self.sizes = [int(p.data.size) for p in params]
        first = params[0].data
        with backend.device_context(backend.device_of(first)):
            self.flat = backend.get_array_module(first).empty(sum(self.sizes), dtype=first.dtype)
        self.pending = len(params)
        self.request = None

    @property
    def nbytes(self) -> int:
        return int(self.flat.nbytes)

    def pack(self, scale: float) -> None:
        """Copy every gradient, times ``scale``, into the flat array (zeros for a parameter without one).

        Scaling by 1/N on the way in makes the sum over processes the mean, in the
        same pass as the copy (for N a power of two, (a/N + b/N) == (a + b)/N exactly).
        """
        xp = backend.get_array_module(self.flat)
        start = 0
        for p, size in zip(self.params, self.sizes):
            part = self.flat[start:start + size]
            if p.grad is None:
                part[...] = 0
            else:
                xp.multiply(p.grad.data.reshape(-1), self.flat.dtype.type(scale), out=part)
            start += size

    def unpack(self) -> None:
        """Point each ``p.grad`` at its part of the reduced flat array (the mean over processes).

        Views, not copies: nothing is allocated per step, and no two parameters can
        share a gradient array that a copy back would write twice. The flat array
        is refilled only by the next step's backward, after the optimizer step.
        """
        start = 0
        for p, size in zip(self.params, self.sizes):
            p.grad = Tensor(self.flat[start:start + size].reshape(p.data.shape))
            start += size


class GradientReducer:
    """Averages the gradients of ``params`` over all processes (see the module doc).

    Args:
        params: the model's parameters in registration order (``model.parameters()``);
            those that do not require grad are left out.
        bucket_bytes: target size of a bucket; a parameter larger than this gets a
            bucket of its own.
        overlap: start each bucket's all-reduce during backward as soon as it is
            ready (True) or all of them in ``wait()`` (False).
        world: the World (default: the current one).
        factors: a ``FactorSharing`` that forms the gradients of some dense layers'
            weights instead (those weights must not be among ``params``); it is
            driven from the same hooks and finished in ``wait()``.

    Use: one backward per step, then ``wait()``, then the optimizer step.
    ``stats`` holds the last step's facts: seconds blocked in ``wait()``, and how
    many buckets (and bytes) had started their all-reduce during backward.
    """

    def __init__(self, params, bucket_bytes: int = DEFAULT_BUCKET_BYTES, overlap: bool = True,
                 world: World | None = None, factors=None):
        if bucket_bytes <= 0:
            raise ValueError(f"GradientReducer: bucket_bytes must be positive, got {bucket_bytes}")
        self.world = world or _current_world()
        self.overlap, self.factors = bool(overlap), factors
        params = [p for p in params if p.requires_grad]
        if not params and factors is None:
            raise ValueError("GradientReducer: got no parameter that requires grad")
        self.buckets = self._make_buckets(params[::-1], bucket_bytes) if params else []
        self._bucket_of = {id(p): b for b in self.buckets for p in b.params}
        self._next = 0  # the next bucket to start
        self._handles = [p.register_post_accumulate_grad_hook(self._on_grad_ready) for p in params]
        self.stats = {"buckets": len(self.buckets), "bytes": sum(b.nbytes for b in self.buckets),
                      "started_in_backward": 0, "bytes_started_in_backward": 0, "wait_seconds": 0.0}

    @staticmethod
    def _make_buckets(params: list, bucket_bytes: int) -> list:
        """Consecutive runs of ``params`` of about ``bucket_bytes``, one device and dtype per bucket."""
        buckets, current, size = [], [], 0
        for p in params:
            nbytes = int(p.data.nbytes)
            same_kind = not current or (p.data.dtype == current[0].data.dtype and p.device == current[0].device)
            if current and (size + nbytes > bucket_bytes or not same_kind):
                buckets.append(_Bucket(current))
                current, size = [], 0
            current.append(p)
            size += nbytes
        buckets.append(_Bucket(current))
        return buckets

    def _on_grad_ready(self, param) -> None:
        if self.world.size == 1:
            return
        bucket = self._bucket_of[id(param)]
        bucket.pending -= 1
        if self.overlap:
            self._start_ready()
            self._poll()
            if self.factors is not None:
                self.factors.progress()

    def _poll(self) -> None:
        """Let MPI move the buckets in flight along (MPI progresses a request only inside MPI calls)."""
        for b in self.buckets[:self._next]:
            b.request.test()

    def _start_ready(self, everything: bool = False) -> None:
        """Start buckets in order while the next one is complete (or all of them)."""
        while self._next < len(self.buckets):
            bucket = self.buckets[self._next]
            if bucket.pending > 0 and not everything:
                return
            bucket.pack(1.0 / self.world.size)
            bucket.request = iall_reduce(bucket.flat, "sum", world=self.world)
            self._next += 1

    def wait(self) -> None:
        """Finish the reduction: afterwards every ``p.grad`` holds the mean over all processes."""
        if self.world.size == 1:
            return
        started = time.perf_counter()
        self.stats["started_in_backward"] = self._next
        self.stats["bytes_started_in_backward"] = sum(b.nbytes for b in self.buckets[:self._next])
        self._start_ready(everything=True)
        if self.factors is not None:   # keeps the buckets moving while it waits for the other processes
            self.factors.finish(poll=self._poll)
        for bucket in self.buckets:
            bucket.request.wait()
            bucket.unpack()
            bucket.request, bucket.pending = None, len(bucket.params)
        self._next = 0
        self.stats["wait_seconds"] = time.perf_counter() - started

    def remove(self) -> None:
        """Unregister the hooks (the reducer stops taking part in backward)."""
        for handle in self._handles:
            handle.remove()
