"""CIFAR-10: find, download (``download.py``), verify, extract and load the official Python batches.

Where the data comes from, in order:

1. ``data_dir/cifar-10-batches-py/`` (or ``data_dir`` itself when it holds the
   batches) is used as is: no download, no checksum.
2. ``cache_dir/cifar-10-batches-py/``, which only ever appears there complete,
   extracted from an archive whose MD5 was checked (extraction goes to a temporary
   directory that is renamed into place at the end).
3. ``cache_dir/cifar-10-python.tar.gz``: its MD5 is checked, then it is extracted.
4. Otherwise the archive is downloaded (``download=True``) into the cache, through
   a temporary file that is renamed into place only when complete.

Every failure a user can meet (network, checksum, unsafe archive, corrupt batch)
raises ``DatasetError`` with a message that says what went wrong and what to do, so
a command-line tool can print it without a traceback.

The batches are pickles. Unpickling can run arbitrary code, so they are read with
an unpickler that only accepts what a CIFAR batch contains (NumPy arrays and
dtypes), and anything else is reported as a corrupt file.
"""
from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .download import default_cache_dir, download_file, file_md5, safe_extract, verify_md5  # noqa: F401 (public)
from .errors import DatasetError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
BATCHES_DIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
IMAGE_SHAPE = (3, 32, 32)  # one row of b'data': 1024 red, 1024 green, 1024 blue, row-major
NUM_CLASSES = 10
# index -> name, as batches.meta lists them (label_names)
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# the official training images' per-channel mean and std on the 0..1 scale (R, G, B), for weights
# that come without their run's own statistics (a run measures its training images itself)
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
# what the error messages tell the user to do instead of downloading; the command line's
# wording by default, the notebook passes its own (it has no flags)
DATA_DIR_HINT = f"pass --data-dir pointing at a directory that holds an existing {BATCHES_DIR}/"


@dataclass
class CIFAR10:
    """CIFAR-10 as host arrays, split the tutorial's way.

    Shapes:
        train_images (N_train,3,32,32) uint8, train_labels (N_train,) int64;
        val_images (val_size,3,32,32) uint8 -- the FIRST val_size training images;
        test_images (10000,3,32,32) uint8 for the official data.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    label_names: list


def download_and_extract(cache_dir=None, url: str = CIFAR10_URL, md5: str | None = CIFAR10_MD5,
                         timeout: float = 30, progress: bool = True, data_dir_hint: str = DATA_DIR_HINT) -> Path:
    """Make sure ``cache_dir/cifar-10-batches-py/`` exists, downloading if needed.

    Uses an already extracted directory, else the cached archive (MD5-checked),
    else downloads the archive. Extraction goes to a temporary directory inside
    the cache that is renamed into place once complete, so a half extraction is
    never mistaken for the data.

    Args:
        cache_dir: where the archive and the extracted batches live (default
            ``~/.cache/minidl``).
        url, md5: the archive's address and expected MD5 (None skips the check).
        timeout: network timeout in seconds for connecting and for each read.
        progress: show a progress bar (tqdm, if installed).
        data_dir_hint: how the user points at a copy on disk, for the messages of a
            failed download (default: the command line's ``--data-dir``).

    Returns:
        the path of the extracted ``cifar-10-batches-py`` directory.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    batches = cache_dir / BATCHES_DIR
    if batches.is_dir():
        return batches
    archive = cache_dir / ARCHIVE_NAME
    if not archive.is_file():
        download_file(url, archive, timeout=timeout, progress=progress, data_dir_hint=data_dir_hint)
    verify_md5(archive, md5)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache_dir))
    try:
        safe_extract(archive, staging)
        if not (staging / BATCHES_DIR).is_dir():
            raise DatasetError(f"{archive} does not contain a {BATCHES_DIR}/ directory; is it the CIFAR-10 "
                               "Python archive?")
        try:
            os.replace(staging / BATCHES_DIR, batches)
        except OSError:
            if not batches.is_dir():  # else another process finished the same extraction first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return batches


# ---- reading the pickled batches ---------------------------------------------
class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR batch holds: NumPy arrays, dtypes and plain data."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy", "ndarray"), ("numpy", "dtype"),
                ("_codecs", "encode")}  # Python 3 writes bytes this way under protocol 2

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR-10 batch")
        return super().find_class(module, name)


def read_batch_dict(path) -> dict:
    """One CIFAR-10 file (a batch or batches.meta) as the dict it pickles, read without trusting it.

    Only what those files hold is rebuilt (NumPy arrays, dtypes, plain data); any other
    object, a truncated file or a non-dict refuses with a DatasetError naming the file.
    For tools that rewrite the files whole (keys beyond b'data' and b'labels' kept);
    ``load_batch`` is the checked (images, labels) view.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _BatchUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DatasetError(f"missing file {path}: the {BATCHES_DIR}/ directory is incomplete") from None
    except Exception as exc:  # truncated or garbled pickles raise many different types
        raise DatasetError(f"corrupt CIFAR-10 file {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"corrupt CIFAR-10 file {path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _key(d: dict, name: str):
    """Look a key up as bytes or str (official files use bytes keys)."""
    for key in (name.encode(), name):
        if key in d:
            return d[key]
    raise KeyError(name)


def load_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch file.

    Returns:
        images (n,3,32,32) uint8 and labels (n,) int64.

    Raises:
        DatasetError: naming the file, when it is truncated, not a pickle, lacks
            b'data'/b'labels', or has the wrong shapes, dtype or label range.
    """
    path = Path(path)
    return batch_arrays(read_batch_dict(path), path)


def batch_arrays(batch: dict, path) -> tuple[np.ndarray, np.ndarray]:
    """The checked images (n,3,32,32) uint8 and labels (n,) int64 of a batch dict read from ``path``.

    Raises:
        DatasetError: as ``load_batch``, naming ``path``.
    """
    try:
        data, labels = _key(batch, "data"), _key(batch, "labels")
    except KeyError as exc:
        raise DatasetError(f"corrupt CIFAR-10 file {path}: missing key b'{exc.args[0]}'") from None
    row = int(np.prod(IMAGE_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"corrupt CIFAR-10 file {path}: b'data' should be uint8 (n, {row}), got {got}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DatasetError(f"corrupt CIFAR-10 file {path}: b'labels' is not a list of integers") from None
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"corrupt CIFAR-10 file {path}: {data.shape[0]} images but labels of shape "
                           f"{labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DatasetError(f"corrupt CIFAR-10 file {path}: labels outside 0..{NUM_CLASSES - 1}")
    return data.reshape((-1,) + IMAGE_SHAPE), labels


def load_label_names(path) -> list:
    """The class names from ``batches.meta`` as str."""
    path = Path(path)
    meta = read_batch_dict(path)
    try:
        names = _key(meta, "label_names")
    except KeyError:
        raise DatasetError(f"corrupt CIFAR-10 file {path}: missing key b'label_names'") from None
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def data_dir_from_env(name: str = "MINIDL_DATA_DIR") -> Path | None:
    """The existing folder the environment variable ``name`` names (absolute); None when unset or empty.

    A relative path is read as the shell that started the process read it: from
    ``$PWD``, and only when no folder is there, from the working directory. They
    differ in a notebook: ``jupyter execute examples/alexnet_tutorial.ipynb`` typed in
    the project's root starts the kernel in ``examples/`` and leaves ``$PWD`` at the root.

    Raises:
        DatasetError: when no folder is there (the message says where it looked),
            rather than letting a loader fall back to downloading.
    """
    value = os.environ.get(name, "")
    if not value:
        return None
    path = Path(value).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        bases = [Path(base) for base in (os.environ.get("PWD"), os.getcwd()) if base and Path(base).is_absolute()]
        candidates = list(dict.fromkeys(base / path for base in bases))
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    tried = " nor ".join(os.path.normpath(candidate) for candidate in candidates)
    raise DatasetError(f"{name}={value} names no folder (not {tried}); set {name} to a folder that holds "
                       f"{BATCHES_DIR}/, absolute or relative to the directory the command (or jupyter) was "
                       f"started in, or unset it to download into {default_cache_dir()}")


def _find_batches(data_dir) -> Path | None:
    """``data_dir/cifar-10-batches-py`` or ``data_dir`` itself when it holds the batches."""
    data_dir = Path(data_dir).expanduser()
    if (data_dir / BATCHES_DIR).is_dir():
        return data_dir / BATCHES_DIR
    if (data_dir / TRAIN_FILES[0]).is_file():
        return data_dir
    return None


def load_cifar10(data_dir=None, cache_dir=None, download: bool = True, val_size: int = 5000,
                 url: str = CIFAR10_URL, md5: str | None = CIFAR10_MD5, timeout: float = 30,
                 progress: bool = True, data_dir_hint: str = DATA_DIR_HINT) -> CIFAR10:
    """Load CIFAR-10, downloading and verifying it into the cache if needed.

    Args:
        data_dir: a directory holding ``cifar-10-batches-py/`` (used as is, no
            checksum); the batches directory itself is accepted too. When it holds
            neither, the cache is used.
        cache_dir: where the archive is downloaded and extracted (default
            ``~/.cache/minidl``).
        download: allow downloading; False raises DatasetError when nothing is on disk.
        val_size: the first ``val_size`` training images become the validation
            split (the tutorial's 45,000/5,000 split for 5000); 0 for none.
        url, md5, timeout, progress, data_dir_hint: see ``download_and_extract`` (a
            notebook passes ``data_dir_hint`` in its own words, e.g. "set MINIDL_DATA_DIR ...").

    Returns:
        a CIFAR10 with uint8 images (N,3,32,32), int64 labels and the label names.
    """
    batches = _find_batches(data_dir) if data_dir is not None else None
    if batches is None:
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        ready = (cache / BATCHES_DIR).is_dir() or (cache / ARCHIVE_NAME).is_file()
        if not download and not ready:
            where = f"{data_dir} nor in {cache}" if data_dir is not None else f"{cache}"
            raise DatasetError(f"CIFAR-10 was not found in {where} and downloading is disabled; "
                               f"allow the download, or {data_dir_hint}")
        batches = download_and_extract(cache, url=url, md5=md5, timeout=timeout, progress=progress,
                                       data_dir_hint=data_dir_hint)
    train = [load_batch(batches / name) for name in TRAIN_FILES]
    train_images = np.concatenate([images for images, _ in train])
    train_labels = np.concatenate([labels for _, labels in train])
    test_images, test_labels = load_batch(batches / TEST_FILE)
    label_names = load_label_names(batches / META_FILE)
    if not 0 <= val_size < len(train_images):
        raise ValueError(f"load_cifar10: val_size must be in [0, {len(train_images)}), got {val_size}")
    return CIFAR10(train_images=train_images[val_size:], train_labels=train_labels[val_size:],
                   val_images=train_images[:val_size], val_labels=train_labels[:val_size],
                   test_images=test_images, test_labels=test_labels, label_names=label_names)
