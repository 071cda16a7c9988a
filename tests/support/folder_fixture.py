"""Small image folders written by the tests themselves (Pillow needed).

    from folder_fixture import write_image_folder, photo
    pixels = write_image_folder(tmp_path / "ds", {"cat": 5, "dog": 4}, size=(40, 30))

Images are "photo-like": a smooth colour gradient with noise, different for every
file, so a crop taken from the wrong place or a mirrored one shows in the pixels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def photo(width: int, height: int, seed: int) -> np.ndarray:
    """A (height, width, 3) uint8 image: per-channel gradients plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([xx / max(width - 1, 1), yy / max(height - 1, 1), (xx + yy) / max(width + height - 2, 1)], -1)
    tint = rng.uniform(0.2, 1.0, size=3)
    image = 255 * base * tint + rng.normal(0, 25, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_image_folder(root, counts: dict, size=(40, 30), ext: str = "png", seed: int = 0) -> dict:
    """Write ``root/<class>/<i>.<ext>`` for each class and count; returns {path: (H,W,3) pixels written}.

    PNG is lossless, so the returned pixels are exactly what decodes; JPEG is not.
    """
    from PIL import Image

    root = Path(root)
    written = {}
    for c, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = photo(size[0], size[1], seed=seed * 10007 + c * 101 + i)
            path = root / name / f"{i:03d}.{ext}"
            Image.fromarray(pixels).save(path, **({"quality": 95} if ext in ("jpg", "jpeg") else {}))
            written[str(path)] = pixels
    return written
