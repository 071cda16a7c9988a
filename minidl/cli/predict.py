"""``minidl predict``: classify your own images with a trained AlexNet (top-5 classes, probabilities).

    minidl predict cat.jpg truck.png --weights runs/alexnet_cifar/best.npz

The model (variant, widths, number of classes) comes from the checkpoint, which
``minidl train`` writes (checkpoint.npz or best.npz). Each image is
prepared the way the training images were:

1. decoded by Pillow (JPEG, PNG, BMP, GIF, WebP, TIFF, ...), turned upright from
   its EXIF orientation, made RGB (grayscale and palette images are expanded,
   transparent pixels are shown over white);
2. made a 32x32 CIFAR-10-sized image: the largest centred square, resized with
   Pillow's bilinear filter (which averages over the covered pixels when
   shrinking);
3. given exactly the variant's evaluation transform from training: per-image
   standardisation, then the bilinear resize to the variant's input size
   (224 for seed, 227 for paper; cifar stays 32).

A run trained on a folder of images (``--dataset folder``) instead gets that
run's evaluation crop (shorter side to 8/7 of the input size, the central square,
decoded as its training did, ``minidl.data.ResizeCenterCrop``) and normalisation
(the per-channel mean/std or per-image standardisation its settings record).

Class names come from the checkpoint's settings ("class_names") when the run
stored them, else they are CIFAR-10's. Needs Pillow: ``pip install -e ".[images]"``.

Exit codes: 0 every image classified, 1 an error (one line on stderr per bad
image or for a bad weights file; good images are still classified), 2 bad arguments.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Tensor, no_grad
from ..checkpoint import CheckpointError, load_checkpoint
from ..data import ResizeCenterCrop, build_transform, decode_crop, normalize, per_image_standardization
from ..data.image_ops import UnreadableImage
from ..models import AlexNet
from ..models.alexnet import INPUT_SIZE
from .common import error, unexpected

PROG = "minidl predict"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SOURCE_SIZE = 32  # CIFAR-10's images: what every variant's training transform starts from
BATCH = 32


class InputError(Exception):
    """A bad image or weights file: the message is the one line the user sees."""


# ---- the model ---------------------------------------------------------------------
def load_model(path, device="cpu"):
    """The AlexNet of a training checkpoint, in eval mode, and its class names.

    Returns:
        (model, class_names, settings).
    Raises:
        InputError naming the file when it is missing, not a minidl checkpoint, or
        not the checkpoint of a training run.
    """
    if Path(path).is_file():
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # every .npz is a zip; a cut-off one still starts like this
                raise InputError(f"--weights: {path} is not a minidl checkpoint (not an .npz file)")
    try:
        state = load_checkpoint(path)
    except CheckpointError as exc:
        raise InputError(f"--weights: {exc}") from None
    settings = state.get("settings")
    weights = state.get("model")
    if not isinstance(settings, dict) or not isinstance(weights, dict) or "variant" not in settings:
        raise InputError(f"--weights: {path} is a minidl checkpoint but not one of a training run (no model and "
                         "settings in it); use checkpoint.npz or best.npz of a `minidl train` run")
    dataset = settings.get("dataset", "cifar10")
    if dataset not in ("cifar10", "folder"):
        # Only the CIFAR-10 pipeline is known here; another data set's evaluation
        # transform must be added below before its runs can be classified exactly.
        raise InputError(f"--weights: {path} was trained on the {dataset!r} data set; minidl predict knows the "
                         "evaluation transforms of CIFAR-10 and image-folder runs only")
    fc8 = weights.get("fc8.weight")
    if fc8 is None or fc8.ndim != 2:
        raise InputError(f"--weights: {path} holds no AlexNet weights (no fc8.weight)")
    num_classes = int(fc8.shape[0])
    names = settings.get("class_names")
    if names is None:
        if num_classes != len(CIFAR10_CLASSES):
            raise InputError(f"--weights: {path} has {num_classes} classes but no class names in its settings")
        names = CIFAR10_CLASSES
    if len(names) != num_classes:
        raise InputError(f"--weights: {path} names {len(names)} classes but its model has {num_classes}")
    try:
        model = AlexNet(num_classes=num_classes, variant=settings["variant"], widths=settings.get("widths"),
                        kernel_sizes=settings.get("kernel_sizes"))
        model.load_state_dict(weights)
    except ValueError as exc:
        raise InputError(f"--weights: {path} does not fit the model its settings describe: {exc}") from None
    return model.to(device).eval(), [str(name) for name in names], settings


def evaluation_transform(settings):
    """The variant's transform for validation and test images in training (no augmentation)."""
    if settings.get("dataset") == "folder":  # the crop happened while decoding (read_image)
        if settings.get("normalize") == "image":
            return per_image_standardization
        return lambda x: normalize(x, settings["mean"], settings["std"])
    return build_transform(INPUT_SIZE[settings["variant"]], augment=False, pixel_mean=settings.get("pixel_mean"))


# ---- the images --------------------------------------------------------------------
def _rgb(image):
    """Any Pillow image as RGB: alpha composited over white, 16-bit gray scaled to 8 bits."""
    from PIL import Image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):  # 16/32-bit gray: scale, don't clip
        gray = np.asarray(image, dtype=np.float64)
        top = 65535.0 if gray.max(initial=0) > 255 else 255.0
        gray = np.clip(np.rint(gray * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def read_image(path, settings=None) -> np.ndarray:
    """The image at ``path`` as a CIFAR-sized (3, 32, 32) uint8 array (see the module docstring).

    For a run trained on a folder (``settings["dataset"] == "folder"``): its
    evaluation crop, (3, S, S) at the variant's input size S.

    Raises:
        InputError naming the file when it is missing or Pillow cannot decode it.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    if settings is not None and settings.get("dataset") == "folder":
        size = INPUT_SIZE[settings["variant"]]
        out = np.empty((3, size, size), np.uint8)
        try:
            decode_crop(str(path), ResizeCenterCrop(size), None, out)
        except UnreadableImage as exc:
            raise InputError(f"{path}: the image cannot be decoded ({exc.reason})") from None
        return out
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            image = _rgb(image)
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: the image cannot be decoded ({exc})") from None
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.resize((SOURCE_SIZE, SOURCE_SIZE), Image.Resampling.BILINEAR,
                         box=(left, top, left + side, top + side))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


# ---- predicting ----------------------------------------------------------------------
def class_probabilities(model, transform, images, device="cpu") -> np.ndarray:
    """Softmax of the eval-mode logits. Shapes: images (N, 3, H, W) uint8 -> (N, num_classes) float32."""
    out = []
    with no_grad():
        for start in range(0, len(images), BATCH):
            x = transform(backend.to_device(images[start:start + BATCH], backend.parse_device(device)))
            out.append(backend.to_numpy(F.softmax(model(Tensor(x)), axis=-1).data))
    return np.concatenate(out)


def top_k(probs, names, k: int = 5) -> list:
    """[(name, probability)] of the ``k`` most probable classes, most probable first."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [(names[i], float(probs[i])) for i in order]


def parse_args(argv, prog: str = PROG):
    p = argparse.ArgumentParser(prog=prog, description="Classify your own images with a trained AlexNet: the "
                                "top-5 classes and their probabilities.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    p.add_argument("--weights", required=True, help="a checkpoint of `minidl train` (e.g. best.npz)")
    p.add_argument("--top", type=int, default=5, help="how many classes to show per image (default 5)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = p.parse_args(argv)
    if args.top < 1:
        p.error(f"--top must be >= 1, got {args.top}")
    return args


def run(args, prog: str = PROG) -> int:
    try:
        import PIL  # noqa: F401  (only to say what to install)
    except ImportError:
        raise InputError("reading images needs Pillow: pip install -e \".[images]\"") from None
    model, names, settings = load_model(args.weights, args.device)
    failed = 0
    images, paths = [], []
    for path in args.images:
        try:
            images.append(read_image(path, settings))
            paths.append(path)
        except InputError as exc:
            error(prog, str(exc))
            failed += 1
    if images:
        probs = class_probabilities(model, evaluation_transform(settings), np.stack(images), args.device)
        for path, row in zip(paths, probs):
            print(f"{path}:")
            for rank, (name, p) in enumerate(top_k(row, names, args.top), start=1):
                print(f"  {rank}. {name:<{max(map(len, names))}}  {100 * p:6.2f}%")
    return 1 if failed else 0


def main(argv=None, prog: str = PROG) -> int:
    """Run ``minidl predict`` with ``argv`` (default: sys.argv[1:]); returns the exit code."""
    args = parse_args(argv, prog)
    try:
        return run(args, prog)
    except (InputError, backend.DeviceError) as exc:
        error(prog, str(exc))
        return 1
    except Exception as exc:  # one clear line instead of a traceback
        return unexpected(prog, exc)
