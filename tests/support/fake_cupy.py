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
* With ``fake.tf32 = True`` matrix products (``matmul``, ``@``, ``einsum``, ``dot``,
  ``tensordot``) round their float32 inputs to TensorFloat-32's 10-bit mantissa
  first, as cuBLAS does under ``CUPY_TF32=1``; elementwise kernels and reductions
  stay exact.

The test then asserts ``fake.cross_device == []`` and that results carry the right id.
"""
from __future__ import annotations

import threading
import traceback
import types

import numpy as np


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

    def __array_finalize__(self, obj):
        if obj is None:
            return
        if isinstance(obj, FakeArray) and np.may_share_memory(_plain(self), _plain(obj)):
            self._device_id = obj.__dict__.get("_device_id", 0)  # a view: where its base lives
            return
        # a new array made from obj (copy, astype, argmax, fancy indexing): a kernel
        # on the current device reading obj
        self.fake._check("array method", (obj,))
        self._device_id = self.fake.current()

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        self.fake._check(f"{ufunc.__name__}.{method}", inputs + (out or ()))
        plain_inputs = tuple(_plain(a) for a in inputs)
        if ufunc is np.matmul and self.fake.tf32:
            plain_inputs = tuple(_tf32(a) for a in plain_inputs)
        if out is not None:
            kwargs["out"] = tuple(_plain(o) for o in out)
        result = getattr(ufunc, method)(*plain_inputs, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return self.fake._wrap(result, inputs)

    def __array_function__(self, func, types_, args, kwargs):
        return getattr(self.fake, func.__name__)(*args, **kwargs)

    def __getitem__(self, index):
        return np.ndarray.__getitem__(self, _wrapped_index(self.shape, index))

    def __setitem__(self, index, value):
        self.fake._check("__setitem__", (self, value, index))
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

    def __init__(self, device_count: int = 2):
        super().__init__("cupy")
        self.__version__ = "0.0-fake"
        self.cross_device: list = []  # (operation, devices touched, current device, where)
        self.tf32 = False
        self._local = threading.local()
        fake = self
        self.ndarray = type("FakeArray", (FakeArray,), {"fake": fake})
        self.cuda = types.SimpleNamespace(
            Device=lambda index=0: _DeviceContext(fake, index),
            runtime=types.SimpleNamespace(getDeviceCount=lambda: device_count, getDevice=fake.current,
                                          deviceSynchronize=lambda: None),
            memory=types.SimpleNamespace(OutOfMemoryError=type("OutOfMemoryError", (MemoryError,), {})),
        )

    # ---- the current device --------------------------------------------------
    def current(self) -> int:
        return getattr(self._local, "device", 0)

    def _check(self, operation: str, arrays) -> None:
        devices = sorted({a.device.id for a in _fake_arrays(arrays)})
        if any(d != self.current() for d in devices):
            where = "".join(traceback.format_stack(limit=6)[:-2])
            self.cross_device.append((operation, devices, self.current(), where))

    def _wrap(self, result, inputs=()):
        """NumPy results as FakeArrays: views keep their base's device, new arrays get the current one."""
        if isinstance(result, tuple):
            return tuple(self._wrap(r, inputs) for r in result)
        if isinstance(result, np.generic) and any(True for _ in _fake_arrays(inputs)):
            result = np.asarray(result)  # CuPy's reductions give 0-d arrays, not NumPy scalars
        if not isinstance(result, np.ndarray):
            return result
        for a in _fake_arrays(inputs):
            if np.may_share_memory(result, _plain(a)):
                view = result.view(self.ndarray)
                view._device_id = a.device.id
                return view
        array = result.view(self.ndarray)
        array._device_id = self.current()
        return array

    # ---- functions -------------------------------------------------------------
    def __getattr__(self, name):
        target = getattr(np, name)
        if not callable(target) or isinstance(target, type):
            return target  # constants, dtypes (xp.float32, xp.nan)

        def call(*args, **kwargs):
            self._check(name, (args, kwargs))
            plain = _plain_tree(args)
            if self.tf32 and name in _PRODUCTS:
                plain = tuple(_tf32(a) for a in plain)
            return self._wrap(target(*plain, **_plain_tree(kwargs)), (args, kwargs))
        return call

    def asarray(self, a, dtype=None):
        """Copy to the current device (the sanctioned way between devices); no check."""
        if isinstance(a, FakeArray) and a.device.id == self.current() and (dtype is None or a.dtype == dtype):
            return a
        array = np.array(_plain(a), dtype=dtype, copy=True).view(self.ndarray)
        array._device_id = self.current()
        return array

    array = asarray

    def asnumpy(self, a):
        return np.array(_plain(a), copy=True)

    def get_array_module(self, *arrays):
        return self


class _DeviceContext:
    """``with cupy.cuda.Device(i):`` makes GPU i current in this thread, then restores the previous one."""

    def __init__(self, fake: FakeCupy, index: int):
        self.fake, self.id = fake, int(index)
        self.previous = []

    def __enter__(self):
        self.previous.append(self.fake.current())
        self.fake._local.device = self.id
        return self

    def __exit__(self, *exc):
        self.fake._local.device = self.previous.pop()
        return False


def install(monkeypatch, device_count: int = 2) -> FakeCupy:
    """Make ``import cupy`` return a fresh FakeCupy for the rest of the test."""
    import sys
    fake = FakeCupy(device_count)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    return fake
