"""Which model a run trains, predicts or walks: the names, their input sizes, building one.

``--model alexnet`` (the default) is AlexNet, its variant chosen with ``--variant``; the
ResNets are minidl.models' (He et al.'s CIFAR nets at 32x32, torchvision's at 224x224).
A run's settings name the model, so a checkpoint rebuilds it (``minidl predict``,
``minidl layers``, a resume); settings from before ``model`` existed are AlexNets.
"""
from __future__ import annotations

from .. import models
from ..data import imagenet
from ..models.alexnet import INPUT_SIZE, VARIANTS

CIFAR_RESNETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
IMAGENET_RESNETS = ("resnet18", "resnet34")
MODELS = ("alexnet",) + CIFAR_RESNETS + IMAGENET_RESNETS + ("airbench94",)


def model_name(settings: dict) -> str:
    """The settings' model; "alexnet" for runs from before --model."""
    return settings.get("model") or "alexnet"


def input_size(settings: dict) -> int:
    """The side of the square images the run's model takes."""
    model = model_name(settings)
    if model == "alexnet":
        return INPUT_SIZE[settings.get("variant") or "seed"]
    return 224 if model in IMAGENET_RESNETS else 32


def run_name(settings: dict) -> str:
    """What the run trains, for the default --out and the summary: alexnet_<variant> or the model's name."""
    model = model_name(settings)
    return f"alexnet_{settings.get('variant') or 'seed'}" if model == "alexnet" else model


def describe_model(settings: dict) -> str:
    """The model in words: "AlexNet variant 'cifar'" or "resnet20"."""
    model = model_name(settings)
    return f"AlexNet variant {settings.get('variant') or 'seed'!r}" if model == "alexnet" else model


def classifier_name(settings: dict) -> str:
    """The module name of the model's last dense layer, the one whose outputs are the classes.

    fc8 for minidl's AlexNets, classifier.6 for torchvision's, fc for the ResNets, head for
    airbench94 (their state_dict keys are ``<name>.weight`` and, but for airbench94, ``<name>.bias``).
    """
    if model_name(settings) == "airbench94":
        return "head"
    if model_name(settings) != "alexnet":
        return "fc"
    return "classifier.6" if settings.get("variant") == "torchvision" else "fc8"


def published_normalization(settings: dict):
    """(mean, std) on the 0..1 scale that the architecture's published weights expect, or None.

    torchvision's ImageNet models (resnet18, resnet34, AlexNet variant "torchvision")
    were trained on images normalised with ImageNet's statistics; the others have no
    published weights, and their normalisation is the recipe's.
    """
    if model_name(settings) in IMAGENET_RESNETS or settings.get("variant") == "torchvision":
        return list(imagenet.MEAN), list(imagenet.STD)
    return None


def build_model(settings: dict, num_classes: int):
    """The run's model, fresh (its weights from the run's seed; 0 when the settings have none)."""
    seed = settings.get("seed") or 0
    if model_name(settings) == "alexnet":
        return models.AlexNet(num_classes=num_classes, variant=settings.get("variant") or "seed", seed=seed,
                              widths=settings.get("widths"), kernel_sizes=settings.get("kernel_sizes"),
                              init=settings.get("init"))
    if settings["model"] == "airbench94":   # its two initialisations can be switched off for ablations
        return models.airbench94(num_classes=num_classes, seed=seed, dirac=settings.get("dirac", True),
                                 whitening=settings.get("whitening", True))
    return getattr(models, settings["model"])(num_classes=num_classes, seed=seed)


__all__ = ["CIFAR_RESNETS", "IMAGENET_RESNETS", "MODELS", "VARIANTS", "build_model", "classifier_name",
           "describe_model", "input_size", "model_name", "published_normalization", "run_name"]
