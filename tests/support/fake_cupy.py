"""A stand-in for CuPy on the CPU that remembers which GPU each array was made on.

CuPy allocates every new array, and launches every kernel, on the *current* device
(one per thread, ``with cupy.cuda.Device(i):`` changes it), not on the device of the
arrays involved. Code that forgets to make an array's GPU current therefore puts its
results on GPU 0 and reads GPU 1's memory from there: nothing fails on a one-GPU
machine, and a ``--device cuda:1`` run spreads over two GPUs. This module lets a CPU
show that mistake:

* ``FakeCupy`` is installed as ``sys.modules["cupy"]`` (see ``install``), so
  ``minidl.backend`` takes it for CuPy; ``backend.parse_device("cuda:1")`` works and
  ``backend.to_device(a, "cuda:1")`` gives a ``FakeArray``, a NumPy array that
  carries a device id.
* Every operation on FakeArrays (ufuncs, reductions, ``xp.*`` functions, copying
  methods, fancy indexing, item assignment) runs in NumPy and gives its result the
  id of the device current at that moment; a view keeps its base's id. An
  operation that touches an array of another device than the current one is
  recorded in ``fake.cross_device`` (real CuPy would use peer access or fail).
  ``cupy.asarray``/``cupy.array`` are the sanctioned copies between devices.
* With ``fake.tf32 = True`` the products CuPy runs through cuBLAS's 2-D GEMM (``dot``,
  ``tensordot``, ``einsum``, ``matmul`` and ``@`` of at most 2-D operands) round
  their float32 inputs to TensorFloat-32's 10-bit mantissa first, as under
  ``CUPY_TF32=1``; CuPy's batched ``matmul`` (3-D and more) calls
  ``gemmStridedBatchedEx`` with a plain float32 compute type and stays exact, as do
  elementwise kernels and reductions (cupy/_core/_routines_linalg.pyx).
* CuPy's batched ``matmul`` makes each operand contiguous first: every such copy is
  recorded in ``fake.matmul_copies`` as (shape, bytes).
* Devices made current: ``Device(i).use()``, entering ``with Device(i):`` on another
  GPU, and leaving it (CuPy then sets the previous device again, which in a thread
  that never chose one is GPU 0): each creates a context on that GPU, recorded in
  ``fake.contexts``.
* Streams and events (``tests/support/fake_cuda_streams.py``): every operation is a
  kernel on the thread's current stream; ``fake.streams.unordered`` lists reads of
  arrays written on another stream without an event between them.
  ``install(..., per_thread_streams=True)`` models ``CUPY_CUDA_PER_THREAD_DEFAULT_STREAM=1``;
  ``nccl=True`` adds ``cupy.cuda.nccl`` (``fake_cuda_streams.fake_nccl``).

The test then asserts ``fake.cross_device == []`` and that results carry the right id.
"""
from __future__ import annotations

import threading
import traceback
import types

import numpy as np

from support.fake_cuda_streams import MemoryPointer, StreamModel, fake_nccl, stamp


class _DeviceId:
    __slots__ = ("id",)

    def __init__(self, index: int):
        self.id = int(index)

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id}>"


class FakeArray(np.ndarray):
    """A NumPy array "on" GPU ``self.device.id``."""

    fake: "FakeCupy"  # set by FakeCupy.__init__ on a subclass of its own

    @property
    def device(self):
        return _DeviceId(self.__dict__.get("_device_id", 0))

    @property
    def data(self):   # CuPy's MemoryPointer: .ptr is the device address
        return MemoryPointer(self.fake, self)

    def __array_finalize__(self, obj):
        if obj is None:
            return
        if isinstance(obj, FakeArray) and np.may_share_memory(_plain(self), _plain(obj)):
            self._device_id = obj.__dict__.get("_device_id", 0)  # a view: where its base lives
            root = obj.__dict__.get("_root")
            self._root = obj if root is None else root
            return
        # a new array made from obj (copy, astype, argmax, fancy indexing): a kernel
        # on the current device reading obj
        written = self.fake._check("array method", (obj,))
        self._device_id = self.fake.current()
        stamp(self, written)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        written = self.fake._check(f"{ufunc.__name__}.{method}", inputs + (out or ()))
        plain_inputs = tuple(_plain(a) for a in inputs)
        if ufunc is np.matmul:
            plain_inputs = self.fake._product("matmul", plain_inputs)
        if out is not None:
            kwargs["out"] = tuple(_plain(o) for o in out)
        result = getattr(ufunc, method)(*plain_inputs, **kwargs)
        if out is not None:
            for o in out:
                if isinstance(o, FakeArray):
                    stamp(o, written)
            return out[0] if len(out) == 1 else out
        return self.fake._wrap(result, inputs, written)

    def __array_function__(self, func, types_, args, kwargs):
        return getattr(self.fake, func.__name__)(*args, **kwargs)

    def __getitem__(self, index):
        return np.ndarray.__getitem__(self, _wrapped_index(self.shape, index))

    def get(self, stream=None, out=None):
        """To the host (CuPy's ndarray.get): a copy on the current stream, then the host waits for it."""
        host = self.fake.asnumpy(self)
        if out is None:
            return host
        out[...] = host
        return out

    def set(self, array, stream=None):
        """From the host (CuPy's ndarray.set): a copy on the current stream into this array."""
        stamp(self, self.fake._check("set", (self,)))
        np.copyto(_plain(self), np.asarray(array))

    def __setitem__(self, index, value):
        stamp(self, self.fake._check("__setitem__", (self, value, index)))
        np.ndarray.__setitem__(_plain(self), _wrapped_index(self.shape, index), _plain(value))


def _wrapped_index(shape, index):
    """CuPy wraps out-of-range integer-array indices around (NumPy raises): do the same."""
    parts = index if isinstance(index, tuple) else (index,)
    if any(p is Ellipsis or p is None for p in parts):
        return _plain_tree(index)
    wrapped = tuple(np.asarray(_plain(p)) % shape[axis] if isinstance(p, np.ndarray) and p.dtype.kind in "iu"
                    else _plain(p) for axis, p in enumerate(parts))
    return wrapped if isinstance(index, tuple) else wrapped[0]


def _plain(a):
    return a.view(np.ndarray) if isinstance(a, FakeArray) else a


_PRODUCTS = ("matmul", "einsum", "dot", "tensordot")


def _tf32(a):
    """A float32 array rounded to TF32 (1 sign, 8 exponent, 10 mantissa bits); anything else as is."""
    if not (isinstance(a, np.ndarray) and a.dtype == np.float32):
        return a
    bits = np.ascontiguousarray(a).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def _plain_tree(obj):
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain_tree(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _plain_tree(v) for k, v in obj.items()}
    return _plain(obj)


def _fake_arrays(obj):
    if isinstance(obj, FakeArray):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _fake_arrays(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _fake_arrays(v)


class FakeCupy(types.ModuleType):
    """The ``cupy`` module as minidl uses it, over NumPy, with a per-thread current device."""

    def __init__(self, device_count: int = 2, per_thread_streams: bool = False, nccl: bool = False):
        super().__init__("cupy")
        self.__version__ = "0.0-fake"
        self.cross_device: list = []  # (operation, devices touched, current device, where)
        self.contexts: set = set()    # GPUs made current in some thread (each holds a CUDA context)
        self.matmul_copies: list = []  # (shape, bytes) of every operand batched matmul made contiguous
        self.tf32 = False
        self.pci = {i: (0, 0x17 + 0x20 * i, 0) for i in range(device_count)}  # (domain, bus, device) per GPU
        self.streams = StreamModel(per_thread_streams)
        self._by_ptr: dict = {}
        self._local = threading.local()
        fake = self
        self.ndarray = type("FakeArray", (FakeArray,), {"fake": fake})
        stream_class = type("Stream", (), {"__new__": lambda cls, null=False, non_blocking=False, ptds=False:
                                           fake.streams.new_stream(null, non_blocking, ptds)})
        stream_class.null = self.streams.legacy
        self.cuda = types.ModuleType("cupy.cuda")
        self.cuda.Device = lambda index=None: _DeviceContext(fake, fake.current() if index is None else index)
        self.cuda.Stream = stream_class
        self.cuda.Event = lambda **kwargs: fake_event(fake, **kwargs)
        self.cuda.get_current_stream = self.streams.current
        self.cuda.runtime = types.SimpleNamespace(
            getDeviceCount=lambda: device_count, getDevice=fake.current,
            deviceSynchronize=self.streams.device_synchronize,
            getDeviceProperties=lambda i: dict(zip(("pciDomainID", "pciBusID", "pciDeviceID"), fake.pci[i])))
        self.cuda.memory = types.SimpleNamespace(OutOfMemoryError=type("OutOfMemoryError", (MemoryError,), {}))
        if nccl:
            self.cuda.nccl = fake_nccl(fake)

    # ---- the current device --------------------------------------------------
    def current(self) -> int:
        device = getattr(self._local, "device", None)
        return 0 if device is None else device   # CUDA's default in a thread that chose none

    def set_device(self, index: int) -> None:
        """cudaSetDevice: makes GPU ``index`` current in this thread, creating its context."""
        self._local.device = int(index)
        self.contexts.add(int(index))

    def array_at(self, ptr: int):
        """The array whose ``.data.ptr`` is ``ptr`` (what NCCL is handed)."""
        return self._by_ptr[ptr]()

    def _check(self, operation: str, arrays):
        """One kernel on the current device and stream reading ``arrays``: record cross-device reads.

        Returns:
            the kernel's stamp, for the arrays it writes.
        """
        devices = sorted({a.device.id for a in _fake_arrays(arrays)})
        if any(d != self.current() for d in devices):
            where = "".join(traceback.format_stack(limit=6)[:-2])
            self.cross_device.append((operation, devices, self.current(), where))
        return self.streams.launch(operation, list(_fake_arrays(arrays)), ())

    def _product(self, name: str, operands):
        """The operands as cuBLAS gets them: batched matmul's contiguous copies, TF32 rounding of 2-D GEMMs."""
        arrays = [a for a in operands if isinstance(a, np.ndarray)]
        batched = name == "matmul" and max(a.ndim for a in arrays) > 2
        if batched:
            self.matmul_copies += [(a.shape, a.nbytes) for a in arrays if not a.flags.c_contiguous]
        elif self.tf32:
            return tuple(_tf32(a) for a in operands)
        return tuple(operands)

    def _wrap(self, result, inputs=(), written=None):
        """NumPy results as FakeArrays: views keep their base's device, new arrays get the current one."""
        if isinstance(result, tuple):
            return tuple(self._wrap(r, inputs, written) for r in result)
        if isinstance(result, np.generic) and any(True for _ in _fake_arrays(inputs)):
            result = np.asarray(result)  # CuPy's reductions give 0-d arrays, not NumPy scalars
        if not isinstance(result, np.ndarray):
            return result
        for a in _fake_arrays(inputs):
            if np.may_share_memory(result, _plain(a)):
                view = result.view(self.ndarray)
                view._device_id = a.device.id
                root = a.__dict__.get("_root")
                view._root = a if root is None else root
                return view
        array = result.view(self.ndarray)
        array._device_id = self.current()
        if written is not None:
            stamp(array, written)
        return array

    # ---- functions -------------------------------------------------------------
    def __getattr__(self, name):
        target = getattr(np, name)
        if not callable(target) or isinstance(target, type):
            return target  # constants, dtypes (xp.float32, xp.nan)

        def call(*args, **kwargs):
            written = self._check(name, (args, kwargs))
            plain = _plain_tree(args)
            if name in _PRODUCTS:
                plain = self._product(name, plain)
            out = kwargs.get("out")
            result = self._wrap(target(*plain, **_plain_tree(kwargs)), (args, kwargs), written)
            if isinstance(out, FakeArray):
                stamp(out, written)
            return result
        return call

    def asarray(self, a, dtype=None):
        """Copy to the current device (the sanctioned way between devices); no device check."""
        if isinstance(a, FakeArray) and a.device.id == self.current() and (dtype is None or a.dtype == dtype):
            return a
        written = self.streams.launch("asarray", list(_fake_arrays((a,))), ())   # the copy: a kernel on this stream
        array = np.array(_plain(a), dtype=dtype, copy=True).view(self.ndarray)
        array._device_id = self.current()
        stamp(array, written)
        return array

    array = asarray

    def asnumpy(self, a):
        """To the host: a copy on the current stream, then the host waits for that stream."""
        if isinstance(a, FakeArray):
            self.streams.launch("asnumpy", [a], ())
            self.streams.current().synchronize()
        return np.array(_plain(a), copy=True)

    def get_array_module(self, *arrays):
        return self


class _DeviceContext:
    """``cupy.cuda.Device(i)``: ``use()`` makes GPU i current in this thread; ``with`` switches, then switches back.

    As CuPy's: entering sets the device only when it is not current already, and
    leaving always sets the previous one again (GPU 0 in a thread that chose none).
    """

    def __init__(self, fake: FakeCupy, index: int):
        self.fake, self.id = fake, int(index)
        self.previous = []

    def use(self):
        self.fake.set_device(self.id)

    def __enter__(self):
        previous = self.fake.current()
        self.previous.append(previous)
        if previous != self.id:
            self.fake.set_device(self.id)
        return self

    def __exit__(self, *exc):
        self.fake.set_device(self.previous.pop())
        return False

    def synchronize(self):
        self.fake.streams.device_synchronize()


def fake_event(fake: FakeCupy, **kwargs):
    from support.fake_cuda_streams import FakeEvent
    return FakeEvent(fake.streams, **kwargs)


def install(monkeypatch, device_count: int = 2, per_thread_streams: bool = False, nccl: bool = False) -> FakeCupy:
    """Make ``import cupy`` (and ``cupy.cuda``) return a fresh FakeCupy for the rest of the test."""
    import sys
    fake = FakeCupy(device_count, per_thread_streams, nccl)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "cupy.cuda", fake.cuda)
    return fake
