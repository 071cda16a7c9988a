"""One image file -> one uint8 crop: Pillow decoding, draft mode, crop boxes, resize.

The per-image half of the folder pipeline (the per-batch float work happens on
the device, see ``ImageFolderLoader``). A crop plan says which box of the source
image becomes the (size x size) output and whether it is mirrored:

* ``ResizeCenterCrop`` (evaluation): resize the shorter side to ``resize_size``,
  then cut the central ``size x size`` square (torchvision's Resize +
  CenterCrop; with 256 -> 224, the paper's test crops).
* ``RandomResizedCrop`` (training): a box of a random fraction of the image's area
  (``scale``) and a random aspect ratio (``ratio``, log-uniform), resized to
  ``size x size``, mirrored with probability 1/2 (torchvision's
  RandomResizedCrop + RandomHorizontalFlip; Inception's augmentation).
  ``scale=(0.766, 0.766), ratio=(1, 1)`` on a 256x256 image is the paper's random
  224x224 crop of a 256x256 image.

Randomness comes in as an array of uniforms in [0, 1) per image (``plan.draws``
of them), drawn by the loader from ``default_rng([seed, epoch, batch, 1])``: a
plan is a pure function of (image size, uniforms), whichever thread runs it.

Decoding does the box and the resize in one ``Image.resize(box=...)`` call (only
the output's pixels are computed; for the centre crop the result equals resizing
the whole image and then cropping). A JPEG whose box is at least twice the output
size is decoded in draft mode first: libjpeg scales it by 1/2, 1/4 or 1/8 while
decoding (DCT scaling), so a 4000x3000 photo is never decoded at full size for a
224 crop. Pillow is imported on first use (``pip install -e ".[images]"``).
"""
from __future__ import annotations

import math

import numpy as np

from .errors import DatasetError

RANDOM_CROP_ATTEMPTS = 10  # tries at a box that fits before falling back to a centre crop, as torchvision


def require_pillow():
    """The ``PIL.Image`` module, or a DatasetError that says how to install Pillow."""
    try:
        from PIL import Image
    except ImportError:
        raise DatasetError('reading image folders needs Pillow: pip install -e ".[images]" '
                           '(or pip install "Pillow>=10")') from None
    return Image


class ResizeCenterCrop:
    """Shorter side to ``resize_size``, then the central ``size x size`` square; never mirrored.

    Args:
        size: output side.
        resize_size: the shorter side before cropping, >= size (default
            ``round(size * 8 / 7)``: 256 for 224, the usual ImageNet ratio).
    """

    draws = 0

    def __init__(self, size: int, resize_size: int | None = None):
        self.size = int(size)
        self.resize_size = int(resize_size) if resize_size is not None else int(round(self.size * 8 / 7))
        if self.size <= 0 or self.resize_size < self.size:
            raise ValueError(f"ResizeCenterCrop: expected 0 < size <= resize_size, got {size} and {resize_size}")

    def box(self, width: int, height: int, uniforms=None):
        """The source box (left, top, right, bottom) in pixels of a (width, height) image, and False (no flip).

        Same geometry as resizing to (new_w, new_h) with the shorter side at
        ``resize_size`` (the longer one ``int(resize_size * long / short)``), then
        cropping at ``round((new - size) / 2)``; mapped back to source pixels.
        """
        short, long_ = (width, height) if width <= height else (height, width)
        long_new = int(self.resize_size * long_ / short)
        new_w, new_h = (self.resize_size, long_new) if width <= height else (long_new, self.resize_size)
        left, top = int(round((new_w - self.size) / 2.0)), int(round((new_h - self.size) / 2.0))
        sx, sy = width / new_w, height / new_h
        return (left * sx, top * sy, (left + self.size) * sx, (top + self.size) * sy), False

    def __repr__(self) -> str:
        return f"ResizeCenterCrop(size={self.size}, resize_size={self.resize_size})"


class RandomResizedCrop:
    """A random box of ``scale`` x the area and aspect ratio in ``ratio``, resized to ``size``; mirrored half the time.

    Args:
        size: output side.
        scale: (min, max) fraction of the image's area the box covers.
        ratio: (min, max) width / height of the box, drawn log-uniformly.
        flip: mirror left-right with probability 1/2.
    """

    draws = 2 * RANDOM_CROP_ATTEMPTS + 3  # (area, ratio) per attempt, then top, left, flip

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip: bool = True):
        self.size, self.flip = int(size), bool(flip)
        self.scale, self.ratio = tuple(map(float, scale)), tuple(map(float, ratio))
        if self.size <= 0 or not 0 < self.scale[0] <= self.scale[1] or not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"RandomResizedCrop: expected size > 0 and increasing positive scale and ratio ranges, "
                             f"got {size}, {scale}, {ratio}")

    def box(self, width: int, height: int, uniforms):
        """The source box (left, top, right, bottom) and whether to mirror, from ``draws`` uniforms."""
        u = uniforms
        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for attempt in range(RANDOM_CROP_ATTEMPTS):
            target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[2 * attempt])
            aspect = math.exp(log_lo + (log_hi - log_lo) * u[2 * attempt + 1])
            w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(u[-3] * (height - h + 1))
                left = int(u[-2] * (width - w + 1))
                break
        else:  # no attempt fitted: the largest central box whose aspect is inside ``ratio``
            in_ratio = width / height
            if in_ratio < self.ratio[0]:
                w, h = width, int(round(width / self.ratio[0]))
            elif in_ratio > self.ratio[1]:
                w, h = int(round(height * self.ratio[1])), height
            else:
                w, h = width, height
            top, left = (height - h) // 2, (width - w) // 2
        return (left, top, left + w, top + h), self.flip and bool(u[-1] < 0.5)

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, flip={self.flip})"


class UnreadableImage(Exception):
    """Pillow could not open or decode a file; the message names the file and Pillow's reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def draft_scale(box, size: int) -> int:
    """The largest JPEG DCT reduction (1, 2, 4 or 8) that keeps ``box`` at least ``size`` pixels on each side."""
    room = min(box[2] - box[0], box[3] - box[1]) / size
    return next((s for s in (8, 4, 2) if s <= room), 1)


def decode_crop(path: str, plan, uniforms, out) -> None:
    """Decode ``path``, apply ``plan`` and write the crop into ``out`` (C,size,size) uint8.

    Grayscale, palette, CMYK and RGBA images become RGB (alpha is dropped, as
    ``Image.convert("RGB")`` does; a palette's transparency goes through RGBA first).

    Raises:
        UnreadableImage: when Pillow fails on the file, whatever it raised (a
            missing, truncated, corrupt or unsupported file; Pillow raises OSError,
            ValueError, SyntaxError and more). Errors of the plan propagate as they are.
    """
    # file -> (draft-)decoded image -> box resized to (size,size) -> flip -> out (3,size,size)
    image_module = require_pillow()
    try:
        image = image_module.open(path)
    except Exception as exc:  # noqa: BLE001 - any failure here is the file's
        raise UnreadableImage(path, f"{type(exc).__name__}: {exc}") from None
    with image:
        width, height = image.size
        box, flip = plan.box(width, height, uniforms)
        try:
            crop = _crop_resize(image_module, image, box, plan.size)
        except Exception as exc:  # noqa: BLE001
            raise UnreadableImage(path, f"{type(exc).__name__}: {exc}") from None
    pixels = np.asarray(crop)  # (size,size,3) RGB or (size,size) L
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if flip:
        pixels = pixels[:, ::-1]
    out[...] = pixels.transpose(2, 0, 1)  # a single-channel image broadcasts to all three


def _crop_resize(image_module, image, box, size: int):
    """The (size x size) resize of ``box`` of an opened ``image``, decoding it (in draft mode if that pays)."""
    if image.format == "JPEG":
        scale = draft_scale(box, size)
        width = image.size[0]
        # asking for (width // scale, height // scale) makes Pillow pick exactly ``scale``
        drafted = image.draft("RGB", (width // scale, image.size[1] // scale)) if scale > 1 else None
        if drafted is not None:
            factor = drafted[1][2] / width  # 1 / the reduction applied: source pixel x -> x * factor
            box = tuple(v * factor for v in box)
    if image.mode not in ("RGB", "L"):
        # "L" is resized first and converted after (same pixels, a third of the work)
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        image = image.convert("RGB")
    return image.resize((size, size), image_module.Resampling.BILINEAR, box=box)
