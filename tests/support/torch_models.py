"""torchvision's ResNet and AlexNet rebuilt from torch.nn (torchvision itself is not installed).

Written after torchvision/models/resnet.py and alexnet.py: the same module names, so
the same state_dict keys (``num_batches_tracked`` included), and the same forward.
``cifar_resnet`` is the usual reimplementation of He et al.'s CIFAR nets, whose
option-A shortcut pads ``x[:, :, ::2, ::2]`` with zero channels on both sides.
Import only where PyTorch is installed (``pytest.importorskip("torch")`` first).
"""
import torch
import torch.nn.functional as F
from torch import nn


class ZeroPad(nn.Module):
    """Option A: subsample by 2, add planes // 4 zero channels on each side (no state)."""

    def __init__(self, planes):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, layers, num_classes=1000, cifar=False):
        super().__init__()
        widths = (16, 32, 64) if cifar else (64, 128, 256, 512)
        self.inplanes = widths[0]
        if cifar:
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(3, 2, 1)
        for i, (blocks, planes) in enumerate(zip(layers, widths)):
            setattr(self, f"layer{i + 1}", self._make_layer(planes, blocks, 1 if i == 0 else 2, cifar))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[-1], num_classes)

    def _make_layer(self, planes, blocks, stride, cifar):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = (ZeroPad(planes) if cifar else
                          nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)))
        stage = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        stage += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            layer = getattr(self, f"layer{i}", None)
            if layer is not None:
                x = layer(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes=1000):
    return ResNet((2, 2, 2, 2), num_classes)


def resnet34(num_classes=1000):
    return ResNet((3, 4, 6, 3), num_classes)


def cifar_resnet(depth, num_classes=10):
    n = (depth - 2) // 6
    return ResNet((n, n, n), num_classes, cifar=True)


class AlexNet(nn.Module):
    def __init__(self, num_classes=1000, dropout=0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def randomise_batch_norm(model, seed=0):
    """Random scale, shift and running statistics in every BatchNorm2d (and a step count), so eval mode is tested."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(c, generator=generator) * 0.2)
                module.running_mean.copy_(torch.randn(c, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(c, generator=generator) * 1.5 + 0.5)
                module.num_batches_tracked.fill_(11)
    return model
