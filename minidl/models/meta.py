"""What a model's inputs and outputs mean: ``model.meta``, read by prediction and the walkthrough.

Every model in ``minidl.models`` carries a ``ModelMeta``: the data set its class
count is for, the image size it expects, the normalisation its published weights
were trained with, and the class names, so that a program holding only the model
can turn a picture into an input and a logit index into a name:

    import numpy as np
    from minidl.data import ResizeCenterCrop, decode_crop, normalize
    from minidl.weights import load_torch
    model = resnet18()
    model.load_state_dict(load_torch("resnet18-f37072fd.pth"))     # torchvision's file: model.meta.weights
    meta = model.meta
    image = np.empty((1, 3, meta.input_size, meta.input_size), np.uint8)
    decode_crop("cat.jpg", ResizeCenterCrop(meta.input_size, meta.resize_size), None, image[0])
    logits = model.eval()(minidl.tensor(normalize(image, meta.mean, meta.std)))
    meta.class_names[int(logits.numpy().argmax())]                  # e.g. "tabby"

The ImageNet entries (``AlexNet(variant="torchvision")``, ``resnet18``, ``resnet34``)
are torchvision's: ``minidl.data.imagenet``'s MEAN, STD, RESIZE_SIZE, CROP_SIZE and
CLASS_NAMES, and the file name of torchvision's published weights (``weights``, under
``WEIGHTS_BASE_URL``), which ``minidl.weights.load_torch`` reads without PyTorch.
``class_names`` is None when the model was built with another number of classes
(fine-tuning on one's own folders: the names then come from the folders).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..data import cifar10, imagenet

WEIGHTS_BASE_URL = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class ModelMeta:
    """The data a model is for.

    Attributes:
        dataset: "ImageNet-1k" or "CIFAR-10".
        input_size: the side of the square images the model is built (or trained) for.
        resize_size: the shorter side to resize to before the central crop (None: resize to input_size).
        mean, std: the per-channel (R, G, B) normalisation on the 0..1 scale that the
            published weights expect; None where the training recipe decides (CIFAR).
        class_names: index -> name, or None when the class count is not the data set's.
        weights: the file name of torchvision's published weights for this
            architecture (under WEIGHTS_BASE_URL), or None.
    """
    dataset: str
    input_size: int
    resize_size: int | None = None
    mean: tuple | None = None
    std: tuple | None = None
    class_names: tuple | None = None
    weights: str | None = None

    @property
    def weights_url(self) -> str | None:
        return None if self.weights is None else WEIGHTS_BASE_URL + self.weights


def imagenet_meta(num_classes: int, input_size: int = imagenet.CROP_SIZE, weights: str | None = None,
                  normalized: bool = True) -> ModelMeta:
    """ImageNet-1k's meta: torchvision's preprocessing (when ``normalized``) and class names for 1,000 classes."""
    return ModelMeta("ImageNet-1k", input_size,
                     resize_size=imagenet.RESIZE_SIZE if normalized else None,
                     mean=imagenet.MEAN if normalized else None, std=imagenet.STD if normalized else None,
                     class_names=imagenet.CLASS_NAMES if num_classes == imagenet.NUM_CLASSES else None,
                     weights=weights)


def cifar10_meta(num_classes: int, input_size: int = 32) -> ModelMeta:
    """CIFAR-10's meta: the class names for 10 classes; the normalisation is the recipe's."""
    return ModelMeta("CIFAR-10", input_size,
                     class_names=cifar10.CLASS_NAMES if num_classes == cifar10.NUM_CLASSES else None)
