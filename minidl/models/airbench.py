"""airbench94: Keller Jordan's fast CIFAR-10 network (arXiv 2404.00498), rebuilt from minidl.nn layers.

The paper trains this network to 94% test accuracy in 3.8 seconds on an A100. What makes
it fast to train is less its size (about 2 million weights) than the tricks at its ends:

    x (3,32,32), normalised per channel with the training set's mean and std
    whiten  conv 2x2, no padding, 3 -> 24, its weight frozen at the patch-whitening filters  24,31,31
    act     GELU
    block1  conv 3x3 -> max pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU, 64 channels      64,15,15
    block2  the same, 256 channels                                                            256,7,7
    block3  the same, 256 channels                                                            256,3,3
    pool    max pool 3 (global: the map is 3x3)                                               256,1,1
    flatten, head  Linear 256 -> 10 without bias
    scale   logits * 1/9

* The whitening layer. Every 2x2 patch of an image is a 12-vector (3 channels x 2 x 2).
  Its filters are the eigenvectors v_k of the patches' second-moment matrix
  C = E[p p^T], each divided by sqrt(lambda_k + eps), once as v and once as -v: on the
  training images the 12 outputs of the positive half are uncorrelated with variance
  lambda / (lambda + eps), close to 1 (``whitening_filters``). The network starts from
  decorrelated inputs and never spends steps learning what PCA gives for free; the
  weight is frozen (``requires_grad`` False: no gradient, the optimizer never sees it),
  only its bias trains (the recipe freezes it too after a few epochs).
* Identity ("dirac") initialisation. Each block's convolutions start with their first
  min(in, out) filters as the identity (1 at the centre tap of their own input channel),
  the rest at PyTorch's default: at the start each block passes its input through,
  like a residual network without the shortcut.
* Batch norm without a scale: the weight is fixed at 1 (frozen), only the bias (the
  shift) trains; eps 1e-12, running statistics with momentum 0.4 (PyTorch's convention:
  running = 0.6 running + 0.4 batch). A scale right before GELU would let the next
  convolution's weights and this layer fight over the same degree of freedom.
* The scaled head: logits are multiplied by 1/9, which under SGD is the same as training
  the head at a lower rate without touching its weight decay.

Convolutions have no biases (the batch norm after them has one). State_dict keys:
``whiten.weight``, ``whiten.bias``, ``block1.conv1.weight``, ``block1.norm1.bias``,
``block1.norm1.running_mean``, ..., ``head.weight``.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .. import nn
from .meta import cifar10_meta
from .summary import summarize

WIDTHS = (64, 256, 256)          # block1, block2, block3
WHITEN_KERNEL = 2                # the whitening convolution's window
BN_MOMENTUM, BN_EPS = 0.4, 1e-12  # PyTorch's convention: running = (1 - momentum) running + momentum batch
HEAD_SCALE = 1.0 / 9.0
WHITEN_EPS = 5e-4                # added to each eigenvalue before the square root (the paper's)


def _patches_second_moment(images, kernel_size: int, chunk: int = 512):
    """E[p p^T] over every kernel_size x kernel_size patch p (flattened C, KH, KW) of ``images``, float64."""
    # images (N,C,H,W) -> taps (n,C,K,K,OH,OW) -> patches (n*OH*OW, C*K*K) -> sum of p p^T (C*K*K, C*K*K)
    xp = backend.get_array_module(images)
    n, c, h, w = images.shape
    k = kernel_size
    oh, ow = h - k + 1, w - k + 1
    dim = c * k * k
    total = xp.zeros((dim, dim), dtype=np.float64)
    for start in range(0, n, chunk):   # in chunks: all 50,000 images' patches at once would be 1.2 GB
        x = images[start:start + chunk].astype(np.float64)
        taps = xp.stack([xp.stack([x[:, :, dy:dy + oh, dx:dx + ow] for dx in range(k)], axis=2)
                         for dy in range(k)], axis=2)             # (n, C, KH, KW, OH, OW)
        patches = taps.transpose(0, 4, 5, 1, 2, 3).reshape(-1, dim)
        total += patches.T @ patches
    return total / (n * oh * ow)


def whitening_filters(images, kernel_size: int = WHITEN_KERNEL, eps: float = WHITEN_EPS):
    """The whitening convolution's filters for ``images``: scaled eigenvectors of their patch statistics.

    With C = E[p p^T] over all kernel_size x kernel_size patches p (flattened as a
    convolution weight's (C, KH, KW)) and C = V diag(lambda) V^T, filter k is
    v_k / sqrt(lambda_k + eps), largest eigenvalue first; then the same filters negated.
    On the patches the positive half's outputs have second moments
    V^T C V / (lambda + eps) = diag(lambda / (lambda + eps)): uncorrelated, variance ~1.
    The second moment, not the covariance, is used (the paper's choice): inputs
    normalised per channel have mean ~0, where the two agree.

    Args:
        images: (N, C, H, W) float array (NumPy or CuPy), normalised as the network sees them.
        kernel_size: the side of the patches (2 for airbench94).
        eps: added to every eigenvalue, so that directions of almost no variance are
            not amplified without bound.
    Returns:
        (2 * C * K * K, C, K, K) float64 array on the images' device: the weight of a
        Conv2d(C, 2 C K K, K) (24 filters of 3x2x2 for RGB and K = 2).
    Raises:
        ValueError for images that are not (N, C, H, W) floats at least K x K, or eps < 0.
    """
    if not backend.is_array(images) or images.ndim != 4 or images.dtype.kind != "f":
        got = f"{images.dtype} array of shape {images.shape}" if backend.is_array(images) else type(images).__name__
        raise ValueError(f"whitening_filters: expected float images (N, C, H, W), got {got}")
    n, c, h, w = images.shape
    if n < 1 or min(h, w) < kernel_size or kernel_size < 1 or eps < 0:
        raise ValueError(f"whitening_filters: need at least one image of at least {kernel_size}x{kernel_size} "
                         f"pixels, kernel_size >= 1 and eps >= 0, got images {tuple(images.shape)}, "
                         f"kernel_size {kernel_size}, eps {eps}")
    xp = backend.get_array_module(images)
    moment = _patches_second_moment(images, kernel_size)
    eigenvalues, eigenvectors = xp.linalg.eigh(moment)        # ascending; columns are the vectors
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    # rounding can leave the smallest eigenvalue of a positive semi-definite matrix slightly below 0
    scaled = eigenvectors.T / xp.sqrt(xp.maximum(eigenvalues, 0.0) + eps)[:, None]
    filters = scaled.reshape(-1, c, kernel_size, kernel_size)
    return xp.concatenate([filters, -filters])


def identity_init_(conv: nn.Conv2d) -> nn.Conv2d:
    """Make the first min(in, out) filters of ``conv`` the identity ("dirac"); the others keep their values.

    Filter i < min(in, out) becomes 1 at the centre of input channel i and 0 elsewhere, so
    output channel i equals input channel i (for an odd kernel and "same" padding).
    PyTorch's ``nn.init.dirac_`` applied to ``weight[:in_channels]``. Returns ``conv``.
    """
    weight = conv.weight.data
    out_channels, in_channels, kh, kw = weight.shape
    if conv.groups != 1 or kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"identity_init_: needs an ungrouped convolution with an odd kernel, got groups "
                         f"{conv.groups}, kernel {(kh, kw)}")
    k = min(out_channels, in_channels)
    values = backend.to_numpy(weight).copy()
    values[:k] = 0
    values[np.arange(k), np.arange(k), kh // 2, kw // 2] = 1
    weight[...] = backend.to_device(values, backend.device_of(weight))
    return conv


def _batch_norm(channels):
    """Batch norm with only a shift: the weight stays 1 (frozen), the bias trains."""
    bn = nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
    bn.weight.requires_grad = False
    return bn


class Scale(nn.Module):
    """Multiply by a constant: y = factor * x. No parameters. Shapes: any -> same."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)

    def forward(self, x):
        return x * self.factor

    def shape_info(self, shape):
        return tuple(shape), f"x * {self.factor:.4g}"

    def extra_repr(self):
        return f"{self.factor:.6g}"


class ConvGroup(nn.Sequential):
    """conv 3x3 -> max pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU (one airbench block).

    Both convolutions have padding 1, no bias, and start as the identity on their first
    channels (``identity_init_``); the batch norms train only their shift.

    Args:
        in_channels, out_channels: channels in and out.
        rng: the generator of the convolutions' default initialisation.
        dirac: start the convolutions as the identity (False: their default init only; an ablation).

    A Sequential with named children (conv1, pool, norm1, act1, conv2, norm2, act2), so
    summaries open it and ``nn.fuse_for_inference`` folds norm2 into conv2.

    Shapes: (N, in_channels, H, W) -> (N, out_channels, H // 2, W // 2).
    """

    def __init__(self, in_channels, out_channels, *, rng, dirac=True):
        super().__init__()
        start = identity_init_ if dirac else (lambda conv: conv)
        self.conv1 = start(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False, rng=rng))
        self.pool = nn.MaxPool2d(2)
        self.norm1, self.act1 = _batch_norm(out_channels), nn.GELU()
        self.conv2 = start(nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False, rng=rng))
        self.norm2, self.act2 = _batch_norm(out_channels), nn.GELU()


class Airbench94(nn.Module):
    """The airbench94 network (see the module docstring); build it with ``airbench94()``.

    Args:
        num_classes: number of logits.
        widths: the channels of the three blocks.
        seed: seeds the default initialisation of the convolutions and the head.
        dirac: the blocks' convolutions start as the identity (False, for ablations: not).
        whitening: the whitening layer's weight is frozen, to be set by ``init_whitening``
            (False, for ablations: it keeps its default init and trains like any layer).

    Call ``init_whitening(images)`` with (a few thousand) normalised training images
    before training: until then the whitening layer holds PyTorch's default init.

    Shapes: x (N, 3, 32, 32) -> logits (N, num_classes). (Other sizes work as long as the
    map reaching ``pool`` is 3x3 or larger; only 32x32 ends at 1x1.)
    """

    runs_children_in_order = True

    def __init__(self, num_classes=10, widths=WIDTHS, *, seed=0, dirac=True, whitening=True):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 3 or min(widths) < 1 or int(num_classes) < 1:
            raise ValueError(f"airbench94: need 3 positive widths and num_classes >= 1, got widths {widths}, "
                             f"num_classes {num_classes}")
        self.num_classes, self.widths = int(num_classes), widths
        rng = np.random.default_rng(seed)
        whiten_width = 2 * 3 * WHITEN_KERNEL ** 2
        self.whiten = nn.Conv2d(3, whiten_width, WHITEN_KERNEL, padding=0, bias=True, rng=rng)
        self.whiten.weight.requires_grad = not whitening
        self.act = nn.GELU()
        self.block1 = ConvGroup(whiten_width, widths[0], rng=rng, dirac=dirac)
        self.block2 = ConvGroup(widths[0], widths[1], rng=rng, dirac=dirac)
        self.block3 = ConvGroup(widths[1], widths[2], rng=rng, dirac=dirac)
        self.pool, self.flatten = nn.MaxPool2d(3), nn.Flatten()
        self.head = nn.Linear(widths[2], self.num_classes, bias=False, rng=rng)
        self.scale = Scale(HEAD_SCALE)
        self.input_size = 32
        self.arch = "airbench94"
        self.meta = cifar10_meta(self.num_classes)

    def init_whitening(self, images, eps: float = WHITEN_EPS) -> None:
        """Set the whitening layer's (frozen) weight from ``images`` (normalised as the network sees them)."""
        filters = whitening_filters(images, WHITEN_KERNEL, eps)
        weight = self.whiten.weight
        if filters.shape != weight.shape:
            raise ValueError(f"Airbench94.init_whitening: images with {images.shape[1]} channels give filters "
                             f"{tuple(filters.shape)}, the layer has {weight.shape}")
        weight.data[...] = backend.to_device(backend.to_numpy(filters).astype(weight.dtype),
                                             backend.device_of(weight.data))

    def check_input_shape(self, shape):
        """Raise ValueError unless ``shape`` is (N, 3, H, W)."""
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"airbench94 expects input (N, 3, H, W) (nominally 32x32), got {tuple(shape)}")

    def forward(self, x):
        """Logits for a batch of images. Shapes: x (N, 3, 32, 32) -> (N, num_classes)."""
        self.check_input_shape(x.shape)
        for layer in self.children():
            x = layer(x)
        return x

    def summary(self, input_shape=None, print_fn=print) -> str:
        """Print and return a Keras-style table of the layers, output shapes and parameters."""
        shape = (3, 32, 32) if input_shape is None else tuple(input_shape)[-3:]
        self.check_input_shape((None,) + shape)
        text = summarize(f"airbench94 (num_classes={self.num_classes})", self, shape)
        if print_fn is not None:
            print_fn(text)
        return text

    def plot(self, path, input_shape=None):
        """Draw the layers and their output shapes to ``path`` (.png or .svg); see ``minidl.viz.plot_model``."""
        from ..viz import plot_model  # lazily: matplotlib is optional
        return plot_model(self, path, input_shape, title=f"airbench94 ({self.num_classes} classes)")


def airbench94(num_classes=10, *, seed=0, images=None, dirac=True, whitening=True) -> Airbench94:
    """The airbench94 network: whitening 2x2 conv, blocks of 64/256/256 channels, a scaled head.

    Args:
        num_classes: number of logits.
        seed: seeds the default initialisation.
        images: optional normalised training images (N, 3, H, W) for ``init_whitening``.
        dirac, whitening: the two initialisations, on (the recipe) or off (ablations; ``Airbench94``).
    """
    model = Airbench94(num_classes, seed=seed, dirac=dirac, whitening=whitening)
    if images is not None:
        model.init_whitening(images)
    return model


__all__ = ["Airbench94", "ConvGroup", "Scale", "airbench94", "identity_init_", "whitening_filters"]
