"""minidl's AlexNet variants rebuilt in PyTorch, for the benchmarks only (never a dependency of minidl).

Layer for layer the same network as ``minidl.models.AlexNet`` with the same
attribute names (conv1, bn1, relu1, pool1, ..., fc8) registered in execution order,
so ``state_dict`` keys match and per-layer timings line up row by row.

variant="seed" (input 3x224x224), the benchmark's default:
    conv1  Conv2d(3, 96, 11, stride 4) after F.pad(x, (3, 4, 3, 4)): TensorFlow's "same"
           (total padding 7, the odd pixel at the bottom/right), 96x56x56
    bn1    BatchNorm2d(96, eps=1e-3, momentum=0.01) (Keras's defaults), relu1, pool1 MaxPool2d(3, 2)
    conv2  Conv2d(96, 256, 5, padding 2, groups=2), bn2, relu2, pool2
    conv3  Conv2d(256, 384, 3, padding 1), relu3
    conv4  Conv2d(384, 384, 3, padding 1, groups=2), relu4
    conv5  Conv2d(384, 256, 3, padding 1, groups=2), relu5, pool5 -> 256x6x6
    flatten (C, H, W order), fc6 9216->4096, relu6, drop6 (0.5), fc7 4096->4096, relu7, drop7, fc8 -> classes
"paper": conv1 valid (55x55), LRN instead of BN (PyTorch's alpha is divided by
    size, so alpha * size is passed to get the paper's formula), 1000 classes default.
"cifar": minidl's CIFAR_WIDTHS / CIFAR_KERNELS, BN (PyTorch defaults) after every
    conv, pools 3/2 with padding 1.

ReLUs are not in-place, like minidl's (and so that per-layer hooks see every tensor).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as TF

from minidl.models.alexnet import CIFAR_KERNELS, CIFAR_WIDTHS, INPUT_SIZE


def same_pads(size: int, kernel: int, stride: int) -> tuple:
    """TensorFlow's "same" padding along one axis: (before, after), the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class PaddedConv2d(nn.Conv2d):
    """Conv2d that zero-pads (left, right, top, bottom) first: asymmetric "same" padding.

    It subclasses Conv2d (instead of wrapping one) so its parameters keep the plain
    ``conv1.weight`` / ``conv1.bias`` names.
    """

    def __init__(self, *args, pad=(0, 0, 0, 0), **kwargs):
        super().__init__(*args, **kwargs)
        self.pad = tuple(pad)

    def forward(self, x):
        return super().forward(TF.pad(x, self.pad))


def _conv(c_in, c_out, k, size, stride=1, groups=1, same=True):
    """A conv with TF "same" (or "valid") padding for an input of ``size`` pixels; returns (module, out size)."""
    if not same:
        return nn.Conv2d(c_in, c_out, k, stride, groups=groups), (size - k) // stride + 1
    before, after = same_pads(size, k, stride)
    out = -(-size // stride)
    if before == after:
        return nn.Conv2d(c_in, c_out, k, stride, padding=before, groups=groups), out
    return PaddedConv2d(c_in, c_out, k, stride, groups=groups, pad=(before, after, before, after)), out


def _pool_out(size, k=3, s=2, p=0):
    return (size + 2 * p - k) // s + 1


class TorchAlexNet(nn.Module):
    """AlexNet in PyTorch, mirroring ``minidl.models.AlexNet(num_classes, variant)``.

    Shapes: x (N, 3, S, S) with S = 224 / 227 / 32 -> logits (N, num_classes).
    """

    def __init__(self, num_classes=None, variant="seed", dropout=0.5):
        super().__init__()
        if variant not in INPUT_SIZE:
            raise ValueError(f"TorchAlexNet: variant must be one of {tuple(INPUT_SIZE)}, got {variant!r}")
        self.variant = variant
        num_classes = num_classes or (1000 if variant == "paper" else 10)
        s = INPUT_SIZE[variant]
        if variant == "cifar":
            self._build_cifar(s)
            features, f6, f7 = CIFAR_WIDTHS[4] * 4 * 4, CIFAR_WIDTHS[5], CIFAR_WIDTHS[6]
        else:
            self._build_imagenet(s, variant)
            features, f6, f7 = 256 * 6 * 6, 4096, 4096
        self.flatten = nn.Flatten()
        self.fc6, self.relu6, self.drop6 = nn.Linear(features, f6), nn.ReLU(), nn.Dropout(dropout)
        self.fc7, self.relu7, self.drop7 = nn.Linear(f6, f7), nn.ReLU(), nn.Dropout(dropout)
        self.fc8 = nn.Linear(f7, num_classes)

    def _build_imagenet(self, s, variant):
        seed = variant == "seed"
        self.conv1, s = _conv(3, 96, 11, s, stride=4, same=seed)
        if seed:
            bn = dict(eps=1e-3, momentum=0.01)
            self.bn1, self.relu1 = nn.BatchNorm2d(96, **bn), nn.ReLU()
        else:  # the paper's LRN: minidl follows the paper's alpha, PyTorch divides it by size
            self.relu1, self.lrn1 = nn.ReLU(), nn.LocalResponseNorm(5, 5 * 1e-4, 0.75, 2.0)
        self.pool1, s = nn.MaxPool2d(3, 2), _pool_out(s)
        self.conv2, s = _conv(96, 256, 5, s, groups=2)
        if seed:
            self.bn2, self.relu2 = nn.BatchNorm2d(256, **bn), nn.ReLU()
        else:
            self.relu2, self.lrn2 = nn.ReLU(), nn.LocalResponseNorm(5, 5 * 1e-4, 0.75, 2.0)
        self.pool2, s = nn.MaxPool2d(3, 2), _pool_out(s)
        self.conv3, s = _conv(256, 384, 3, s)
        self.relu3 = nn.ReLU()
        self.conv4, s = _conv(384, 384, 3, s, groups=2)
        self.relu4 = nn.ReLU()
        self.conv5, s = _conv(384, 256, 3, s, groups=2)
        self.relu5, self.pool5 = nn.ReLU(), nn.MaxPool2d(3, 2)

    def _build_cifar(self, s):
        c1, c2, c3, c4, c5 = CIFAR_WIDTHS[:5]
        k1, k2, k3, k4, k5 = CIFAR_KERNELS
        self.conv1, s = _conv(3, c1, k1, s)
        self.bn1, self.relu1, self.pool1 = nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1)
        self.conv2, s = _conv(c1, c2, k2, _pool_out(s, p=1), groups=2)
        self.bn2, self.relu2, self.pool2 = nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1)
        self.conv3, s = _conv(c2, c3, k3, _pool_out(s, p=1))
        self.bn3, self.relu3 = nn.BatchNorm2d(c3), nn.ReLU()
        self.conv4, s = _conv(c3, c4, k4, s, groups=2)
        self.bn4, self.relu4 = nn.BatchNorm2d(c4), nn.ReLU()
        self.conv5, s = _conv(c4, c5, k5, s, groups=2)
        self.bn5, self.relu5, self.pool5 = nn.BatchNorm2d(c5), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1)

    def forward(self, x):
        for layer in self.children():
            x = layer(x)
        return x


def copy_minidl_weights(torch_model: TorchAlexNet, minidl_model) -> None:
    """Load a minidl AlexNet's parameters and BN statistics into ``torch_model`` (same key names)."""
    state = {k: torch.from_numpy(v.copy()) for k, v in minidl_model.state_dict().items()}
    missing, unexpected = torch_model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"copy_minidl_weights: keys differ; missing {missing}, unexpected {unexpected}")
