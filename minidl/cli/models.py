"""Which model a ``minidl train`` run trains: the names, their input sizes, and building one.

``--model alexnet`` (the default) is AlexNet, its variant chosen with ``--variant``; the
ResNets are minidl.models' (He et al.'s CIFAR nets at 32x32, torchvision's at 224x224).
A run's settings name the model, so a checkpoint rebuilds it (``minidl predict``, a resume).
"""
from __future__ import annotations

from .. import models
from ..models.alexnet import INPUT_SIZE

CIFAR_RESNETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
IMAGENET_RESNETS = ("resnet18", "resnet34")
MODELS = ("alexnet",) + CIFAR_RESNETS + IMAGENET_RESNETS


def input_size(settings: dict) -> int:
    """The side of the square images the run's model takes."""
    model = settings.get("model") or "alexnet"
    if model == "alexnet":
        return INPUT_SIZE[settings["variant"]]
    return 224 if model in IMAGENET_RESNETS else 32


def run_name(settings: dict) -> str:
    """What the run trains, for the default --out and the summary: alexnet_<variant> or the model's name."""
    model = settings.get("model") or "alexnet"
    return f"alexnet_{settings.get('variant') or 'seed'}" if model == "alexnet" else model


def build_model(settings: dict, num_classes: int):
    """The run's model, fresh (its weights from the run's seed)."""
    if (settings.get("model") or "alexnet") == "alexnet":
        return models.AlexNet(num_classes=num_classes, variant=settings["variant"], seed=settings["seed"],
                              widths=settings.get("widths"), init=settings.get("init"))
    return getattr(models, settings["model"])(num_classes=num_classes, seed=settings["seed"])
