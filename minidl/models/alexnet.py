"""AlexNet in four variants: "seed" (the tutorial's Keras model), "paper" (2012), "cifar" and "torchvision".

The model is a plain stack of layers registered in the order they run, so
``forward`` reads top to bottom and ``summary`` lists exactly what runs. The two
"streams" of the original (one per GPU) are grouped convolutions (groups=2):
stream 1 owns the first half of every channel axis.

variant="seed" (input 3x224x224; Keras two-stream AlexNet with BatchNorm):
    conv1 96 11x11/4 "same" -> bn1 -> relu -> pool 3/2          96x56x56 -> 96x27x27
    conv2 256 5x5 "same" groups=2 -> bn2 -> relu -> pool 3/2    256x27x27 -> 256x13x13
    conv3 384 3x3 "same" (both streams) -> relu                 384x13x13
    conv4 384 3x3 "same" groups=2 -> relu                        384x13x13
    conv5 256 3x3 "same" groups=2 -> relu -> pool 3/2           256x13x13 -> 256x6x6
    flatten -> fc6 4096 -> relu -> dropout -> fc7 4096 -> relu -> dropout -> fc8
    BN: eps=1e-3, momentum=0.01 (Keras's defaults). He-normal conv weights with zero
    biases; the dense layers keep their default U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (PyTorch's), which starts the loss near log(10) (see _init_seed).
    10 classes: 56,909,898 trainable + 704 non-trainable = 56,910,602 parameters.

variant="paper" (input 3x227x227; Krizhevsky et al. 2012): as "seed" but conv1 is
    "valid" (55x55), LRN (size 5, alpha 1e-4, beta 0.75, k 2) replaces BN after
    relu1 and relu2, no BN, 1000 classes by default. Weights N(0, 0.01); biases 1 in
    conv2, conv4, conv5 and fc6, fc7, fc8 (for fc8 a constant shift of every logit,
    which softmax ignores; the paper's text names only the hidden fc layers), 0 in
    conv1 and conv3. ``init="he"`` starts it as "seed" instead (He-normal convs, zero
    conv biases, default dense layers): with 10 classes and a short run, the 2012
    init barely learns (docs/recipes.md, the paper variant, has the measurements).

variant="cifar" (input 3x32x32): the same shape scaled down to train in minutes on
    a CPU. Widths (conv1..conv5, fc6, fc7) default to CIFAR_WIDTHS, kernel sizes of
    conv1..conv5 to CIFAR_KERNELS; every conv is followed by BN (PyTorch defaults)
    and ReLU; pools are 3x3 stride 2 padding 1 (overlapping; 32 -> 16 -> 8 and
    8 -> 4 after conv5):
    conv1 k1 -> pool -> conv2 k2 groups=2 -> pool -> conv3 (both streams)
    -> conv4 groups=2 -> conv5 groups=2 -> pool -> fc6 -> fc7 -> fc8.
    Initialised with the layers' defaults (PyTorch's U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    for weights and biases), not He, whose dense layers (with dropout) start with
    exploding logits (docs/recipes.md has the comparison).

variant="torchvision" (input 3x224x224; torchvision's ``alexnet``, the "one weird trick"
    single-stream net its published weights ``alexnet-owt-7be5be79.pth`` are for):
    features = Sequential(conv 64 11x11/4 pad 2, relu, pool 3/2, conv 192 5x5 pad 2, relu,
    pool 3/2, conv 384 3x3 pad 1, relu, conv 256 3x3 pad 1, relu, conv 256 3x3 pad 1,
    relu, pool 3/2)                                              64x55x55 ... 256x6x6
    avgpool = AdaptiveAvgPool2d((6, 6)) -> flatten -> classifier = Sequential(dropout,
    linear 9216 -> 4096, relu, dropout, linear 4096 -> 4096, relu, linear 4096 -> classes).
    Keys are torchvision's ("features.0.weight" ... "classifier.6.bias"; ``flatten``
    holds no state); no groups, no normalisation; 1000 classes by default:
    61,100,840 parameters. Initialised as torchvision's (the layers' PyTorch defaults).
    Any input of at least 63x63 runs (the adaptive pool makes 6x6 of what comes), as in
    torchvision. ``meta`` (minidl.models.meta) holds ImageNet's preprocessing and names.
"""
from __future__ import annotations

import numpy as np

from .. import nn
from ..nn import init
from .meta import cifar10_meta, imagenet_meta
from .summary import summarize

VARIANTS = ("seed", "paper", "cifar", "torchvision")
INPUT_SIZE = {"seed": 224, "paper": 227, "cifar": 32, "torchvision": 224}
TORCHVISION_WEIGHTS = "alexnet-owt-7be5be79.pth"   # torchvision's published ImageNet weights for the variant
TORCHVISION_MIN_SIZE = 63   # the smallest side whose features still give 1x1 after pool 3/2 three times
CIFAR_WIDTHS = (32, 64, 128, 128, 128, 512, 512)  # conv1..conv5, fc6, fc7
CIFAR_KERNELS = (3, 3, 3, 3, 3)                   # conv1..conv5


class AlexNet(nn.Module):
    """AlexNet; see the module docstring for each variant's layers.

    Args:
        num_classes: number of logits; None means 10 ("seed", "cifar") or 1000 ("paper",
            "torchvision").
        variant: "seed", "paper", "cifar" or "torchvision".
        seed: seeds the weight initialisation and the dropout generators.
        dropout: the probability of the two dropout layers (after fc6 and fc7; in
            "torchvision", before the first two dense layers, as torchvision has them).
        widths: "cifar" only: 7 ints, the channels of conv1..conv5 and the units of
            fc6, fc7 (each even, since the streams split channels in two).
        kernel_sizes: "cifar" only: 5 ints, the kernel sizes of conv1..conv5.
        init: "paper" only: "paper" (default; N(0, 0.01) weights, biases 1 as listed
            above) or "he" (the seed variant's: He-normal conv weights, zero conv
            biases, the dense layers' default U(+-1/sqrt(fan_in))), which a short run
            with 10 classes can train (see _init_seed and docs/recipes.md, the paper variant).

    Attributes: ``input_size`` (S), ``meta`` (a ``ModelMeta``: data set, preprocessing, class names).

    Shapes: x (N, 3, S, S) with S = 224 / 227 / 32 / 224 -> logits (N, num_classes);
    "torchvision" takes any (N, 3, H, W) with H, W >= 63.
    """

    runs_children_in_order = True   # forward is its children in order (nn.fuse_for_inference reads it)

    def __init__(self, num_classes=None, variant="seed", seed=0, dropout=0.5, widths=None, kernel_sizes=None,
                 init=None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"AlexNet: variant must be one of {VARIANTS}, got {variant!r}")
        if init not in (None, "paper", "he") or (init is not None and variant != "paper"):
            raise ValueError(f"AlexNet: init applies to variant='paper' only and is 'paper' or 'he', "
                             f"got init={init!r} for variant={variant!r}")
        if variant != "cifar" and (widths is not None or kernel_sizes is not None):
            raise ValueError(f"AlexNet: widths and kernel_sizes apply to variant='cifar' only, not {variant!r}")
        if num_classes is None:
            num_classes = 1000 if variant in ("paper", "torchvision") else 10
        if int(num_classes) < 1:
            raise ValueError(f"AlexNet: num_classes must be >= 1, got {num_classes}")
        self.variant, self.num_classes = variant, int(num_classes)
        self.input_size = INPUT_SIZE[variant]
        init_seq, drop6_seq, drop7_seq = np.random.SeedSequence(seed).spawn(3)
        rng = np.random.default_rng(init_seq)
        drop6 = nn.Dropout(dropout, rng=np.random.default_rng(drop6_seq))
        drop7 = nn.Dropout(dropout, rng=np.random.default_rng(drop7_seq))
        if variant == "seed":
            self._build_seed(rng, drop6, drop7)
        elif variant == "paper":
            self._build_paper(rng, drop6, drop7, init or "paper")
        elif variant == "cifar":
            self._build_cifar(rng, drop6, drop7, widths, kernel_sizes)
        else:
            self._build_torchvision(rng, drop6, drop7)
        if variant in ("seed", "cifar"):
            self.meta = cifar10_meta(self.num_classes, self.input_size)
        else:   # the paper's mean-image subtraction is the recipe's; torchvision's weights want theirs
            self.meta = imagenet_meta(self.num_classes, self.input_size, normalized=variant == "torchvision",
                                      weights=TORCHVISION_WEIGHTS if variant == "torchvision" else None)

    # ---- the four layer stacks (registration order is execution order) -----------
    def _build_seed(self, rng, drop6, drop7):
        bn = dict(eps=1e-3, momentum=0.01)  # Keras BatchNormalization defaults
        self.conv1 = nn.Conv2d(3, 96, 11, stride=4, padding="same", rng=rng)
        self.bn1, self.relu1, self.pool1 = nn.BatchNorm2d(96, **bn), nn.ReLU(), nn.MaxPool2d(3, 2)
        self.conv2 = nn.Conv2d(96, 256, 5, padding="same", groups=2, rng=rng)
        self.bn2, self.relu2, self.pool2 = nn.BatchNorm2d(256, **bn), nn.ReLU(), nn.MaxPool2d(3, 2)
        self.conv3, self.relu3 = nn.Conv2d(256, 384, 3, padding="same", rng=rng), nn.ReLU()
        self.conv4, self.relu4 = nn.Conv2d(384, 384, 3, padding="same", groups=2, rng=rng), nn.ReLU()
        self.conv5, self.relu5 = nn.Conv2d(384, 256, 3, padding="same", groups=2, rng=rng), nn.ReLU()
        self.pool5, self.flatten = nn.MaxPool2d(3, 2), nn.Flatten()
        self._build_classifier(256 * 6 * 6, 4096, 4096, rng, drop6, drop7)
        self._init_seed(rng)

    def _build_paper(self, rng, drop6, drop7, scheme):
        self.conv1, self.relu1 = nn.Conv2d(3, 96, 11, stride=4, padding="valid", rng=rng), nn.ReLU()
        self.lrn1, self.pool1 = nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), nn.MaxPool2d(3, 2)
        self.conv2, self.relu2 = nn.Conv2d(96, 256, 5, padding=2, groups=2, rng=rng), nn.ReLU()
        self.lrn2, self.pool2 = nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), nn.MaxPool2d(3, 2)
        self.conv3, self.relu3 = nn.Conv2d(256, 384, 3, padding=1, rng=rng), nn.ReLU()
        self.conv4, self.relu4 = nn.Conv2d(384, 384, 3, padding=1, groups=2, rng=rng), nn.ReLU()
        self.conv5, self.relu5 = nn.Conv2d(384, 256, 3, padding=1, groups=2, rng=rng), nn.ReLU()
        self.pool5, self.flatten = nn.MaxPool2d(3, 2), nn.Flatten()
        self._build_classifier(256 * 6 * 6, 4096, 4096, rng, drop6, drop7)
        if scheme == "he":
            self._init_seed(rng)
            return
        for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
            layer = getattr(self, name)
            init.normal_(layer.weight, std=0.01, rng=rng)
            init.constant_(layer.bias, 0.0 if name in ("conv1", "conv3") else 1.0)

    def _build_cifar(self, rng, drop6, drop7, widths, kernel_sizes):
        widths = tuple(CIFAR_WIDTHS if widths is None else widths)
        kernels = tuple(CIFAR_KERNELS if kernel_sizes is None else kernel_sizes)
        if len(widths) != 7 or any(not isinstance(w, (int, np.integer)) or w < 2 or w % 2 for w in widths):
            raise ValueError(f"AlexNet(variant='cifar'): widths must be 7 even ints >= 2 "
                             f"(conv1..conv5, fc6, fc7), got {widths}")
        if len(kernels) != 5 or any(not isinstance(k, (int, np.integer)) or k < 1 for k in kernels):
            raise ValueError(f"AlexNet(variant='cifar'): kernel_sizes must be 5 positive ints, got {kernels}")
        self.widths, self.kernel_sizes = widths, kernels
        c1, c2, c3, c4, c5, f6, f7 = widths
        k1, k2, k3, k4, k5 = kernels
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(3, c1, k1, padding="same", rng=rng), nn.BatchNorm2d(c1), nn.ReLU()
        self.pool1 = nn.MaxPool2d(3, 2, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, k2, padding="same", groups=2, rng=rng)
        self.bn2, self.relu2, self.pool2 = nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1)
        self.conv3, self.bn3, self.relu3 = nn.Conv2d(c2, c3, k3, padding="same", rng=rng), nn.BatchNorm2d(c3), nn.ReLU()
        self.conv4 = nn.Conv2d(c3, c4, k4, padding="same", groups=2, rng=rng)
        self.bn4, self.relu4 = nn.BatchNorm2d(c4), nn.ReLU()
        self.conv5 = nn.Conv2d(c4, c5, k5, padding="same", groups=2, rng=rng)
        self.bn5, self.relu5 = nn.BatchNorm2d(c5), nn.ReLU()
        self.pool5, self.flatten = nn.MaxPool2d(3, 2, padding=1), nn.Flatten()
        self._build_classifier(c5 * 4 * 4, f6, f7, rng, drop6, drop7)
        # The layers' default init stays: see the module docstring.

    def _build_torchvision(self, rng, drop6, drop7):
        """torchvision's keys: features.0/3/6/8/10 and classifier.1/4/6 hold the weights."""
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2, rng=rng), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2, rng=rng), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1, rng=rng), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1, rng=rng), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(3, 2))
        self.avgpool, self.flatten = nn.AdaptiveAvgPool2d((6, 6)), nn.Flatten()
        self.classifier = nn.Sequential(drop6, nn.Linear(256 * 6 * 6, 4096, rng=rng), nn.ReLU(),
                                        drop7, nn.Linear(4096, 4096, rng=rng), nn.ReLU(),
                                        nn.Linear(4096, self.num_classes, rng=rng))

    def _build_classifier(self, features, f6, f7, rng, drop6, drop7):
        self.fc6, self.relu6, self.drop6 = nn.Linear(features, f6, rng=rng), nn.ReLU(), drop6
        self.fc7, self.relu7, self.drop7 = nn.Linear(f6, f7, rng=rng), nn.ReLU(), drop7
        self.fc8 = nn.Linear(f7, self.num_classes, rng=rng)

    def _init_seed(self, rng):
        """He-normal conv weights and zero conv biases; the dense layers keep their default init.

        He's factor 2 compensates for ReLU halving the signal through the convs. The
        dense layers (with dropout) are another matter: He there starts the loss far
        above log(10) = 2.30 and the first steps stall; the dense layers' default
        U(+-1/sqrt(fan_in)) trained best of the inits tried (docs/recipes.md).
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                init.he_normal_(module.weight, rng=rng, groups=module.groups)
                init.zeros_(module.bias)

    # ---- running ---------------------------------------------------------------
    def check_input_shape(self, shape):
        """Raise ValueError unless ``shape`` is an input this variant takes: (N, 3, S, S)."""
        s = self.input_size
        if self.variant == "torchvision":
            low = TORCHVISION_MIN_SIZE
            if len(shape) != 4 or shape[1] != 3 or min(shape[2:]) < low:
                raise ValueError(f"AlexNet(variant='torchvision') expects input (N, 3, H, W) with H, W >= {low} "
                                 f"(ImageNet's {s}), got {tuple(shape)}")
        elif len(shape) != 4 or tuple(shape[1:]) != (3, s, s):
            raise ValueError(f"AlexNet(variant='{self.variant}') expects input (N, 3, {s}, {s}), "
                             f"got {tuple(shape)}")

    def forward(self, x):
        """Logits for a batch of images. Shapes: x (N, 3, S, S) -> (N, num_classes)."""
        self.check_input_shape(x.shape)
        return nn.forward_chain(self.children(), x)   # in order; a training batch norm + ReLU as one call

    def summary(self, input_shape=None, print_fn=print) -> str:
        """Print and return a Keras-style table of layers, output shapes, parameters and size formulas.

        Args:
            input_shape: (3, S, S) or (N, 3, S, S); defaults to the variant's input.
            print_fn: where the text goes (None: nowhere).
        """
        s = self.input_size
        shape = (3, s, s) if input_shape is None else tuple(input_shape)
        if len(shape) == 3:
            self.check_input_shape((None,) + shape)
        else:
            self.check_input_shape(shape)
            shape = shape[1:]
        text = summarize(f"AlexNet (variant='{self.variant}', num_classes={self.num_classes})", self, shape)
        if print_fn is not None:
            print_fn(text)
        return text

    def plot(self, path, input_shape=None):
        """Draw the layers, their output shapes and the two streams to ``path`` (.png or .svg).

        See ``minidl.viz.plot_model`` (needs matplotlib, the ``plot`` extra). Returns the path.
        """
        from ..viz import plot_model  # lazily: matplotlib is optional
        return plot_model(self, path, input_shape)
