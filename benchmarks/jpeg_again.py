"""How the CIFAR-10 copy was JPEG-coded, and a copy coded once more, to measure what JPEG costs.

    python benchmarks/jpeg_again.py --data-dir ../shared/data                  # find the settings
    python benchmarks/jpeg_again.py --data-dir ../shared/data --quality 50 --out runs/jpeg50

The shared data set is CIFAR-10 decoded from a JPEG re-encoding (../shared/data/README.md).
Two things this measures:

* **The encoder's settings**, by the "JPEG ghost": coding an already decoded JPEG image
  again with the same quality and chroma subsampling barely changes it (the same
  quantisation tables round the same coefficients to where they already are), while any
  other setting moves it. The mean squared change over a sample of images, for each
  quality and subsampling, has a sharp minimum at the settings the copy was made with.
* **A copy coded once more** (``--quality Q --out DIR``): every training and test image
  passed through JPEG again at quality Q, written in the official layout (the same files,
  keys and labels), so ``--data-dir DIR`` trains on it unchanged. Training the same
  recipe on it measures what one more JPEG pass costs in accuracy. At the copy's own
  settings the pass changes almost nothing (the ghost), so it only measures anything at
  a lower quality.

Needs Pillow (the ``images`` extra).
"""
from __future__ import annotations

import argparse
import io
import pickle
import sys
from pathlib import Path

import numpy as np

import common  # noqa: F401  (puts the checkout on sys.path)
from minidl.data.cifar10 import TRAIN_FILES, DatasetError, batch_arrays, load_batch, read_batch_dict

BATCHES = "cifar-10-batches-py"
SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}   # Pillow's codes


def _image_module():
    try:
        from PIL import Image
    except ImportError:
        raise SystemExit("jpeg_again: needs Pillow (pip install 'minidl[images]')") from None
    return Image


def jpeg_pass(images: np.ndarray, quality: int, subsampling: str = "4:2:0") -> np.ndarray:
    """Each image coded as a JPEG and decoded again, with Pillow.

    Args:
        images: (N, 3, H, W) uint8.
        quality: 1..100 (Pillow's scale; libjpeg's standard tables scaled).
        subsampling: chroma resolution, "4:4:4", "4:2:2" or "4:2:0".
    Returns:
        (N, 3, H, W) uint8.
    """
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"jpeg_pass: expected (N, 3, H, W) uint8 images, got {images.shape} {images.dtype}")
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg_pass: quality must be 1..100, got {quality}")
    if subsampling not in SUBSAMPLING:
        raise ValueError(f"jpeg_pass: subsampling must be one of {sorted(SUBSAMPLING)}, got {subsampling!r}")
    Image = _image_module()
    out = np.empty_like(images)
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(
            buffer, "JPEG", quality=quality, subsampling=SUBSAMPLING[subsampling])
        out[i] = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")).transpose(2, 0, 1)
    return out


def ghost_table(images: np.ndarray, qualities, subsamplings=("4:4:4", "4:2:0")) -> dict:
    """Mean squared change of one more JPEG pass, {(subsampling, quality): mse}, 0..255 scale."""
    reference = images.astype(np.float64)
    return {(s, q): float(np.mean((jpeg_pass(images, q, s) - reference) ** 2))
            for s in subsamplings for q in qualities}


def deepest_dip(table: dict) -> tuple:
    """The (subsampling, quality) whose change is smallest against its neighbours' in quality.

    Near quality 100 every image changes little, so the smallest change itself says nothing;
    the ghost is a dip: one more pass at the copy's own settings changes the images far less
    than a pass a step of quality above or below. Returns ((subsampling, quality), ratio of
    its change to the smaller of its two neighbours'); only qualities with both neighbours
    in the table count.
    """
    best, best_ratio = None, float("inf")
    for (s, q), mse in table.items():
        neighbours = [table[(s, n)] for n in _neighbours(table, s, q)]
        if len(neighbours) == 2:
            ratio = mse / max(min(neighbours), 1e-12)
            if ratio < best_ratio:
                best, best_ratio = (s, q), ratio
    if best is None:
        raise ValueError("deepest_dip: needs at least three qualities per subsampling")
    return best, best_ratio


def _neighbours(table: dict, subsampling: str, quality: int) -> list:
    qualities = sorted(q for s, q in table if s == subsampling)
    i = qualities.index(quality)
    return qualities[max(i - 1, 0):i] + qualities[i + 1:i + 2]


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB of a mean squared error on the 0..255 scale."""
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def _batches_dir(data_dir) -> Path:
    """``data_dir/cifar-10-batches-py``, or ``data_dir`` itself when it holds the batches."""
    src = Path(data_dir)
    src = src / BATCHES if (src / BATCHES).is_dir() else src
    if not (src / TRAIN_FILES[0]).is_file():
        raise DatasetError(f"no CIFAR-10 batches in {data_dir} (expected {BATCHES}/)")
    return src


def write_coded_copy(data_dir, out, quality: int, subsampling: str = "4:2:0") -> float:
    """Write ``out/cifar-10-batches-py/`` with every image of ``data_dir``'s passed through JPEG once more.

    Returns the mean squared change over all images (0..255 scale). batches.meta is copied
    as it is; each batch keeps its labels, file names and batch label.
    """
    src = _batches_dir(data_dir)
    dst = Path(out) / BATCHES
    dst.mkdir(parents=True, exist_ok=True)
    total, count = 0.0, 0
    for name in (*TRAIN_FILES, "test_batch"):
        batch = read_batch_dict(src / name)                     # the whole dict, to keep its other keys
        images, _ = batch_arrays(batch, src / name)             # checked: (n, 3, 32, 32) uint8
        coded = jpeg_pass(images, quality, subsampling)
        total += float(np.sum((coded.astype(np.float64) - images) ** 2))
        count += coded.size
        batch[b"data"] = coded.reshape(len(coded), -1)
        tmp = dst / (name + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(batch, f, protocol=4)
        tmp.replace(dst / name)
    meta = (src / "batches.meta").read_bytes()
    (dst / "batches.meta").write_bytes(meta)
    return total / count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sample", type=int, default=1000, help="test images the ghost table uses (default 1000)")
    parser.add_argument("--quality", type=int, help="write a copy coded once more at this quality (with --out)")
    parser.add_argument("--subsampling", choices=sorted(SUBSAMPLING), default="4:2:0")
    parser.add_argument("--out", help="where the copy goes (its cifar-10-batches-py/ is written there)")
    args = parser.parse_args(argv)
    if (args.quality is None) != (args.out is None):
        parser.error("--quality and --out go together")
    try:
        if args.quality is not None:
            mse = write_coded_copy(args.data_dir, args.out, args.quality, args.subsampling)
            print(f"wrote {Path(args.out) / BATCHES}: quality {args.quality} {args.subsampling}, "
                  f"mean squared change {mse:.2f} (PSNR {psnr(mse):.1f} dB)")
            return 0
        images, _ = load_batch(_batches_dir(args.data_dir) / "test_batch")
    except (DatasetError, OSError, ValueError) as exc:
        print(f"jpeg_again: {exc}", file=sys.stderr)
        return 1
    table = ghost_table(images[:args.sample], qualities=range(50, 101, 5))
    print(f"mean squared change of one more JPEG pass ({min(args.sample, len(images))} test images, 0..255):")
    print("quality  " + "  ".join(f"{s:>7}" for s in ("4:4:4", "4:2:0")))
    for q in range(50, 101, 5):
        print(f"{q:7d}  " + "  ".join(f"{table[(s, q)]:7.2f}" for s in ("4:4:4", "4:2:0")))
    (s, q), depth = deepest_dip(table)
    print(f"deepest dip: quality {q}, {s} ({table[(s, q)]:.2f}, {depth:.2f}x its smaller neighbour): "
          "the settings the copy was most likely coded with")
    return 0


if __name__ == "__main__":
    sys.exit(main())
