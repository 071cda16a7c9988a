"""Residual networks (He, Zhang, Ren and Sun, 2016): the CIFAR family and torchvision's ImageNet ResNets.

A ResNet stacks *basic blocks*, each two 3x3 convolutions that learn a correction
to their input: ``y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``. Where a
block halves the image and widens the channels, the shortcut must change shape too:

* option A (the paper's CIFAR nets): subsample, ``x[:, :, ::2, ::2]``, and add the
  new channels as zeros, half before and half after the old ones (``ZeroPadShortcut``,
  no parameters; as the common reimplementations pad them);
* option B (torchvision's ImageNet nets): a 1x1 convolution of stride 2 and a batch
  norm, ``downsample = Sequential(Conv2d 1x1, BatchNorm2d)``.

The model is a stack applied in order (stem, stages ``layer1``.., global average
pooling, ``flatten``, ``fc``) whose module names are torchvision's, so state_dict keys
are torchvision's exactly (``layer1.0.conv1.weight``, ``layer2.0.downsample.1.running_mean``,
``fc.bias``); ``relu``, ``maxpool``, ``avgpool`` and ``flatten`` hold no state
(torchvision calls ``torch.flatten`` in forward; minidl keeps it a layer, so that
summaries, pictures and the ONNX export read the whole model as a stack).

CIFAR (input 3x32x32; depth = 6n + 2): conv1 3x3 16 -> bn1 -> relu -> layer1 (n blocks,
16 channels, 32x32) -> layer2 (n blocks, 32, 16x16) -> layer3 (n blocks, 64, 8x8) ->
avgpool -> fc. ResNet-20/32/44/56/110 (n = 3/5/7/9/18) have 269,722 / 464,154 /
658,586 / 853,018 / 1,727,962 parameters for 10 classes.

ImageNet (input 3x224x224): conv1 7x7/2 64 -> bn1 -> relu -> maxpool 3/2 -> layer1..layer4
(64/128/256/512 channels, 56/28/14/7 pixels) -> avgpool -> fc. ResNet-18/34 (2-2-2-2 and
3-4-6-3 blocks): 11,689,512 and 21,797,672 parameters for 1000 classes.

Initialisation, as torchvision's and fb.resnet.torch's (the Torch reimplementation of the paper): He-normal
convolutions N(0, 2 / fan_out) with fan_out = out_channels * KH * KW, no conv biases,
batch norm weight 1 and bias 0, the dense layer PyTorch's default U(+-1/sqrt(fan_in)).
(Some CIFAR reimplementations use fan_in; the two differ only in the stem and the first
conv of stages 2 and 3, each followed by a batch norm, and both reproduce the paper.)
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import nn
from ..nn import init
from .meta import cifar10_meta, imagenet_meta
from .summary import summarize

SHORTCUTS = ("A", "B")
STEMS = ("cifar", "imagenet")
# torchvision's published ImageNet weights (under minidl.models.meta.WEIGHTS_BASE_URL), by architecture
TORCHVISION_WEIGHTS = {"resnet18": "resnet18-f37072fd.pth", "resnet34": "resnet34-b627a593.pth"}


class ZeroPadShortcut(nn.Module):
    """He et al.'s option A: subsample by ``stride``, then add the new channels as zeros.

    y = x[:, :, ::stride, ::stride] with (out - in) // 2 zero channels before and the
    rest after (the reimplementations' ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p))``).
    No parameters. Plain autograd: the slice's backward puts the gradient back on the
    sampled pixels, the padding's drops the zeros' share.

    Shapes: (N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_channels, out_channels, stride=2):
        super().__init__()
        if not 1 <= in_channels <= out_channels or stride < 1:
            raise ValueError(f"ZeroPadShortcut: need 1 <= in_channels <= out_channels and stride >= 1, got "
                             f"{in_channels}, {out_channels}, {stride}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.pad_before = (out_channels - in_channels) // 2
        self.pad_after = out_channels - in_channels - self.pad_before

    def forward(self, x):
        s = self.stride
        if s > 1:
            x = x[:, :, ::s, ::s]
        if self.pad_before == self.pad_after == 0:
            return x
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))

    def shape_info(self, shape):
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise ValueError(f"ZeroPadShortcut: expected ({self.in_channels}, H, W), got {tuple(shape)}")
        s = self.stride
        _, h, w = shape
        return ((self.out_channels, -(-h // s), -(-w // s)),
                f"x[:, :, ::{s}, ::{s}] + {self.pad_before}/{self.pad_after} zero channels")

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut: torchvision's ``BasicBlock``.

    forward: relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x)), where ``downsample``
    is None (the identity), a ``ZeroPadShortcut`` (option A) or Sequential(Conv2d 1x1,
    BatchNorm2d) (option B). ``relu`` is one stateless layer used twice, as torchvision's.

    Args:
        inplanes, planes: input and output channels.
        stride: conv1's stride (2 halves the image).
        downsample: the shortcut's layer, or None.
        rng: the generator for the convolutions' default init (the model re-initialises them).

    Shapes: (N, inplanes, H, W) -> (N, planes, ceil(H / stride), ceil(W / stride)).
    """

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, *, rng=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False, rng=rng)
        self.bn1, self.relu = nn.BatchNorm2d(planes), nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False, rng=rng)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = nn.forward_chain((self.conv1, self.bn1, self.relu, self.conv2, self.bn2), x)
        return self.relu(out + identity)

    def paths(self):
        """(main, shortcut, after) as lists of (name, layer): y = after(main(x) + shortcut(x)).

        What summaries, pictures and the ONNX export read (``minidl.nn.structure``);
        an empty shortcut is the identity.
        """
        main = [("conv1", self.conv1), ("bn1", self.bn1), ("relu", self.relu), ("conv2", self.conv2),
                ("bn2", self.bn2)]
        shortcut = [] if self.downsample is None else [("downsample", self.downsample)]
        return main, shortcut, [("relu", self.relu)]

    def shape_info(self, shape):
        main, shortcut, _ = self.paths()
        ends = []
        for path in (main, shortcut):
            out = tuple(shape)
            for _, layer in path:
                out = tuple(layer.shape_info(out)[0])
            ends.append(out)
        if ends[0] != ends[1]:
            raise ValueError(f"BasicBlock: the main path gives {ends[0]} but the shortcut {ends[1]} for input "
                             f"{tuple(shape)}; a block that changes the shape needs a downsample")
        return ends[0], "relu(bn2 + " + ("x)" if self.downsample is None else "downsample(x))")

    def fused_for_inference(self):
        """This block for inference (``nn.fuse_for_inference``): bn1 and bn2 folded into conv1 and
        conv2, the first ReLU in conv1's output pass. Its downsample has been rewritten already."""
        return FusedBasicBlock(self)


class FusedBasicBlock(nn.Module):
    """A BasicBlock with its batch norms folded (``nn.fuse_for_inference``; evaluation only).

    forward: relu(conv2(conv1(x)) + downsample(x)), where conv1 is conv1 + bn1 + relu and
    conv2 is conv2 + bn2, each one convolution (``nn.FusedConv2d``); the shortcut's addition
    and the last ReLU run in conv2's output pass.

    Shapes: as the block it was made from.
    """

    def __init__(self, block: BasicBlock):
        super().__init__()
        self.conv1 = nn.FusedConv2d(block.conv1, block.bn1, relu=True)
        self.conv2 = nn.FusedConv2d(block.conv2, block.bn2)
        self.downsample, self.relu = block.downsample, nn.ReLU()
        self.stride = block.stride

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.conv2(self.conv1(x), residual=identity, relu=True)   # = self.relu(conv2(...) + identity)

    def paths(self):
        """(main, shortcut, after), as ``BasicBlock.paths``."""
        shortcut = [] if self.downsample is None else [("downsample", self.downsample)]
        return [("conv1", self.conv1), ("conv2", self.conv2)], shortcut, [("relu", self.relu)]

    shape_info = BasicBlock.shape_info


class ResNet(nn.Module):
    """A ResNet of basic blocks; build one with ``resnet20`` .. ``resnet110``, ``resnet18``, ``resnet34``.

    Args:
        layers: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18, (3, 3, 3) for ResNet-20.
        num_classes: number of logits.
        stem: "imagenet" (conv 7x7/2 64, max pool 3/2; 224x224 inputs) or "cifar" (conv
            3x3 16; 32x32 inputs).
        widths: channels per stage; default (64, 128, 256, 512)[:len(layers)] for
            "imagenet", (16, 32, 64) for "cifar".
        shortcut: "A" (zero padding, the default for "cifar") or "B" (1x1 projection, the
            default for "imagenet") where a block changes the shape.
        zero_init_residual: start every block's bn2 weight at 0, so each block begins as
            the identity (torchvision's option; Goyal et al. 2017).
        seed: seeds the initialisation (see the module docstring).
        arch: the name shown in summaries and pictures, e.g. "resnet20".

    Differs from torchvision's ``ResNet(block, layers, ...)``: basic blocks only, a
    ``stem``/``widths``/``shortcut`` choice for the CIFAR family, and a ``flatten`` layer.

    Shapes: x (N, 3, H, W) -> logits (N, num_classes); any H, W >= 1 (global average
    pooling), nominally ``input_size`` (224 or 32).
    """

    runs_children_in_order = True   # forward is its children in order (nn.fuse_for_inference reads it)

    def __init__(self, layers, num_classes=1000, *, stem="imagenet", widths=None, shortcut=None,
                 zero_init_residual=False, seed=0, arch=None):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"ResNet: stem must be one of {STEMS}, got {stem!r}")
        widths = tuple(widths if widths is not None else
                       ((16, 32, 64) if stem == "cifar" else (64, 128, 256, 512)[:len(layers)]))
        shortcut = shortcut or ("A" if stem == "cifar" else "B")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"ResNet: shortcut must be 'A' (zero padding) or 'B' (projection), got {shortcut!r}")
        if not layers or len(widths) != len(layers) or any(int(n) < 1 for n in layers) or min(widths) < 1:
            raise ValueError(f"ResNet: need one positive block count per stage and as many widths, got "
                             f"layers={tuple(layers)}, widths={widths}")
        if int(num_classes) < 1:
            raise ValueError(f"ResNet: num_classes must be >= 1, got {num_classes}")
        self.num_classes, self.stem, self.shortcut = int(num_classes), stem, shortcut
        self.arch = arch or f"resnet ({stem}, {'-'.join(map(str, layers))} blocks)"
        rng = np.random.default_rng(seed)
        self.inplanes = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False, rng=rng)
            self.bn1, self.relu, self.maxpool = nn.BatchNorm2d(widths[0]), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False, rng=rng)
            self.bn1, self.relu = nn.BatchNorm2d(widths[0]), nn.ReLU()
        for i, (blocks, planes) in enumerate(zip(layers, widths)):
            setattr(self, f"layer{i + 1}", self._make_layer(planes, int(blocks), 1 if i == 0 else 2, rng))
        self.avgpool, self.flatten = nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten()
        self.fc = nn.Linear(widths[-1] * BasicBlock.expansion, self.num_classes, rng=rng)
        self._initialise(rng, zero_init_residual)
        if stem == "imagenet":
            self.input_size = 224
            self.meta = imagenet_meta(self.num_classes, weights=TORCHVISION_WEIGHTS.get(self.arch))
        else:
            self.input_size = 32
            self.meta = cifar10_meta(self.num_classes)

    def _make_layer(self, planes, blocks, stride, rng):
        """One stage: ``blocks`` basic blocks, the first with ``stride`` and the shortcut's change of shape."""
        downsample = None
        if stride != 1 or self.inplanes != planes:
            if self.shortcut == "A":
                downsample = ZeroPadShortcut(self.inplanes, planes, stride)
            else:
                downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False, rng=rng),
                                           nn.BatchNorm2d(planes))
        stage = [BasicBlock(self.inplanes, planes, stride, downsample, rng=rng)]
        self.inplanes = planes
        stage += [BasicBlock(planes, planes, rng=rng) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def _initialise(self, rng, zero_init_residual):
        """He-normal (fan_out) convolutions; batch norm 1 and 0; the dense layer keeps PyTorch's default."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                init.he_normal_(module.weight, rng=rng, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                init.ones_(module.weight)
                init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, BasicBlock):
                    init.zeros_(module.bn2.weight)

    # ---- running ---------------------------------------------------------------
    def check_input_shape(self, shape):
        """Raise ValueError unless ``shape`` is (N, 3, H, W)."""
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"{self.arch} expects input (N, 3, H, W) (nominally H = W = {self.input_size}), "
                             f"got {tuple(shape)}")

    def forward(self, x):
        """Logits for a batch of images. Shapes: x (N, 3, H, W) -> (N, num_classes)."""
        self.check_input_shape(x.shape)
        return nn.forward_chain(self.children(), x)   # in order; a training batch norm + ReLU as one call

    def summary(self, input_shape=None, print_fn=print) -> str:
        """Print and return a Keras-style table: every layer (blocks opened), output shapes, parameters.

        Args:
            input_shape: (3, H, W) or (N, 3, H, W); defaults to (3, input_size, input_size).
            print_fn: where the text goes (None: nowhere).
        """
        shape = (3, self.input_size, self.input_size) if input_shape is None else tuple(input_shape)
        self.check_input_shape(shape if len(shape) == 4 else (None,) + shape)
        text = summarize(f"{self.arch} (num_classes={self.num_classes})", self, shape[-3:])
        if print_fn is not None:
            print_fn(text)
        return text

    def plot(self, path, input_shape=None):
        """Draw the layers, their output shapes and the shortcuts to ``path`` (.png or .svg); returns the path.

        See ``minidl.viz.plot_model`` (needs matplotlib, the ``plot`` extra).
        """
        from ..viz import plot_model  # lazily: matplotlib is optional
        return plot_model(self, path, input_shape, title=f"{self.arch} ({self.num_classes} classes)")



def cifar_resnet(depth, num_classes=10, *, shortcut="A", zero_init_residual=False, seed=0) -> ResNet:
    """He et al.'s CIFAR ResNet of ``depth`` = 6n + 2 layers: three stages of n blocks at 16/32/64 channels."""
    if not isinstance(depth, (int, np.integer)) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"cifar_resnet: depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110, ...), got {depth!r}")
    n = (depth - 2) // 6
    return ResNet((n, n, n), num_classes, stem="cifar", shortcut=shortcut, zero_init_residual=zero_init_residual,
                  seed=seed, arch=f"resnet{depth}")


def resnet20(num_classes=10, **kwargs) -> ResNet:
    """ResNet-20 for 32x32 images: 3 blocks per stage, 269,722 parameters for 10 classes (He et al.: 8.75% error)."""
    return cifar_resnet(20, num_classes, **kwargs)


def resnet32(num_classes=10, **kwargs) -> ResNet:
    """ResNet-32 for 32x32 images: 5 blocks per stage (He et al.: 7.51% error)."""
    return cifar_resnet(32, num_classes, **kwargs)


def resnet44(num_classes=10, **kwargs) -> ResNet:
    """ResNet-44 for 32x32 images: 7 blocks per stage (He et al.: 7.17% error)."""
    return cifar_resnet(44, num_classes, **kwargs)


def resnet56(num_classes=10, **kwargs) -> ResNet:
    """ResNet-56 for 32x32 images: 9 blocks per stage (He et al.: 6.97% error)."""
    return cifar_resnet(56, num_classes, **kwargs)


def resnet110(num_classes=10, **kwargs) -> ResNet:
    """ResNet-110 for 32x32 images: 18 blocks per stage (He et al.: 6.43% error)."""
    return cifar_resnet(110, num_classes, **kwargs)


def resnet18(num_classes=1000, *, zero_init_residual=False, seed=0) -> ResNet:
    """torchvision's ResNet-18 (2-2-2-2 basic blocks, projection shortcuts): 11,689,512 parameters."""
    return ResNet((2, 2, 2, 2), num_classes, stem="imagenet", zero_init_residual=zero_init_residual, seed=seed,
                  arch="resnet18")


def resnet34(num_classes=1000, *, zero_init_residual=False, seed=0) -> ResNet:
    """torchvision's ResNet-34 (3-4-6-3 basic blocks, projection shortcuts): 21,797,672 parameters."""
    return ResNet((3, 4, 6, 3), num_classes, stem="imagenet", zero_init_residual=zero_init_residual, seed=seed,
                  arch="resnet34")
