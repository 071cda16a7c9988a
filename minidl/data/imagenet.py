"""ImageNet-1k's class names and normalisation: what torchvision's pretrained weights expect.

    from minidl.data import imagenet
    imagenet.CLASS_NAMES[281]            # 'tabby'
    imagenet.MEAN, imagenet.STD          # per channel (R, G, B), on the 0..1 scale
    ResizeCenterCrop(imagenet.CROP_SIZE, imagenet.RESIZE_SIZE)  # torchvision's evaluation crop

The 1,000 names are torchvision's (``torchvision.models._meta._IMAGENET_CATEGORIES``):
the first name of each WordNet synset, in class-index order (the sorted synset ids
n01440764 ... n15075141), made unique where two synsets share a name: 134 is
"crane bird" and 517 "crane", 638 "maillot" and 639 "maillot tank suit". They ship as
``imagenet_classes.txt`` beside this module, one name per line.

For AlexNet(variant="torchvision") and resnet18/34 with torchvision's weights
(``minidl.weights.load_torch``): resize the shorter side to 256, crop the central
224 x 224, scale to 0..1, subtract MEAN and divide by STD (torchvision's
``ImageClassification`` preset, bilinear).
"""
from __future__ import annotations

from importlib import resources

MEAN = (0.485, 0.456, 0.406)  # R, G, B on the 0..1 scale: torchvision's ImageNet statistics
STD = (0.229, 0.224, 0.225)
RESIZE_SIZE = 256  # shorter side before the central crop (evaluation)
CROP_SIZE = 224
NUM_CLASSES = 1000


def _read_class_names() -> tuple[str, ...]:
    text = resources.files(__package__).joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != NUM_CLASSES or len(set(names)) != NUM_CLASSES:  # a damaged install, not a user error
        raise RuntimeError(f"minidl.data.imagenet: imagenet_classes.txt holds {len(names)} names "
                           f"({len(set(names))} distinct), expected {NUM_CLASSES} distinct; reinstall minidl")
    return names


CLASS_NAMES: tuple[str, ...] = _read_class_names()  # index -> name, e.g. CLASS_NAMES[0] == "tench"
