"""``torch.save``-format files written by hand (no PyTorch), and edits of real ones.

``state_dict_pickle`` writes the pickle opcodes PyTorch writes for an OrderedDict of
tensors (``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``, persistent
storage ids), so the loader's happy path and its refusals are tested where PyTorch is
not installed; ``write_archive`` puts a pickle and storage files into the zip layout.
"""
import struct
import zipfile

import numpy as np

# numpy dtype -> the storage class PyTorch names for it (bfloat16 is written as its uint16 bits)
STORAGE_NAMES = {"float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
                 "int64": "LongStorage", "int32": "IntStorage", "uint8": "ByteStorage", "bool": "BoolStorage"}


def text(s: str) -> bytes:
    """BINUNICODE."""
    data = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data


def integer(n: int) -> bytes:
    """BININT (4-byte signed)."""
    return b"J" + struct.pack("<i", n)


def ints(values) -> bytes:
    """A tuple of ints: MARK ... TUPLE."""
    return b"(" + b"".join(integer(v) for v in values) + b"t"


def glob(module: str, name: str) -> bytes:
    """GLOBAL module.name (what find_class receives)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tensor(storage_key: str, storage_class: str, numel: int, offset: int, size, stride,
           location: str = "cpu") -> bytes:
    """_rebuild_tensor_v2((persistent storage), offset, size, stride, False, OrderedDict())."""
    pid = b"(" + text("storage") + glob("torch", storage_class) + text(storage_key) + text(location) + integer(numel)
    pid += b"tQ"  # TUPLE, BINPERSID
    args = pid + integer(offset) + ints(size) + ints(stride) + b"\x89" + glob("collections", "OrderedDict") + b")R"
    return glob("torch._utils", "_rebuild_tensor_v2") + b"(" + args + b"tR"


def state_dict_pickle(entries) -> bytes:
    """An OrderedDict of (key, tensor opcodes) pairs, as PyTorch pickles a state_dict (protocol 2)."""
    body = b"".join(text(key) + value for key, value in entries)
    return b"\x80\x02" + glob("collections", "OrderedDict") + b")R(" + body + b"u."


def write_archive(path, pickle_bytes: bytes, storages: dict, folder: str = "archive",
                  byteorder: bytes | None = b"little", compression=zipfile.ZIP_STORED):
    """A torch.save-style zip: <folder>/data.pkl, <folder>/data/<key>, version, byteorder."""
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr(f"{folder}/data.pkl", pickle_bytes)
        if byteorder is not None:
            z.writestr(f"{folder}/byteorder", byteorder)
        for key, data in storages.items():
            z.writestr(f"{folder}/data/{key}", bytes(data))
        z.writestr(f"{folder}/version", b"3\n")
    return path


def write_state_dict(path, arrays: dict, folder: str = "archive", byteorder: str = "little"):
    """Each array as its own contiguous storage, keyed "0", "1", ...; the bytes in ``byteorder``."""
    entries, storages = [], {}
    for i, (name, array) in enumerate(arrays.items()):
        array = np.array(array, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
        order = "<" if byteorder == "little" else ">"
        data = array.astype(array.dtype.newbyteorder(order)).tobytes()
        strides = [s // array.itemsize for s in array.strides]
        entries.append((name, tensor(str(i), STORAGE_NAMES[array.dtype.name], array.size, 0, array.shape, strides)))
        storages[str(i)] = data
    return write_archive(path, state_dict_pickle(entries), storages, folder, byteorder.encode())


def rewrite_archive(src, dst, folder: str | None = None, drop=(), replace: dict | None = None):
    """Copy a zip, renaming its top folder, dropping records (by name after the folder), replacing some."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            top, rest = info.filename.split("/", 1)
            if rest in drop:
                continue
            data = replace.get(rest, zin.read(info.filename))
            zout.writestr(f"{folder or top}/{rest}", data)
    return dst
