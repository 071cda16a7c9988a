"""The one backend switch: NumPy on the CPU, CuPy on CUDA GPUs.

This is the only module in minidl that imports CuPy, and it imports it lazily, so
a CPU-only install never needs it. Everything else asks this module which array
library an array belongs to (``get_array_module``) and derives the device from
the arrays it is given; there is no global "current device" in minidl.

CuPy has one, per thread: it allocates and launches on the thread's current GPU.
A process makes its GPU current once (``use_device``), in its main thread and in
every thread it starts that runs GPU work; ``device_context`` then switches only
for an array of another GPU. A ``with cupy.cuda.Device(i):`` block switches back
to the previous device when it ends, which in a new thread is GPU 0: that creates
a context on GPU 0 (hundreds of MB; an error on GPUs in exclusive-process mode)
from every process of a multi-GPU run, so minidl never leaves a switch that way.

Streams: every thread launches on its current stream (CuPy's default: the legacy
default stream, or one per thread with ``CUPY_CUDA_PER_THREAD_DEFAULT_STREAM=1``).
Work on a stream of its own (``new_stream``: NCCL's collectives, the data
prefetch) is ordered with the rest by events (``record_event``, ``wait_event``).
"""
from __future__ import annotations

import contextlib
import re

import numpy as np

_CUPY_HINT = ('install CuPy for your CUDA version, e.g. pip install "minidl[cuda12]" '
              '(CUDA 12) or pip install "minidl[cuda13]" (CUDA 13)')


class DeviceError(ValueError):
    """A device string that cannot be used here (unknown, or CUDA unavailable)."""


class Device:
    """A device: ``Device("cpu")``, ``Device("cuda")`` (GPU 0) or ``Device("cuda:N")``.

    Compares equal to its string form, so ``t.device == "cpu"`` reads naturally.
    """

    __slots__ = ("type", "index")

    def __init__(self, spec: "str | Device" = "cpu"):
        if isinstance(spec, Device):
            self.type, self.index = spec.type, spec.index
            return
        if not isinstance(spec, str):
            raise DeviceError(f"Device: expected a string like 'cpu', 'cuda' or 'cuda:0', got {spec!r}")
        match = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", spec.strip().lower())
        if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
            raise DeviceError(f"Device: unknown device {spec!r}; expected 'cpu', 'cuda' or 'cuda:N'")
        self.type = match.group(1)
        self.index = None if self.type == "cpu" else int(match.group(2) or 0)

    def __str__(self) -> str:
        return "cpu" if self.type == "cpu" else f"cuda:{self.index}"

    def __repr__(self) -> str:
        return f"Device('{self}')"

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            try:
                other = Device(other)
            except DeviceError:
                return False
        return isinstance(other, Device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))


CPU = Device("cpu")


def _import_cupy():
    """Import CuPy or raise one clear DeviceError saying what is missing."""
    try:
        import cupy
    except ImportError as exc:  # CuPy absent or broken: say how to get it
        raise DeviceError(f"CUDA was requested but CuPy could not be imported ({exc}); {_CUPY_HINT}") from None
    return cupy


def _cupy_if_loaded():
    """CuPy if something already imported it, else None (never triggers an import)."""
    import sys
    return sys.modules.get("cupy")


def cuda_device_count() -> int:
    """Number of visible CUDA GPUs; 0 when CuPy or a driver is missing."""
    try:
        cupy = _import_cupy()
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no CuPy, no driver, no GPU: all mean "no CUDA here"
        return 0


def is_cuda_available() -> bool:
    """True when CuPy imports and at least one GPU is visible."""
    return cuda_device_count() > 0


def parse_device(spec: "str | Device | None") -> Device:
    """Turn ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` into a usable Device.

    ``"auto"`` picks cuda:0 when a GPU is usable, else the CPU. For CUDA this checks
    that CuPy imports and that GPU N exists, and raises DeviceError otherwise.
    """
    if spec is None:
        return CPU
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        return Device("cuda:0") if is_cuda_available() else CPU
    device = Device(spec)
    if device.type == "cuda":
        cupy = _import_cupy()
        try:
            count = int(cupy.cuda.runtime.getDeviceCount())
        except Exception as exc:  # driver missing or broken
            raise DeviceError(f"CUDA was requested ({device}) but no usable GPU was found: {exc}") from None
        if device.index >= count:
            raise DeviceError(f"CUDA device {device} was requested but only {count} GPU(s) are visible")
    return device


def get_array_module(*arrays):
    """The array library (``numpy`` or ``cupy``) that the given arrays live in.

    Non-array arguments (Python scalars, None) are ignored; with no CuPy array among
    the arguments the answer is NumPy.
    """
    cupy = _cupy_if_loaded()
    if cupy is not None:
        for a in arrays:
            if isinstance(a, cupy.ndarray):
                return cupy
    return np


def array_module_of(device: Device):
    """The array library for arrays on ``device``: NumPy for the CPU, CuPy for a GPU."""
    return np if device.type == "cpu" else _import_cupy()


def device_of(array) -> Device:
    """The Device an array lives on."""
    cupy = _cupy_if_loaded()
    if cupy is not None and isinstance(array, cupy.ndarray):
        return Device(f"cuda:{array.device.id}")
    return CPU


def device_context(device: Device):
    """A context in which ``device`` is CuPy's current GPU; a no-op for the CPU or a GPU already current.

    Kernels launched inside run on that GPU, so arrays on cuda:1 are computed on
    cuda:1. When the device is current already (the process's own GPU, made current
    by ``use_device``) nothing switches, and so nothing switches back at the end.
    """
    if device.type == "cpu":
        return contextlib.nullcontext()
    cupy = _import_cupy()
    if int(cupy.cuda.runtime.getDevice()) == device.index:
        return contextlib.nullcontext()
    return cupy.cuda.Device(device.index)


def use_device(device: "str | Device") -> None:
    """Make ``device`` the calling thread's current GPU for good (``cupy.cuda.Device(i).use()``).

    For the main thread of a process and each thread it starts for GPU work: no
    context on any other GPU, and no switch back when a block ends. A no-op for the CPU.
    """
    device = Device(device)
    if device.type == "cuda":
        _import_cupy().cuda.Device(device.index).use()


def device_identity(index: int) -> str:
    """The PCI address (domain:bus:device) of visible GPU ``index``: which physical GPU it is.

    Two processes whose launcher gave each its own GPU (``CUDA_VISIBLE_DEVICES``) both
    see it as GPU 0; the address tells them apart.
    """
    props = _import_cupy().cuda.runtime.getDeviceProperties(int(index))
    return f"{props['pciDomainID']:04x}:{props['pciBusID']:02x}:{props['pciDeviceID']:02x}"


def new_stream(device: Device):
    """A CUDA stream of its own on ``device``, non-blocking: it never waits for the legacy default stream.

    (A blocking stream would wait for every kernel of the legacy default stream and
    make it wait in turn: nothing would overlap.)
    """
    cupy = _import_cupy()
    with device_context(device):
        return cupy.cuda.Stream(non_blocking=True)


def stream_context(stream):
    """A context in which ``stream`` (from ``new_stream``) is the current stream; a no-op for None."""
    return contextlib.nullcontext() if stream is None else stream


def record_event(stream=None):
    """An event recorded on ``stream`` (default: the current one): it completes when the work queued there so far has."""
    cupy = _import_cupy()
    event = cupy.cuda.Event(disable_timing=True)
    event.record(stream)
    return event


def wait_event(event, stream=None) -> None:
    """Make ``stream`` (default: the current one) wait on the GPU for ``event``; the host does not wait."""
    (stream if stream is not None else _import_cupy().cuda.get_current_stream()).wait_event(event)


def to_device(array, device: "str | Device"):
    """Copy (or pass through) an array so that it lives on ``device``.

    Returns the same array when it is already there. Python scalars and lists become
    arrays on the device.
    """
    device = Device(device) if not isinstance(device, Device) else device
    if device.type == "cpu":
        cupy = _cupy_if_loaded()
        if cupy is not None and isinstance(array, cupy.ndarray):
            return cupy.asnumpy(array)
        return np.asarray(array)
    cupy = _import_cupy()
    if isinstance(array, cupy.ndarray) and array.device.id == device.index:
        return array
    with device_context(device):
        return cupy.asarray(array)


def to_numpy(array) -> np.ndarray:
    """A host NumPy array with the same values (a copy when it came from a GPU)."""
    return to_device(array, CPU)


def is_array(obj) -> bool:
    """True for NumPy and CuPy ndarrays."""
    if isinstance(obj, np.ndarray):
        return True
    cupy = _cupy_if_loaded()
    return cupy is not None and isinstance(obj, cupy.ndarray)


def synchronize(device: Device) -> None:
    """Wait for queued GPU work on ``device`` to finish (for honest timings); no-op on CPU."""
    if device.type == "cuda":
        with device_context(device):
            _import_cupy().cuda.runtime.deviceSynchronize()


# One compiled kernel per (source, name, options, GPU): compiling takes a moment
# (NVRTC), launching a cached kernel takes microseconds.
_RAW_KERNELS: dict = {}


def raw_kernel(source: str, name: str, options=()):
    """The ``cupy.RawKernel`` for function ``name`` of CUDA C ``source``, built once.

    Cached per (source, name, options, current GPU), so every later call with the
    same arguments returns the same kernel object; CuPy compiles it (NVRTC) at its
    first launch and keeps the binary in its on-disk cache.

    Args:
        source: complete CUDA C source; ``name`` must be declared ``extern "C"``.
        name: the ``__global__`` function to launch.
        options: NVRTC options, e.g. ``("--fmad=false",)``.
    Returns:
        a callable ``kernel(grid, block, args)`` (grid and block are tuples; args the
        CuPy arrays and NumPy scalars the kernel takes, in order).
    Raises:
        DeviceError when CuPy is missing.
    """
    cupy = _import_cupy()
    options = tuple(options)
    key = (source, name, options, int(cupy.cuda.runtime.getDevice()))
    kernel = _RAW_KERNELS.get(key)
    if kernel is None:
        kernel = _RAW_KERNELS[key] = cupy.RawKernel(source, name, options=options)
    return kernel


def is_out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` is an out-of-memory error from NumPy or CuPy."""
    if isinstance(exc, MemoryError):
        return True
    cupy = _cupy_if_loaded()
    return cupy is not None and isinstance(exc, cupy.cuda.memory.OutOfMemoryError)
