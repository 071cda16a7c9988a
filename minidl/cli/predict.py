"""``minidl predict``: classify your own images with a trained model (top-5 classes, probabilities).

    minidl predict cat.jpg truck.png --weights runs/alexnet_cifar/best.npz
    minidl predict cat.jpg --weights runs/resnet20/best.npz
    minidl predict cat.jpg --weights resnet18-f37072fd.pth --model resnet18     # torchvision's ImageNet weights

The model (AlexNet variant and widths, ResNet, number of classes) comes from the
checkpoint, which ``minidl train`` writes (checkpoint.npz or best.npz; runs from
before ``--model`` are AlexNets). Bare weights, a ``.safetensors``, a PyTorch ``.pth``
or an ``.npz`` state_dict, need ``--model`` (and ``--variant`` for an AlexNet); see
``model_files``. Each image is prepared the way the training images were:

1. decoded by Pillow (JPEG, PNG, BMP, GIF, WebP, TIFF, ...), turned upright from
   its EXIF orientation, made RGB (grayscale and palette images are expanded,
   transparent pixels are shown over white);
2. made a 32x32 CIFAR-10-sized image: the largest centred square, resized with
   Pillow's bilinear filter (which averages over the covered pixels when
   shrinking);
3. given exactly the run's evaluation transform from training: per-image
   standardisation (or the paper's mean subtraction), then the bilinear resize to
   the model's input size (224 for seed and the ImageNet ResNets, 227 for paper;
   cifar and the CIFAR ResNets stay 32).

A run trained on a folder of images (``--dataset folder``) instead gets that
run's evaluation crop (shorter side to 8/7 of the input size, the central square,
decoded as its training did, ``minidl.data.ResizeCenterCrop``) and normalisation
(the per-channel mean/std or per-image standardisation its settings record).
Bare weights of torchvision's ImageNet models (resnet18, resnet34, AlexNet variant
"torchvision") get ImageNet's: shorter side 256, the central 224, ImageNet's mean/std;
bare weights of the other models CIFAR-10's steps above.

Class names come from the checkpoint's settings ("class_names") when the run
stored them, else from the model (``model.meta``: CIFAR-10's for 10 classes, ImageNet's
for the 1,000 of torchvision's models). The model's GPU (``--device cuda:N``) is
current while it is built and run. Needs Pillow: ``pip install -e ".[images]"``.

Exit codes: 0 every image classified, 1 an error (one line on stderr per bad
image or for a bad weights file; good images are still classified), 2 bad arguments.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .. import backend
from .. import functional as F
from .. import nn
from ..autograd import Tensor, no_grad
from ..data import ResizeCenterCrop, build_transform, decode_crop, normalize, per_image_standardization
from ..data.cifar10 import CLASS_NAMES as CIFAR10_CLASSES  # noqa: F401  (public: the default names)
from ..data.image_ops import UnreadableImage
from .common import ArgumentParser, error, unexpected
from .model_files import InputError, model_from_weights
from .models import MODELS, VARIANTS, input_size

PROG = "minidl predict"
SOURCE_SIZE = 32  # CIFAR-10's images: what every CIFAR run's training transform starts from
BATCH = 32
DECODED = ("folder", "imagenet")  # data sets whose images are cropped to the input size while decoding


# ---- the model ---------------------------------------------------------------------
def load_model(path, device="cpu", model=None, variant=None):
    """The model of a weights file (see ``model_files.model_from_weights``), in eval mode on ``device``.

    Returns:
        (model, class_names, settings).
    Raises:
        InputError naming the file.
    """
    net, names, settings = model_from_weights(path, model, variant)
    return net.to(backend.parse_device(device)).eval(), names, settings


def evaluation_transform(settings):
    """The run's transform for validation and test images in training (no augmentation)."""
    if settings.get("dataset") in DECODED:  # the crop happened while decoding (read_image)
        if settings.get("normalize") == "image":
            return per_image_standardization
        return lambda x: normalize(x, settings["mean"], settings["std"])
    if settings.get("channel_mean") is not None:   # --preprocess channel (airbench94's)
        return build_transform(input_size(settings), augment=False, mean=settings["channel_mean"],
                               std=settings["channel_std"])
    return build_transform(input_size(settings), augment=False, pixel_mean=settings.get("pixel_mean"))


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

    For a run trained on a folder (``settings["dataset"] == "folder"``), and bare
    ImageNet weights: its evaluation crop, (3, S, S) at the model's input size S.

    Raises:
        InputError naming the file when it is missing or Pillow cannot decode it.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    if settings is not None and settings.get("dataset") in DECODED:
        size = input_size(settings)
        out = np.empty((3, size, size), np.uint8)
        try:
            decode_crop(str(path), ResizeCenterCrop(size, settings.get("resize_size")), None, out)
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
    p = ArgumentParser(prog=prog, description="Classify your own images with a trained model: the "
                       "top-5 classes and their probabilities.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    p.add_argument("--weights", required=True, help="a checkpoint of `minidl train` (e.g. best.npz), or bare "
                   "weights (.safetensors, a PyTorch .pth, an .npz state_dict) with --model")
    p.add_argument("--model", choices=MODELS, help="the model bare weights are for (a training checkpoint names "
                   "its own)")
    p.add_argument("--variant", choices=VARIANTS, help="--model alexnet: which AlexNet (default seed; torchvision "
                   "for torchvision's published weights)")
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
    device = backend.parse_device(args.device)
    with backend.device_context(device):  # the model's GPU is current while it is built and run
        model, names, settings = load_model(args.weights, device, args.model, args.variant)
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
            fast = nn.fuse_for_inference(model)   # batch norms folded, ReLUs fused: the same logits, fewer passes
            probs = class_probabilities(fast, evaluation_transform(settings), np.stack(images), device)
    tops = [top_k(row, names, args.top) for row in (probs if images else ())]
    width = max((len(name) for top in tops for name, _ in top), default=0)   # one column for every image
    for path, top in zip(paths, tops):
        print(f"{path}:")
        for rank, (name, p) in enumerate(top, start=1):
            print(f"  {rank}. {name:<{width}}  {100 * p:6.2f}%")
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
