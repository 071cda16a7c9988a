"""What JPEG left in a CIFAR-10 copy: 8x8 block edges, colour detail, and the test images' twins in training.

    python benchmarks/jpeg_traces.py --data-dir ../shared/data

The shared data set is CIFAR-10 decoded from a JPEG re-encoding (../shared/data/README.md),
and both minidl's ResNet-20 and airbench94 land a few points below the published
accuracies on it. This prints three measurements that say how much JPEG changed the
images, for the docs:

* block edges: JPEG codes 8x8 blocks independently, so neighbouring pixels differ more
  across a block's edge (columns 7|8, 15|16, 23|24) than inside a block; the ratio of the
  two mean absolute differences is 1.0 for images that were never block-coded;
* colour detail: the mean absolute horizontal difference of the chroma planes (Cb, Cr)
  against that of luma (Y), on the 0..255 scale; JPEG usually stores chroma at half
  resolution (4:2:0), which removes most of the chroma's fine detail;
* near-duplicates: each test image's nearest training image by cosine similarity of the
  centred pixels, and how often their labels agree, by similarity (a label mix-up in the
  copy would show as disagreement among the closest pairs).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import common  # noqa: F401  (puts the checkout on sys.path)
from minidl.data import DatasetError, load_cifar10

BLOCK = 8


def block_edge_ratio(images: np.ndarray) -> float:
    """Mean |x[c+1] - x[c]| across 8x8 block edges over that inside blocks, all rows and channels.

    Args:
        images: (N, C, H, W) uint8 with W a multiple of 8.
    """
    steps = np.abs(np.diff(images.astype(np.float32), axis=3)).mean(axis=(0, 1, 2))   # (W - 1,)
    edges = np.arange(BLOCK - 1, images.shape[3] - 1, BLOCK)
    inside = np.setdiff1d(np.arange(images.shape[3] - 1), edges)
    return float(steps[edges].mean() / steps[inside].mean())


def colour_detail(images: np.ndarray) -> dict:
    """Mean absolute horizontal step of Y, Cb and Cr (JPEG's colour transform), 0..255 scale."""
    r, g, b = (images[:, i].astype(np.float32) for i in range(3))
    planes = {"Y": 0.299 * r + 0.587 * g + 0.114 * b, "Cb": -0.168736 * r - 0.331264 * g + 0.5 * b,
              "Cr": 0.5 * r - 0.418688 * g - 0.081312 * b}
    return {name: float(np.abs(np.diff(p, axis=2)).mean()) for name, p in planes.items()}


def _unit_rows(images: np.ndarray) -> np.ndarray:
    x = images.reshape(len(images), -1).astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)


def nearest_training_images(test: np.ndarray, train: np.ndarray, chunk: int = 1000):
    """(cosine similarity, index) of each test image's nearest training image (centred pixels)."""
    a, b = _unit_rows(test), _unit_rows(train)
    best, index = np.empty(len(a), np.float32), np.empty(len(a), np.int64)
    for start in range(0, len(a), chunk):
        similarity = a[start:start + chunk] @ b.T
        index[start:start + chunk] = similarity.argmax(axis=1)
        best[start:start + chunk] = similarity.max(axis=1)
    return best, index


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args(argv)
    try:
        data = load_cifar10(data_dir=args.data_dir, cache_dir=args.data_dir, download=False, val_size=0,
                            progress=False)
    except DatasetError as exc:
        print(f"jpeg_traces: {exc}", file=sys.stderr)
        return 1
    print(f"block edges: {block_edge_ratio(data.test_images):.3f} (test), "
          f"{block_edge_ratio(data.train_images):.3f} (training); 1.0 = never block-coded")
    detail = colour_detail(data.test_images)
    print("colour detail (test, mean |horizontal step|): " + ", ".join(f"{k} {v:.2f}" for k, v in detail.items())
          + f"; chroma / luma {(detail['Cb'] + detail['Cr']) / (2 * detail['Y']):.3f}")
    similarity, index = nearest_training_images(data.test_images, data.train_images)
    agree = data.test_labels == data.train_labels[index]
    for threshold in (0.99, 0.98, 0.95, 0.9):
        close = similarity >= threshold
        share = f"{agree[close].mean():.3f}" if close.any() else "-"
        print(f"nearest training image at cosine >= {threshold}: {int(close.sum())} test images, labels agree {share}")
    print(f"1-nearest-neighbour accuracy: {agree.mean():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
