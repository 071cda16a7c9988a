#!/usr/bin/env python3
"""Write a small CIFAR-10 subset in the official layout, to carry to a machine without network.

    python benchmarks/prepare_gpu_data.py                      # ../shared/data -> .gpu_data
    python benchmarks/prepare_gpu_data.py --train-per-batch 1000 --test 1000

Reads ``--data-dir``/cifar-10-batches-py (the official pickled batches) and writes
``--out``/cifar-10-batches-py/ with the same five training files, test_batch and
batches.meta, each a pickled dict with the official keys (b'data' uint8 (n, 3072),
b'labels', b'filenames', b'batch_label'; pickle protocol 4, like ../shared/data), so
``minidl.data.load_cifar10(data_dir=--out)`` and examples/alexnet_cifar10.py read
it unchanged. Each file keeps the first ``--train-per-batch`` images of its batch
(default 2,000, so 10,000 training images) and test_batch the first ``--test``
(default 2,000): 12,000 images, about 37 MB. The output is refused above
``--max-mb`` (default 40).
"""
from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

import common  # noqa: F401  (puts the checkout on sys.path)
from minidl.data.cifar10 import TRAIN_FILES, DatasetError, read_batch_dict

ROOT = Path(__file__).resolve().parents[1]
BATCHES = "cifar-10-batches-py"


def _subset(batch: dict, n: int) -> dict:
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) < n:
        raise ValueError(f"prepare_gpu_data: expected b'data' of shape (>= {n}, 3072) uint8, got {data.shape}")
    out = {b"batch_label": batch.get(b"batch_label", b"subset"), b"data": np.ascontiguousarray(data[:n]),
           b"labels": [int(v) for v in list(batch[b"labels"])[:n]]}
    if b"filenames" in batch:
        out[b"filenames"] = list(batch[b"filenames"])[:n]
    return out


def _dump(obj, path: Path) -> int:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)  # 2 would store bytes as latin-1 text, ~1.5x larger
    return path.stat().st_size


def prepare(data_dir, out, train_per_batch=2000, test=2000, max_mb=40.0) -> int:
    """Write the subset; returns its size in bytes. Raises ValueError if it would exceed ``max_mb``."""
    src = Path(data_dir)
    src = src / BATCHES if (src / BATCHES).is_dir() else src
    if not (src / TRAIN_FILES[0]).is_file():
        raise FileNotFoundError(f"prepare_gpu_data: no CIFAR-10 batches in {data_dir} (expected {BATCHES}/)")
    estimate = (5 * train_per_batch + test) * 3072 / 1e6
    if estimate > max_mb:
        raise ValueError(f"prepare_gpu_data: {5 * train_per_batch + test} images are about {estimate:.1f} MB, "
                         f"over --max-mb {max_mb}")
    dst = Path(out) / BATCHES
    dst.mkdir(parents=True, exist_ok=True)
    total = 0
    for name in TRAIN_FILES:
        total += _dump(_subset(read_batch_dict(src / name), train_per_batch), dst / name)
    total += _dump(_subset(read_batch_dict(src / "test_batch"), test), dst / "test_batch")
    total += _dump(read_batch_dict(src / "batches.meta"), dst / "batches.meta")
    if total > max_mb * 1e6:
        raise ValueError(f"prepare_gpu_data: wrote {total / 1e6:.1f} MB, over --max-mb {max_mb}")
    return total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"),
                   help="directory holding cifar-10-batches-py/ (default ../shared/data)")
    p.add_argument("--out", default=str(ROOT / ".gpu_data"), help="output directory (default .gpu_data)")
    p.add_argument("--train-per-batch", type=int, default=2000, help="images kept from each training batch")
    p.add_argument("--test", type=int, default=2000, help="images kept from test_batch")
    p.add_argument("--max-mb", type=float, default=40.0, help="refuse to write more than this (default 40)")
    args = p.parse_args(argv)
    try:
        size = prepare(args.data_dir, args.out, args.train_per_batch, args.test, args.max_mb)
    except (OSError, ValueError, DatasetError) as exc:
        print(exc, file=sys.stderr)
        return 1
    n_train = 5 * args.train_per_batch
    print(f"wrote {n_train} training + {args.test} test images ({size / 1e6:.1f} MB) to "
          f"{Path(args.out) / BATCHES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
