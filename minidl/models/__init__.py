"""minidl.models: complete networks built from minidl.nn layers.

    from minidl.models import AlexNet, resnet20, resnet18
    AlexNet(variant="seed")              # the tutorial's two-stream AlexNet; also "paper", "cifar", "torchvision"
    resnet20()                           # He et al.'s CIFAR ResNets: resnet20/32/44/56/110, cifar_resnet(depth)
    resnet18()                           # torchvision's ImageNet ResNets (its state_dict keys): resnet18, resnet34
    airbench94(images=train_images)      # Keller Jordan's fast CIFAR-10 net: whitening conv, 3 blocks, scaled head

Every model has ``summary()``, ``plot(path)``, ``input_size`` and ``meta`` (what its
inputs and outputs mean: ``minidl.models.meta``).
"""
from .airbench import Airbench94, airbench94, whitening_filters
from .alexnet import AlexNet
from .meta import ModelMeta
from .resnet import (BasicBlock, ResNet, ZeroPadShortcut, cifar_resnet, resnet18, resnet20, resnet32, resnet34,
                     resnet44, resnet56, resnet110)

__all__ = ["Airbench94", "AlexNet", "BasicBlock", "ModelMeta", "ResNet", "ZeroPadShortcut", "airbench94", "cifar_resnet",
           "resnet18", "resnet20", "resnet32", "resnet34", "resnet44", "resnet56", "resnet110", "whitening_filters"]
