"""Batch transforms for images: standardisation, bilinear resize, random crop and flip.

Every transform works on a whole batch (N,C,H,W) at once and runs where the batch
lives: the array library comes from the array (NumPy or CuPy), so the loader moves
compact uint8 images to the device first and all float work happens there. Random
choices (crop offsets, flips) are drawn on the host from an explicit NumPy
Generator and only the small index arrays travel to the device, so a given
generator gives the same result on every device.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..kernels import dispatch


def _check_images(x, name: str) -> None:
    if not backend.is_array(x) or x.ndim != 4:
        got = f"shape {tuple(x.shape)}" if backend.is_array(x) else type(x).__name__
        raise ValueError(f"{name}: expected an image batch (N,C,H,W), got {got}")


def _float_dtype(x):
    """float64 stays float64 (for exact tests); everything else computes in float32."""
    return np.float64 if x.dtype == np.float64 else np.float32


def per_image_standardization(x):
    """Scale each image to mean 0 and standard deviation 1, like TensorFlow's op.

    ``(x - mean) / max(std, 1/sqrt(num_pixels))`` with mean and (population) std
    over all C*H*W values of one image; the lower bound keeps a constant image
    from dividing by zero (it maps to all zeros).

    Args:
        x: (N,C,H,W) uint8 or float array on any device.

    Returns:
        a float32 array (float64 for float64 input) of the same shape and device.
    """
    # x (N,C,H,W) -> mean, std (N,1,1,1) -> y (N,C,H,W)
    _check_images(x, "per_image_standardization")
    xp = backend.get_array_module(x)
    x = x.astype(_float_dtype(x), copy=False)
    num_pixels = x.shape[1] * x.shape[2] * x.shape[3]
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    std = x.std(axis=(1, 2, 3), keepdims=True)
    return (x - mean) / xp.maximum(std, x.dtype.type(1.0 / np.sqrt(num_pixels)))


def normalize(x, mean, std):
    """Per-channel normalisation of 0..255 images: ``(x / 255 - mean[c]) / std[c]``.

    torchvision's ToTensor + Normalize in one step, so ``mean`` and ``std`` are on
    the 0..1 scale (ImageNet's are (0.485, 0.456, 0.406) and (0.229, 0.224, 0.225)).
    Computed as ``x * (1 / (255 std)) - mean / std``: two passes, the first reading
    the uint8 batch and writing float32.

    Args:
        x: (N,C,H,W) uint8 (or float on the 0..255 scale) on any device.
        mean, std: C values each; every std > 0.

    Returns:
        float32 (float64 for float64 input) (N,C,H,W) on x's device.
    """
    # x (N,C,H,W), mean/std (C,) -> scale, shift (C,1,1) -> y (N,C,H,W)
    _check_images(x, "normalize")
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if mean.shape != (x.shape[1],) or std.shape != (x.shape[1],) or not (std > 0).all():
        raise ValueError(f"normalize: expected {x.shape[1]} means and {x.shape[1]} positive stds, got {mean.tolist()} "
                         f"and {std.tolist()}")
    dtype = _float_dtype(x)
    device = backend.device_of(x)
    scale = backend.to_device((1.0 / (255.0 * std)).astype(dtype)[:, None, None], device)
    shift = backend.to_device((mean / std).astype(dtype)[:, None, None], device)
    y = x * scale  # uint8 * float32 -> float32: the cast happens inside the multiply
    y -= shift
    return y


def _linear_taps(in_size: int, out_size: int):
    """Source indices and weights of 1-D linear interpolation with half-pixel centres.

    Output pixel i samples the input at ``(i + 0.5) * in/out - 0.5`` (TensorFlow's
    ``half_pixel_centers``, PyTorch's ``align_corners=False``), clamped to the
    first/last pixel at the borders.

    Returns:
        lo, hi (out_size,) int64 indices and w_hi (out_size,) float64 weights; the
        value is ``(1 - w_hi) * v[lo] + w_hi * v[hi]``.
    """
    src = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    src = np.clip(src, 0.0, in_size - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, src - lo


def resize_bilinear(x, size):
    """Bilinear resize with half-pixel centres, no antialiasing.

    Matches ``tf.image.resize(method="bilinear", antialias=False)`` and
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``.
    Separable: along W first (gather two columns per output column on the small
    input), then along H, where each gathered item is a whole contiguous row; this
    order is about twice as fast as rows-then-columns for 32 -> 224 on a CPU. On CUDA
    (unless MINIDL_KERNELS=reference) one raw kernel does both passes with the same taps
    and the same arithmetic (``minidl.kernels.cuda.launches.resize_bilinear``).

    Args:
        x: (N,C,H,W) array on any device (uint8 is computed in float32).
        size: int for a square output, or (out_h, out_w).

    Returns:
        (N,C,out_h,out_w) float array on x's device.
    """
    # x (N,C,H,W) -> cols (N,C,H,OW) -> y (N,C,OH,OW)
    _check_images(x, "resize_bilinear")
    out_h, out_w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"resize_bilinear: expected a positive size, got {size!r}")
    xp = backend.get_array_module(x)
    dtype = _float_dtype(x)
    x = x.astype(dtype, copy=False)
    _, _, h, w = x.shape
    if (out_h, out_w) == (h, w):
        return x
    fast = dispatch.resize_bilinear(x)   # a GPU: both passes in one raw kernel
    if fast is not None:
        return fast(x, _linear_taps(h, out_h), _linear_taps(w, out_w))
    device = backend.device_of(x)

    def lerp(v, n_in, n_out, axis):
        # v[lo] + (v[hi] - v[lo]) * w_hi along ``axis``, computed in place on the gathered copies
        lo, hi, w_hi = _linear_taps(n_in, n_out)
        shape = [1] * v.ndim
        shape[axis] = n_out
        lo, hi = backend.to_device(lo, device), backend.to_device(hi, device)
        w_hi = backend.to_device(w_hi.astype(dtype).reshape(shape), device)
        low = xp.take(v, lo, axis=axis)
        out = xp.take(v, hi, axis=axis)
        out -= low
        out *= w_hi
        out += low
        return out

    cols = lerp(x, w, out_w, axis=3) if out_w != w else x
    return lerp(cols, h, out_h, axis=2) if out_h != h else cols


def _draw_for(rows, n: int, draw):
    """Per-image random values for a batch of n images, or for its rows of a global batch.

    ``rows`` is None, or (start, total) when the n images are rows start..start+n of
    a global batch of ``total`` images split over data-parallel processes. Then the
    values are drawn for all ``total`` images and this slice's kept, so each image
    gets what it would get in a one-process run and the generator advances alike.
    """
    if rows is None:
        return draw(n)
    start, total = rows
    if not 0 <= start <= start + n <= total:
        raise ValueError(f"rows (start {start}, total {total}) do not hold a batch of {n} images")
    return draw(total)[start:start + n]


PADDING_MODES = ("constant", "reflect")


def random_crop(x, padding: int, rng: np.random.Generator, rows=None, padding_mode: str = "constant"):
    """Pad each image by ``padding`` and crop it back at a random offset: a random translation.

    The offset (dy, dx) in [0, 2*padding] is drawn per image, so the result is the
    image shifted by (padding - dy, padding - dx), with zeros shifted in
    (``padding_mode="constant"``) or the image's own border mirrored in ("reflect", as
    torchvision's ``RandomCrop(padding_mode="reflect")``: the edge pixel not repeated).
    Vectorised: one gather with per-image row/column index arrays, no loop.

    Args:
        x: (N,C,H,W) array on any device (any dtype; uint8 stays uint8).
        padding: pixels added on each side, >= 0 (below H and W for "reflect").
        rng: NumPy Generator for the offsets.
        rows: None, or (start, total): x is that slice of a global batch (see ``Transform``).
        padding_mode: "constant" (zeros) or "reflect".

    Returns:
        (N,C,H,W) array, same dtype and device as x.
    """
    # x (N,C,H,W) -> padded (N,C,H+2p,W+2p) -> gather rows (N,1,H,1), cols (N,1,1,W) -> (N,C,H,W)
    _check_images(x, "random_crop")
    n, c, h, w = x.shape
    if padding < 0 or padding_mode not in PADDING_MODES or (padding_mode == "reflect" and padding >= min(h, w)):
        raise ValueError(f"random_crop: expected padding >= 0 (below the image's sides for 'reflect') and "
                         f"padding_mode in {PADDING_MODES}, got padding {padding}, padding_mode {padding_mode!r} "
                         f"for images {tuple(x.shape)}")
    offsets = _draw_for(rows, n, lambda count: rng.integers(0, 2 * padding + 1, size=(count, 2)))
    if padding == 0:
        return x
    xp = backend.get_array_module(x)
    device = backend.device_of(x)
    rows = offsets[:, :1] + np.arange(h)  # (N,H) rows of the padded image
    cols = offsets[:, 1:] + np.arange(w)  # (N,W)
    padded = xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), mode=padding_mode)
    batch_idx = backend.to_device(np.arange(n)[:, None, None, None], device)
    chan_idx = backend.to_device(np.arange(c)[None, :, None, None], device)
    rows = backend.to_device(rows[:, None, :, None], device)
    cols = backend.to_device(cols[:, None, None, :], device)
    return padded[batch_idx, chan_idx, rows, cols]


def random_horizontal_flip(x, rng: np.random.Generator, p: float = 0.5, rows=None):
    """Mirror each image left-right with probability ``p`` (drawn per image).

    Args:
        x: (N,C,H,W) array on any device.
        rng: NumPy Generator for the coin flips.
        rows: None, or (start, total): x is that slice of a global batch (see ``Transform``).

    Returns:
        (N,C,H,W) array, same dtype and device as x.
    """
    # x (N,C,H,W), flip (N,1,1,1) -> y (N,C,H,W)
    _check_images(x, "random_horizontal_flip")
    xp = backend.get_array_module(x)
    flip = _draw_for(rows, x.shape[0], rng.random) < p
    flip = backend.to_device(flip[:, None, None, None], backend.device_of(x))
    return xp.where(flip, x[:, :, :, ::-1], x)


def subtract_mean(x, mean):
    """Centred raw pixel values: ``x - mean`` in float32, still in pixel units (0-255 scale).

    The paper's only preprocessing ("subtracting the mean activity over the training
    set from each pixel"). Unlike per-image standardisation the scale stays that of
    the pixels (a standard deviation of about 60 on CIFAR-10), the scale that the
    paper's initialisation, N(0, 0.01) weights, was chosen for.

    Args:
        x: (N,C,H,W) uint8 or float array on any device.
        mean: a (C,H,W) mean image or C per-channel means, an array on x's device.

    Returns:
        a float32 array (float64 for float64 input) of x's shape and device.
    """
    # x (N,C,H,W), mean (C,H,W) or (C,) -> y (N,C,H,W)
    _check_images(x, "subtract_mean")
    if mean.shape != x.shape[1:2] and mean.shape != x.shape[1:]:
        raise ValueError(f"subtract_mean: expected a mean of shape {x.shape[1:]} or ({x.shape[1]},) for images "
                         f"of shape {tuple(x.shape)}, got {tuple(mean.shape)}")
    dtype = _float_dtype(x)
    mean = mean.reshape((-1, 1, 1) if mean.ndim == 1 else mean.shape).astype(dtype, copy=False)
    return x.astype(dtype) - mean


class Transform:
    """The training/evaluation pipeline for one batch: augment -> normalise -> resize.

    Order and why:
      * crop and flip run first, on uint8: they only move pixels, and uint8 moves a
        quarter of the bytes of float32;
      * normalisation comes before the resize, as in the tutorial
        (``per_image_standardization`` then ``tf.image.resize``): the statistics
        are taken over the 3,072 original values instead of 150,528 resized ones,
        and a bilinear resize is linear with weights summing to 1, so the result is
        still (very nearly) mean 0, std 1. With ``pixel_mean`` the normalisation is
        the paper's instead: the mean image is subtracted, pixel units stay
        (``subtract_mean``); with ``mean`` and ``std`` (0..1 scale) it is per channel
        (``normalize``, airbench's);
      * resize last, only when ``image_size`` differs from the input size.

    Call it as ``transform(batch_uint8_on_device, rng)``; it returns float32 on the
    batch's device. ``rng`` may be None when ``augment`` is False. Under data
    parallelism a process transforms only its slice of a global batch:
    ``transform(slice, rng, rows=(start, total))`` draws the random choices for the
    whole global batch and applies this slice's, so every image is augmented as in a
    one-process run.

    Args:
        image_size: the side of the output images (resized when it differs).
        augment: random crops (and flips, with ``flip``) while training.
        crop_padding, padding_mode: the crops' padding, "constant" (zeros) or "reflect".
        flip: with ``augment``, mirror half of the images at random (False when the
            loader flips instead: ``DataLoader(alternate_flips=True)``).
        pixel_mean: subtract this mean image (or per-channel means), pixel units.
        mean, std: per-channel normalisation on the 0..1 scale (both or neither).
    """

    def __init__(self, image_size: int = 32, augment: bool = False, crop_padding: int = 4, pixel_mean=None, *,
                 padding_mode: str = "constant", flip: bool = True, mean=None, std=None):
        if image_size <= 0 or crop_padding < 0 or padding_mode not in PADDING_MODES:
            raise ValueError(f"Transform: expected image_size > 0, crop_padding >= 0 and padding_mode in "
                             f"{PADDING_MODES}, got {image_size}, {crop_padding} and {padding_mode!r}")
        if (mean is None) != (std is None) or (mean is not None and pixel_mean is not None):
            raise ValueError("Transform: mean and std go together, and exclude pixel_mean")
        self.image_size = int(image_size)
        self.augment = bool(augment)
        self.crop_padding = int(crop_padding)
        self.padding_mode, self.flip = padding_mode, bool(flip)
        self.pixel_mean = None if pixel_mean is None else np.asarray(backend.to_numpy(pixel_mean), np.float32)
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)
        self._mean_on = {}  # device -> pixel_mean there (copied once per device)

    def _normalise(self, x):
        if self.mean is not None:
            return normalize(x, self.mean, self.std)
        if self.pixel_mean is None:
            return per_image_standardization(x)
        device = backend.device_of(x)
        mean = self._mean_on.get(device)
        if mean is None:
            mean = self._mean_on[device] = backend.to_device(self.pixel_mean, device)
        return subtract_mean(x, mean)

    def __call__(self, x, rng: np.random.Generator | None = None, rows=None):
        # x (N,C,32,32) uint8 -> augmented uint8 -> normalised float32 -> (N,C,S,S) float32
        _check_images(x, "Transform")
        if self.augment:
            if rng is None:
                raise ValueError("Transform: augment=True needs a NumPy Generator, got rng=None")
            x = random_crop(x, self.crop_padding, rng, rows, self.padding_mode)
            if self.flip:
                x = random_horizontal_flip(x, rng, rows=rows)
        x = self._normalise(x)
        if self.image_size != x.shape[2] or self.image_size != x.shape[3]:
            x = resize_bilinear(x, self.image_size)
        return x

    def __repr__(self) -> str:
        mean = "" if self.pixel_mean is None else f", pixel_mean of shape {self.pixel_mean.shape}"
        if self.mean is not None:
            mean = f", mean={self.mean}, std={self.std}"
        extra = "" if self.padding_mode == "constant" else f", padding_mode={self.padding_mode!r}"
        extra += "" if self.flip else ", flip=False"
        return (f"Transform(image_size={self.image_size}, augment={self.augment}, "
                f"crop_padding={self.crop_padding}{extra}{mean})")


def build_transform(image_size: int = 32, augment: bool = False, crop_padding: int = 4,
                    pixel_mean=None, **options) -> Transform:
    """The pipeline for ``image_size`` inputs; ``augment`` adds random crop + flip (training).

    ``pixel_mean`` (a mean image or per-channel means) replaces per-image
    standardisation with the paper's mean subtraction (see ``subtract_mean``).
    ``options``: ``Transform``'s padding_mode, flip, mean and std.
    """
    return Transform(image_size=image_size, augment=augment, crop_padding=crop_padding, pixel_mean=pixel_mean,
                     **options)
