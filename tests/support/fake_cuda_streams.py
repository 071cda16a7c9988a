"""CUDA streams, events and NCCL for the fake CuPy: which work is ordered before which.

A GPU runs the kernels of one stream in order, and kernels of different streams in
any order unless an event orders them: ``stream.wait_event(event)`` makes later work
on ``stream`` wait for everything queued before ``event.record(other)``. Two more
rules: the legacy default stream waits for every *blocking* stream's earlier work,
and blocking streams wait for its earlier work (so a ``cupy.cuda.Stream()`` made
without ``non_blocking=True`` overlaps nothing with the legacy stream); and work
launched after the host waited for an event or a stream comes after that work.

``StreamModel`` keeps a vector clock per stream (how far into each stream its next
kernel is known to come after) and stamps every array with the kernel that last
wrote it. A kernel that reads an array written on another stream without such an
order is recorded in ``unordered``: on a GPU it could read the array before the
write. (Memory reuse across streams by CuPy's pool is not modelled.)

``CUPY_CUDA_PER_THREAD_DEFAULT_STREAM=1`` is modelled with ``per_thread=True``:
each thread's default stream is its own (blocking towards the legacy stream only).
"""
from __future__ import annotations

import threading
import traceback
import types
import weakref

import numpy as np


def _join(clock: dict, other: dict) -> None:
    for stream, count in other.items():
        if clock.get(stream, 0) < count:
            clock[stream] = count


class FakeStream:
    """A stream: ``with stream:``, ``use()``, ``record()``, ``wait_event()``, ``synchronize()``."""

    def __init__(self, model: "StreamModel", kind: str, ptr: int):
        self.model, self.kind, self.ptr = model, kind, ptr   # kind: legacy, blocking, non_blocking, per_thread
        self.count = 0        # kernels launched here so far
        self.clock = {}       # stream -> how many of its kernels come before this stream's next one

    @property
    def blocking(self) -> bool:
        return self.kind in ("blocking", "per_thread")

    def __repr__(self) -> str:
        return f"<fake {self.kind} stream {self.ptr}>"

    def __enter__(self):
        self.model._stack().append(self)
        return self

    def __exit__(self, *exc):
        self.model._stack().pop()
        return False

    def use(self):
        stack = self.model._stack()
        stack[:] = [self]
        return self

    def record(self, event=None):
        event = event if event is not None else FakeEvent(self.model)
        event.record(self)
        return event

    def wait_event(self, event) -> None:
        self.model.waits.append((self, event))
        _join(self.clock, event.clock)

    def synchronize(self) -> None:
        self.model.host_waits({**self.clock, self: self.count})

    @property
    def done(self) -> bool:
        return True


class FakeEvent:
    """An event: ``record(stream)`` marks the work queued there so far; ``synchronize()`` waits for it."""

    def __init__(self, model: "StreamModel", block=False, disable_timing=False, interprocess=False):
        self.model, self.clock, self.stream = model, {}, None

    def record(self, stream=None) -> None:
        stream = stream if stream is not None else self.model.current()
        self.stream, self.clock = stream, {**stream.clock, stream: stream.count}

    def synchronize(self) -> None:
        self.model.host_waits(self.clock)

    @property
    def done(self) -> bool:
        return True


class StreamModel:
    """Streams, the current stream of each thread, and the order checks."""

    def __init__(self, per_thread: bool = False):
        self.per_thread = per_thread
        self.legacy = FakeStream(self, "legacy", 0)
        self.streams = [self.legacy]
        self.unordered: list = []   # (operation, stream that wrote, stream that read, where)
        self.waits: list = []       # (stream, event) of every wait_event
        self.launches: list = []    # (operation, stream) of every kernel, in order
        self._local = threading.local()
        self._lock = threading.Lock()

    # ---- streams -----------------------------------------------------------------
    def new_stream(self, null=False, non_blocking=False, ptds=False) -> FakeStream:
        if null:
            return self.legacy
        with self._lock:
            stream = FakeStream(self, "non_blocking" if non_blocking else "blocking", 0x1000 + len(self.streams))
            self.streams.append(stream)
        return stream

    def _stack(self) -> list:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def current(self) -> FakeStream:
        stack = self._stack()
        if stack:
            return stack[-1]
        if not self.per_thread:
            return self.legacy
        if not hasattr(self._local, "default"):
            with self._lock:
                self._local.default = FakeStream(self, "per_thread", 2)
                self.streams.append(self._local.default)
        return self._local.default

    def by_ptr(self, ptr: int) -> FakeStream:
        if ptr == 2:   # cudaStreamPerThread: the calling thread's own default stream
            return self.current() if self.per_thread else self.legacy
        return next(s for s in self.streams if s.ptr == ptr)

    # ---- the host --------------------------------------------------------------------
    def _host(self) -> dict:
        if not hasattr(self._local, "host"):
            self._local.host = {}
        return self._local.host

    def host_waits(self, clock: dict) -> None:
        """The host waited for this work: whatever it launches later comes after it."""
        _join(self._host(), clock)

    def device_synchronize(self) -> None:
        self.host_waits({s: s.count for s in self.streams})

    # ---- kernels -----------------------------------------------------------------------
    def launch(self, operation: str, reads, writes, stream: FakeStream | None = None):
        """A kernel on ``stream`` (default: the current one) reading and writing arrays; checks its reads."""
        stream = stream if stream is not None else self.current()
        with self._lock:
            if stream.kind == "legacy":     # waits for the blocking streams' earlier work
                _join(stream.clock, {s: s.count for s in self.streams if s.blocking})
            elif stream.blocking:           # and they for the legacy stream's
                _join(stream.clock, {self.legacy: self.legacy.count})
            _join(stream.clock, self._host())
            stream.count += 1
            stamp = (stream, stream.count)
            stream.clock[stream] = stream.count
        self.launches.append((operation, stream))
        for array in reads:
            written = _root(array).__dict__.get("_written")
            if written is not None and written[0] is not stream and stream.clock.get(written[0], 0) < written[1]:
                where = "".join(traceback.format_stack(limit=7)[:-3])
                self.unordered.append((operation, written[0], stream, where))
        for array in writes:
            _root(array)._written = stamp
        return stamp


def _root(array):
    root = array.__dict__.get("_root")
    return array if root is None else root


def stamp(array, written) -> None:
    """Mark ``array`` (and the memory it views) as written by kernel ``written`` (a launch's return value)."""
    _root(array)._written = written


# ---- NCCL ------------------------------------------------------------------------------------

def fake_nccl(fake, world_size: int = 2):
    """``cupy.cuda.nccl`` over one process: an all-reduce sums ``world_size`` copies of this process's array.

    Each collective is a kernel on the stream it is given, reading and writing the array
    (found by its pointer), so the order checks see it.
    """
    module = types.ModuleType("cupy.cuda.nccl")
    module.available = True
    for i, name in enumerate(("NCCL_FLOAT16", "NCCL_FLOAT32", "NCCL_FLOAT64", "NCCL_INT32", "NCCL_INT64",
                              "NCCL_UINT8", "NCCL_SUM", "NCCL_MAX", "NCCL_MIN")):
        setattr(module, name, i)
    module.get_unique_id = lambda: b"fake-nccl-id"
    calls = module.calls = []

    class NcclCommunicator:
        def __init__(self, size, uid, rank):
            self.size, self.rank, self.device = size, rank, fake.current()

        def allReduce(self, send, recv, count, dtype, op, stream):   # noqa: N802 (NCCL's name)
            array = fake.array_at(recv)
            assert send == recv and array.size == count, "minidl reduces in place, whole arrays"
            s = fake.streams.by_ptr(stream)
            calls.append(("allReduce", s))
            fake.streams.launch("nccl allReduce", (array,), (array,), stream=s)
            if op == module.NCCL_SUM:
                plain = array.view(np.ndarray)
                np.multiply(plain, world_size, out=plain)

        def bcast(self, buf, count, dtype, root, stream):
            array = fake.array_at(buf)
            s = fake.streams.by_ptr(stream)
            calls.append(("bcast", s))
            fake.streams.launch("nccl bcast", (array,), (array,), stream=s)

    module.NcclCommunicator = NcclCommunicator
    return module


class MemoryPointer:
    """``array.data`` of the fake: ``.ptr`` is the address of the array's first element."""

    def __init__(self, fake, array):
        self.ptr = int(array.__array_interface__["data"][0])
        fake._by_ptr[self.ptr] = weakref.ref(array)
