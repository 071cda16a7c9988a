"""PyTorch's ``torch.save`` files read into NumPy arrays, without PyTorch and without trusting pickle.

    from minidl.weights import load_torch
    state = load_torch("resnet18-f37072fd.pth")          # OrderedDict name -> np.ndarray
    state = load_torch("checkpoint.pth", key="state_dict")  # {"state_dict": {...}, "epoch": 9, ...}

A ``torch.save`` file (PyTorch 1.6 and later) is a zip archive::

    <folder>/data.pkl     the pickled object; each tensor refers to a storage by key
    <folder>/data/<key>   one file per storage: its raw bytes, in <folder>/byteorder's order
    <folder>/version, <folder>/byteorder, ...

``pickle.load`` on ``data.pkl`` would import and call whatever the file names, so this
module unpickles with an allowlist instead, the way PyTorch's ``weights_only=True``
loading does: ``find_class`` hands out only the few callables a state_dict needs, each
rebuilt here in NumPy, and refuses every other global before anything runs.
"""
from __future__ import annotations

import collections
import io
import pickle
import pickletools
import reprlib
import zipfile
import zlib
from pathlib import Path

import numpy as np

# storage class -> element dtype; None is PyTorch's UntypedStorage (bytes; a tensor on it names its dtype)
_STORAGE_TYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": None,
}
# torch.<dtype> names that _rebuild_tensor_v3 passes (PyTorch pickles a dtype as a global)
_TORCH_DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "uint16",
                 "uint32", "uint64", "bool", "complex64", "complex128")
# bfloat16 has no NumPy dtype: read as its 16-bit pattern, widened to float32 after the copy
_NUMPY_DTYPES = {name: np.dtype("uint16" if name == "bfloat16" else name) for name in _TORCH_DTYPES}
_TENSOR_REBUILDS = ("_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter", "_rebuild_parameter_with_state")
_EXPANDED_BYTES = 2**30  # what broadcast views (stride 0) may add beyond their storages' size, per file
_PLAIN = (str, bytes, bytearray, int, float, complex, bool, type(None), np.ndarray)
# a pre-1.6 torch.save file begins with this number pickled (protocol 2, LONG1); a tar is older still
_LEGACY_HEAD = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."


class _FileError(ValueError):
    """A refusal already worded for the user (one line, naming the file)."""


def _short(value) -> str:
    """A file-controlled value for a message: bounded, one line."""
    r = reprlib.Repr()
    r.maxstring = r.maxother = 80
    return r.repr(value)


class _Marker:
    """What ``find_class`` hands out: a named stand-in, callable only when it wraps a rebuild function.

    Never a real class or module-level function, so the pickle's BUILD opcode cannot set
    attributes on anything outside this one load, and NEWOBJ (which needs a class) fails.
    """
    __slots__ = ("name", "dtype", "call")

    def __init__(self, name, dtype=None, call=None):
        self.name, self.dtype, self.call = name, dtype, call

    def __repr__(self):
        return self.name

    def __call__(self, *args):
        if self.call is None:
            raise _FileError(f"calls {self.name}, which is a type, not a function a state_dict calls")
        return self.call(*args)

    def __setstate__(self, state):
        raise _FileError(f"sets state on {self.name} (pickle BUILD), which a state_dict never does")


class _Storage:
    """One ``data/<key>`` record: its raw bytes and the element dtype its storage class declares."""
    __slots__ = ("key", "dtype", "raw")

    def __init__(self, key, dtype, raw):
        self.key, self.dtype, self.raw = key, dtype, raw

    def __setstate__(self, state):
        raise _FileError(f"sets state on storage {self.key!r} (pickle BUILD), which a state_dict never does")


def _int(value, what):
    if type(value) is not int:  # bool is an int subclass; a shape never holds one
        raise _FileError(f"gives a tensor {what} {_short(value)}, expected an int")
    return value


def _int_tuple(value, what):
    if not isinstance(value, (tuple, list)):
        raise _FileError(f"gives a tensor {what} {_short(value)}, expected a tuple of ints")
    return tuple(_int(v, what) for v in value)


class _StateDictUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that rebuilds only a state_dict's contents (see ``load_torch``)."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str):
        super().__init__(file)
        self.archive, self.prefix, self.byteorder = archive, prefix, byteorder
        self.storages: dict[str, _Storage] = {}
        self.expanded = 0  # bytes broadcast views added beyond their storages (at most _EXPANDED_BYTES)
        self.allowed = {("collections", "OrderedDict"): _Marker("collections.OrderedDict", call=self._ordered_dict),
                        ("torch._utils", "_rebuild_tensor_v2"): _Marker("_rebuild_tensor_v2", call=self._tensor_v2),
                        ("torch._utils", "_rebuild_tensor_v3"): _Marker("_rebuild_tensor_v3", call=self._tensor_v3),
                        ("torch._utils", "_rebuild_parameter"): _Marker("_rebuild_parameter", call=self._parameter),
                        ("torch._utils", "_rebuild_parameter_with_state"):
                            _Marker("_rebuild_parameter_with_state", call=self._parameter),
                        ("torch._tensor", "_rebuild_from_type_v2"):
                            _Marker("_rebuild_from_type_v2", call=self._from_type_v2),
                        ("torch", "Tensor"): _Marker("torch.Tensor"),
                        ("torch.nn.parameter", "Parameter"): _Marker("torch.nn.Parameter")}
        for name, dtype in _STORAGE_TYPES.items():
            for module in ("torch", "torch.storage"):
                self.allowed[module, name] = _Marker(f"torch.{name}", dtype=dtype)
        for name in _TORCH_DTYPES:
            self.allowed["torch", name] = _Marker(f"torch.{name}", dtype=name)
        self.tensor_markers = {id(self.allowed["torch", "Tensor"]),
                               id(self.allowed["torch.nn.parameter", "Parameter"])}

    def find_class(self, module, name):
        marker = self.allowed.get((module, name))
        if marker is None:
            raise _FileError(f"refuses the global {module[:100]}.{name[:100]}: a state_dict file only rebuilds "
                             f"ordered dicts, tensors from storages, numbers and strings, and nothing from the file "
                             f"is run")
        return marker

    def persistent_load(self, pid):
        # ('storage', storage class, key, location, numel); location (cpu, cuda:0, ...) is ignored: host arrays
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _FileError(f"has a persistent id {_short(pid)}, "
                             f"expected ('storage', type, key, location, numel)")
        _, kind, key, _location, numel = pid
        if _int(numel, "numel") < 0:
            raise _FileError(f"has a storage {_short(key)} of {numel} elements")
        if not (isinstance(kind, _Marker) and kind.name.endswith("Storage")) or not isinstance(key, str):
            raise _FileError(f"has a storage of type {_short(kind)} under key {_short(key)}, "
                             f"expected a torch storage class")
        if key not in self.storages:
            self.storages[key] = _Storage(key, kind.dtype, self._read_storage(key, kind.dtype, numel))
        return self.storages[key]

    def _read_storage(self, key, dtype, numel):
        name = f"{self.prefix}/data/{key}"
        itemsize = 1 if dtype is None else _NUMPY_DTYPES[dtype].itemsize
        needed = numel * itemsize
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise _FileError(f"has no storage file {name} (the pickle refers to it): the file is incomplete") from None
        if info.file_size < needed:
            raise _FileError(f"has {info.file_size} bytes in {name}, the pickle expects {needed} "
                             f"({numel} x {itemsize}): the file is truncated or corrupt")
        return np.frombuffer(self.archive.read(name), dtype=np.uint8)[:needed]

    def _tensor(self, storage, offset, size, stride, dtype):
        # storage bytes -> flat (elements of dtype, file byte order) -> strided view -> owned native-order copy
        if not isinstance(storage, _Storage):
            raise _FileError(f"rebuilds a tensor from {type(storage).__name__}, expected a storage")
        offset, size, stride = _int(offset, "offset"), _int_tuple(size, "size"), _int_tuple(stride, "stride")
        if len(size) != len(stride) or offset < 0 or min(size + stride, default=0) < 0:
            raise _FileError(f"gives a tensor size {size}, stride {stride}, offset {offset}: expected as many "
                             f"strides as sizes, none negative")
        if dtype not in _NUMPY_DTYPES:
            raise _FileError(f"gives a tensor the dtype {_short(dtype)}, which load_torch does not read")
        kind = _NUMPY_DTYPES[dtype].newbyteorder("<" if self.byteorder == "little" else ">")
        flat = storage.raw[:storage.raw.size // kind.itemsize * kind.itemsize].view(kind)
        if 0 in size:
            return np.empty(size, dtype=np.float32 if dtype == "bfloat16" else _NUMPY_DTYPES[dtype])
        else:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= flat.size:
                raise _FileError(f"has a tensor (size {size}, stride {stride}, offset {offset}) reaching element "
                                 f"{last} of storage {storage.key!r}, which holds {flat.size}")
            numel = int(np.prod(size, dtype=object))
            self.expanded += max(numel - flat.size, 0) * kind.itemsize
            if self.expanded > _EXPANDED_BYTES:
                raise _FileError(f"has broadcast views (size {size}, stride {stride}) that would copy out more than "
                                 f"{_EXPANDED_BYTES >> 30} GiB beyond what the file stores")
            view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size,
                                                   strides=[s * kind.itemsize for s in stride], writeable=False)
            out = np.array(view, dtype=kind.newbyteorder("="), order="C")  # copy: no aliasing, native order
        if dtype == "bfloat16":  # the high half of a float32: widen exactly
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out

    def _tensor_v2(self, storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
        dtype = storage.dtype if isinstance(storage, _Storage) else None
        return self._tensor(storage, offset, size, stride, "uint8" if dtype is None else dtype)

    def _tensor_v3(self, storage, offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
        if not (isinstance(dtype, _Marker) and dtype.dtype in _NUMPY_DTYPES):
            raise _FileError(f"gives _rebuild_tensor_v3 the dtype {_short(dtype)}, expected a torch dtype")
        return self._tensor(storage, offset, size, stride, dtype.dtype)

    @staticmethod
    def _parameter(data, requires_grad=False, backward_hooks=None, state=None):
        if not isinstance(data, np.ndarray):
            raise _FileError(f"wraps {type(data).__name__} in a Parameter, expected a tensor")
        return data  # a Parameter's values; requires_grad and hooks are training state

    def _from_type_v2(self, func, new_type, args, state):
        # a tensor with Python attributes (state) or a Parameter: the values come from func(*args)
        if not (isinstance(func, _Marker) and func.name in _TENSOR_REBUILDS and id(new_type) in self.tensor_markers
                and isinstance(args, tuple)):
            raise _FileError(f"calls _rebuild_from_type_v2 with {_short(func)}, {_short(new_type)}: "
                             f"expected a tensor rebuild")
        return func(*args)

    @staticmethod
    def _ordered_dict(*args):
        if len(args) > 1 or (args and not isinstance(args[0], (dict, list, tuple))):
            raise _FileError("builds an OrderedDict from something other than a dict or pairs")
        return collections.OrderedDict(*args)


def _check_memo(data: bytes):
    """The C unpickler sizes its memo table by the largest index a PUT names: bound it by the pickle's length.

    (A few bytes asking for entry 2**31 would otherwise allocate tens of gigabytes.)
    """
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and int(arg) > len(data):
            raise _FileError(f"stores pickle memo entry {arg} in a {len(data)}-byte pickle")


def _check_plain(obj, seen=None):
    """Walk what the pickle built: only containers, numbers, strings, bytes and arrays may remain."""
    seen = set() if seen is None else seen
    if isinstance(obj, _PLAIN) or id(obj) in seen:
        return
    if isinstance(obj, (_Marker, _Storage)):
        raise _FileError(f"holds {getattr(obj, 'name', 'a bare storage')} as a value, not a tensor")
    if not isinstance(obj, (dict, list, tuple, set, frozenset)):
        raise _FileError(f"holds a {type(obj).__name__}, which a state_dict never does")
    seen.add(id(obj))
    items = [v for pair in obj.items() for v in pair] if isinstance(obj, dict) else obj
    for item in items:
        _check_plain(item, seen)


def _open_archive(path: Path) -> zipfile.ZipFile:
    with path.open("rb") as f:
        head = f.read(512)
    if not head:
        raise _FileError("is empty")
    if zipfile.is_zipfile(path):
        return zipfile.ZipFile(path)
    if head.startswith(b"PK\x03\x04"):
        raise _FileError("starts like a zip archive but its end (the central directory) is missing or damaged: "
                         "the file is truncated or corrupt")
    if head.startswith(_LEGACY_HEAD) or head[257:262] == b"ustar":
        raise _FileError("is in PyTorch's legacy (pre-1.6) format, which only an unpickler that runs code can "
                         "read; re-save it with a recent PyTorch: torch.save(torch.load(path), path)")
    if head[:1] == b"\x80":
        raise _FileError("is a bare pickle, not a torch.save zip archive; it is not read "
                         "(unpickling it could run code)")
    raise _FileError("is not a zip archive, so not a torch.save file")


def _data_pickle(archive: zipfile.ZipFile) -> str:
    candidates = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(candidates) != 1:
        raise _FileError(f"holds {len(candidates)} <folder>/data.pkl records, expected one: not a torch.save "
                         f"file (a TorchScript archive or another zip?)")
    return candidates[0]


def load_torch(path, key: str | None = None):
    """Read a PyTorch ``torch.save`` file (a state_dict, or a checkpoint holding one) into NumPy arrays.

    PyTorch need not be installed, and nothing in the file is run. The file's
    ``data.pkl`` is unpickled with an allowlist, like PyTorch's ``weights_only=True``:

    - accepted: dicts and ``collections.OrderedDict``, lists, tuples, sets, numbers,
      strings, bytes; tensors (``torch._utils._rebuild_tensor_v2`` / ``_v3``, also
      wrapped in ``_rebuild_parameter`` or ``torch._tensor._rebuild_from_type_v2``)
      on ``torch.*Storage`` / ``UntypedStorage`` records. A tensor becomes a
      C-contiguous NumPy array of its own (views into a shared storage, with offsets
      and strides, are copied out, so no two keys alias), on the host whatever device
      it was saved from. ``requires_grad``, hooks and Python attributes are dropped.
    - dtypes: float32, float64, float16, int64, int32, int16, int8, uint8, uint16,
      uint32, uint64, bool, complex64, complex128 as themselves; **bfloat16 becomes
      float32** (exactly: NumPy has no bfloat16). Big-endian files are converted to
      the machine's byte order.
    - refused, each with one ValueError line naming the file: any other global
      (``os.system``, ``builtins.eval``, a model class, NumPy objects, quantized or
      float8 tensors, ...) before it is imported or called; PyTorch's legacy
      (pre-1.6, non-zip) format and bare pickles, which only a code-running
      unpickler reads; truncated or corrupt zips; a storage file missing or shorter
      than the pickle says; tensors that reach past their storage.

    Why this is safe: ``find_class`` returns only stand-ins made for this load (never
    the real module objects), so the pickle can import nothing and call only the
    rebuild functions written here, which check every argument; BUILD (set state) is
    refused on those stand-ins and storages. Sizes are checked before memory is taken:
    storages against their records, tensors against their storages, the pickle's memo
    indices against its length.

    Args:
        path: a ``.pth`` / ``.pt`` file from ``torch.save`` (the zip format, PyTorch
            1.6+), e.g. torchvision's ``resnet18-f37072fd.pth``.
        key: ``None`` returns what the file holds. For a checkpoint such as
            ``{"state_dict": {...}, "epoch": 9}`` or ``{"model": {...}, ...}``, give the
            entry to return (``key="state_dict"``, ``key="model"``).

    Returns:
        the unpickled object with NumPy arrays for tensors: for a state_dict file an
        ``OrderedDict`` name -> ``np.ndarray``, in the file's order, with PyTorch's keys
        (``num_batches_tracked`` included).
    Raises:
        FileNotFoundError when ``path`` does not exist; ValueError (one line naming the
        file) for everything refused above, and for a ``key`` the file does not hold.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_torch: {path} does not exist")
    try:
        with _open_archive(path) as archive:
            pickle_name = _data_pickle(archive)
            prefix = pickle_name.rsplit("/", 1)[0]
            byteorder = "little"  # PyTorch's default when the record is absent (files from before it was written)
            if f"{prefix}/byteorder" in archive.namelist():
                byteorder = archive.read(f"{prefix}/byteorder").decode("ascii", "replace").strip()
                if byteorder not in ("little", "big"):
                    raise _FileError(f"has byteorder {_short(byteorder)}, expected 'little' or 'big'")
            data = archive.read(pickle_name)
            _check_memo(data)
            obj = _StateDictUnpickler(io.BytesIO(data), archive, prefix, byteorder).load()
            _check_plain(obj)
    except _FileError as exc:
        raise ValueError(f"load_torch: {path} {' '.join(str(exc).split())}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError) as exc:
        raise ValueError(f"load_torch: {path} is a truncated or corrupt zip ({type(exc).__name__}: {exc})") from None
    except OSError:
        raise
    except Exception as exc:  # whatever a malformed pickle makes the C unpickler raise
        raise ValueError(f"load_torch: {path} holds a data.pkl that is not a state_dict pickle "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") from None
    if key is None:
        return obj
    if not isinstance(obj, dict) or key not in obj:
        held = ", ".join(map(_short, list(obj)[:8])) + (", ..." if len(obj) > 8 else "") if isinstance(obj, dict) \
            else f"a {type(obj).__name__}"
        raise ValueError(f"load_torch: {path} holds no {key!r} entry (it holds {held or 'nothing'})")
    return obj[key]
