"""Checkpoints as plain ``.npz`` files, without pickle, written atomically.

A checkpoint is one nested state (dicts, lists, tuples, numbers, strings, None and
arrays), for example ``{"model": model.state_dict(), "optim": opt.state_dict(),
"trainer": {...}}``. ``save_checkpoint`` splits it into

* one ``.npz`` entry per array, named by its path in the state
  (``"model/conv1.weight"``, ``"optim/momentum/0"``, ...), and
* one ``"__meta__"`` entry: the rest of the state as JSON text in a 0-d unicode
  array, where each array is replaced by a reference to its entry.

So ``numpy.load(path, allow_pickle=False)`` reads every entry, and loading a
checkpoint never runs code from the file. Python floats go through JSON's
shortest round-trip form, so they come back bit for bit; NumPy scalars are kept
as 0-d arrays so their dtype survives too.

Every file minidl writes goes through ``atomic_write``: a temporary file in the
same directory, flushed and fsynced, then renamed over the target and the
directory fsynced. A crash at any moment leaves either the old file or the new
one, never a mix, so a run killed while writing its checkpoint can still resume.
"""
from __future__ import annotations

import json
import os
import time
import zipfile
import zlib

import numpy as np

from . import backend

FORMAT = "minidl-checkpoint"
FORMAT_VERSION = 1
META_KEY = "__meta__"
# Test hook: seconds to pause inside every atomic write, after the data is written
# to the temporary file and before it is renamed, so that tests can kill a run
# while it writes a checkpoint. Unset in normal use.
_WRITE_DELAY_ENV = "MINIDL_TEST_WRITE_DELAY"


class CheckpointError(Exception):
    """A checkpoint that cannot be read (missing, truncated, corrupt, wrong format)."""


# ---- atomic files -------------------------------------------------------------

def _fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened for fsync
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write, mode: str = "wb") -> None:
    """Write ``path`` so that readers see the old file or the new one, never a mix.

    Args:
        path: the file to (re)place.
        write: called with an open file object; writes the whole content.
        mode: ``"wb"`` for bytes, ``"w"`` for text (UTF-8, ``\\n`` line ends).
    """
    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    # A fixed temporary name: a run killed mid-write leaves at most one stale
    # temporary file, which the next write simply overwrites.
    tmp = os.path.join(directory, f".{name}.tmp")
    text = {"encoding": "utf-8", "newline": "\n"} if "b" not in mode else {}
    try:
        with open(tmp, mode, **text) as f:
            write(f)
            delay = os.environ.get(_WRITE_DELAY_ENV)
            if delay:
                time.sleep(float(delay))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


# ---- nested state <-> (JSON skeleton, arrays) ------------------------------------

def _encode(obj, path: str, arrays: dict):
    """The JSON-able skeleton of ``obj``; its arrays go into ``arrays`` keyed by path."""
    if backend.is_array(obj) or isinstance(obj, np.generic):
        array = backend.to_numpy(obj) if backend.is_array(obj) else np.asarray(obj)
        if array.dtype.hasobject:
            raise ValueError(f"save_checkpoint: {path!r} is an object array, which would need pickle")
        if path in arrays:
            raise ValueError(f"save_checkpoint: two arrays map to the same entry {path!r}")
        arrays[path] = array
        return {"__scalar__" if isinstance(obj, np.generic) else "__array__": path}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{path}/{i}", arrays) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}/{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, f"{path}/{k}", arrays) for k, v in obj.items()}
        # Non-string keys (e.g. parameter indices) would turn into strings in JSON.
        for k in obj:
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise ValueError(f"save_checkpoint: dict key {k!r} at {path!r} is not a str or int")
        return {"__items__": [[k, _encode(v, f"{path}/{k}", arrays)] for k, v in obj.items()]}
    raise ValueError(f"save_checkpoint: cannot store {type(obj).__name__} at {path!r} "
                     "(expected arrays, numbers, strings, None, lists, tuples or dicts)")


def _decode(obj, arrays: dict):
    """Inverse of ``_encode``."""
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__array__" in obj:
        return arrays[obj["__array__"]]
    if "__scalar__" in obj:
        return arrays[obj["__scalar__"]][()]
    if "__tuple__" in obj:
        return tuple(_decode(v, arrays) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {k: _decode(v, arrays) for k, v in obj["__items__"]}
    return {k: _decode(v, arrays) for k, v in obj.items()}


# ---- public API ------------------------------------------------------------------

def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` to ``path`` as a pickle-free ``.npz``, atomically.

    Args:
        path: target file, conventionally ending in ``.npz``.
        state: a dict of str -> nested state (see the module docstring). Arrays may
            live on any device; they are copied to the host.
    """
    if not isinstance(state, dict):
        raise ValueError(f"save_checkpoint: expected a dict, got {type(state).__name__}")
    arrays: dict = {}
    skeleton = {k: _encode(v, k, arrays) for k, v in state.items()}
    meta = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "state": skeleton})
    entries = {META_KEY: np.array(meta)}  # a 0-d '<U...' array: no pickle needed
    entries.update(arrays)
    atomic_write(path, lambda f: np.savez(f, **entries))


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by ``save_checkpoint``.

    Returns:
        the nested state, with every array as a host NumPy array.
    Raises:
        CheckpointError: naming the file, when it is missing, truncated, corrupt or
            not a minidl checkpoint. The file itself is left untouched.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            # Read every entry now: the zip's CRC check catches flipped bytes.
            entries = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, KeyError, AttributeError, TypeError, zipfile.BadZipFile,
            zlib.error) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated and cannot be read "
                              f"({type(exc).__name__}: {exc})") from None
    if not isinstance(entries, dict) or META_KEY not in entries:
        raise CheckpointError(f"checkpoint {path} is not a minidl checkpoint (no {META_KEY} entry)")
    try:
        meta = json.loads(str(entries.pop(META_KEY)[()]))
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"checkpoint {path} is not a minidl checkpoint")
        if meta.get("version", 0) > FORMAT_VERSION:
            raise CheckpointError(f"checkpoint {path} has format version {meta['version']}; this minidl "
                                  f"reads up to version {FORMAT_VERSION} (upgrade minidl)")
        return _decode(meta["state"], entries)
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {path} has an unreadable header "
                              f"({type(exc).__name__}: {exc})") from None
