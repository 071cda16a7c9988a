"""A tiny CIFAR-10 in the official on-disk format, for tests (no real data, no internet).

    from cifar_fixture import write_cifar10, make_archive, serve_file
    fx = write_cifar10(tmp_path, n_per_batch=8, n_test=8)   # tmp_path/cifar-10-batches-py/
    load_cifar10(data_dir=tmp_path, val_size=4)

The batches are pickled like the official files: protocol 2, bytes keys, b'data'
uint8 (n, 3072) with rows of 1024 red, 1024 green, 1024 blue values, b'labels' a
list of ints, b'filenames', b'batch_label'; batches.meta holds b'label_names'.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.server
import pickle
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]


@dataclass
class CifarFixture:
    """What was written: the directories and the arrays a loader should give back."""

    root: Path  # holds cifar-10-batches-py/
    batches_dir: Path
    train_images: np.ndarray  # (5*n_per_batch, 3, 32, 32) uint8, batches 1..5 in order
    train_labels: np.ndarray  # int64
    test_images: np.ndarray
    test_labels: np.ndarray
    label_names: list


def _write_batch(path: Path, images: np.ndarray, labels: np.ndarray, batch_label: str) -> None:
    batch = {b"batch_label": batch_label.encode(), b"labels": [int(v) for v in labels],
             b"data": images.reshape(len(images), -1),
             b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(images))]}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def write_cifar10(root, n_per_batch: int = 8, n_test: int = 8, seed: int = 0) -> CifarFixture:
    """Write ``root/cifar-10-batches-py/`` with random images; labels cycle through 0..9."""
    root = Path(root)
    batches_dir = root / "cifar-10-batches-py"
    batches_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_train = 5 * n_per_batch
    train_images = rng.integers(0, 256, size=(n_train, 3, 32, 32), dtype=np.uint8)
    train_labels = (np.arange(n_train) * 7 + 3) % 10  # not sorted, so order mistakes show
    test_images = rng.integers(0, 256, size=(n_test, 3, 32, 32), dtype=np.uint8)
    test_labels = np.arange(n_test) % 10
    for i, name in enumerate(TRAIN_FILES):
        part = slice(i * n_per_batch, (i + 1) * n_per_batch)
        _write_batch(batches_dir / name, train_images[part], train_labels[part], f"training batch {i + 1} of 5")
    _write_batch(batches_dir / "test_batch", test_images, test_labels, "testing batch 1 of 1")
    meta = {b"label_names": [n.encode() for n in LABEL_NAMES], b"num_cases_per_batch": n_per_batch,
            b"num_vis": 3072}
    with open(batches_dir / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return CifarFixture(root, batches_dir, train_images, train_labels.astype(np.int64), test_images,
                        test_labels.astype(np.int64), list(LABEL_NAMES))


def md5_of(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def make_archive(fixture: CifarFixture, archive_path) -> tuple[Path, str]:
    """Pack ``cifar-10-batches-py/`` into a .tar.gz like the official one; returns (path, md5)."""
    archive_path = Path(archive_path)
    archive_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive_path, "w:gz") as tar:
        tar.add(fixture.batches_dir, arcname="cifar-10-batches-py")
    return archive_path, md5_of(archive_path)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@contextlib.contextmanager
def serve_directory(directory):
    """Serve ``directory`` over HTTP on 127.0.0.1 (a free port); yields the base URL."""
    handler = lambda *a, **kw: _QuietHandler(*a, directory=str(directory), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port() -> int:
    """A local port with nothing listening (bound, then released)."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
