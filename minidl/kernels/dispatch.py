"""Which implementation runs each op: the one table of choices.

Every op in ``minidl.functional`` has a reference implementation in its own module,
the textbook version written once against ``xp``. Before it runs, the op asks this
module for a fast path; the answer is an object that computes the same values on raw
arrays (``forward(*arrays)``, ``backward(*grads, needs)``), or None for the reference.
The decision is made per call, from the arrays (their device, dtype and memory
layout) and the shapes:

    op               CPU (NumPy arrays)                         GPU (CuPy float32/float64)
    conv2d           3x3 and 5x5 stride-1 kernels with at       im2col with raw CUDA im2col/col2im
                     least WINOGRAD_MIN_CHANNELS input channels  (cuda/conv.py)
                     per group: Winograd (cpu/winograd.py);
                     the rest: channels-last im2col (cpu/conv.py)
                     dilated convs: the reference on both devices
    max_pool2d       batch slices in either layout              raw forward/backward kernels
                     (cpu/pooling.py)                           (cuda/pooling.py)
                     float input, ceil_mode (it arrives as extra end padding) on both devices;
                     dilation, return_indices and integer input: the reference
    batch_norm       chunked per-channel passes                 reductions + raw affine kernels
                     (batch_norm.py over cpu/channel_passes.py)  (batch_norm.py over cuda/channel_passes.py)
    batch_norm +     (training, functional/fused.py) the same passes: the ReLU in the affine
      relu           pass, which keeps where y > 0 (one byte each) for backward's passes
    relu             chunks on the worker threads               the reference
    avg_pool2d       channels-last input: batch slices          the reference
                     (cpu/average_pooling.py)
    adaptive_avg_    1x1: the global average, one product with  the reference
      pool2d         a row of ones per image; an output that
                     divides the input: avg_pool2d's slices
                     (cpu/average_pooling.py)
    sigmoid,         chunks on the worker threads               the reference
      leaky_relu,    (cpu/activations.py)
      gelu
    linear           products split over the workers            the reference (cuBLAS)
                     (2-D x: F.linear folds other ranks into it first)
    SGD update       chunks of all parameters in one region     the reference
    Adam update      chunks of all parameters in one region     the reference
                     (cpu/adam.py; AdamW too)
    resize_bilinear  the reference                              one raw kernel
    pad              channels-last input: channels-last output  the reference
                     (cpu/layout.py)
    conv2d + relu,   (inference, functional/fused.py) the ReLU in  the same, in the raw paths' output
      relu + max_    the convolution's output pass (a residual
      pool2d         block's shortcut added there too); pooling
                     as a running maximum from 0, no argmax kept

Every fast path takes empty batches (N = 0).

Everything else (other dtypes, a GPU's float16, ops without a row here) runs the
reference. The CPU fast paths keep 4-D activations in channels-last memory under the
NCHW shape (cpu/layout.py); the references take any layout and return NCHW.

Mode: ``MINIDL_KERNELS=reference`` in the environment (read at every call), or
``minidl.kernels.use("reference")`` / ``set_mode("reference")`` in a program, makes
every op run its reference, on the CPU and on a GPU. ``conv2d(algorithm=...)`` names
one implementation and wins over the mode.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

from .. import backend
from .batch_norm import BatchNormKernel
from .cpu import channel_passes as cpu_channel_passes
from .cpu.activations import ChunkedGELU, ChunkedLeakyReLU, ChunkedReLU, ChunkedSigmoid
from .cpu.adam import FusedAdam
from .cpu.average_pooling import GlobalAvgPool2d, SlicedAvgPool2d
from .cpu.conv import ChannelsLastConv2d
from .cpu.elementwise import flat_memory
from .cpu.layout import ChannelsLastPad, channels_last_ordered, is_channels_last
from .cpu.linear import SplitLinear
from .cpu.pooling import SlicedMaxPool2d
from .cpu.sgd import FusedSGD
from .cpu.winograd import WinogradConv2d
from .cpu.winograd_transforms import POINTS as WINOGRAD_POINTS
from .cuda import channel_passes as cuda_channel_passes
from .cuda import launches
from .cuda.conv import RawIm2colConv2d
from .cuda.pooling import RawMaxPool2d

MODES = ("fast", "reference")
CONV_ALGORITHMS = ("auto", "reference", "im2col", "winograd", "winograd_2x2", "winograd_4x4")
# Below this many input channels per group Winograd's products are too thin to win.
WINOGRAD_MIN_CHANNELS = 16
# Kernel sizes "auto" gives to Winograd on the CPU (forcing works for every size with a tile).
WINOGRAD_KERNELS = (3, 5)

_forced_mode = None   # set by use() / set_mode(); None: the environment decides


def _check_mode(value, where: str) -> str:
    if value not in MODES:
        raise ValueError(f"{where} must be one of {MODES}, got {value!r}")
    return value


def mode() -> str:
    """"fast" or "reference": ``set_mode``/``use`` if active, else ``MINIDL_KERNELS`` (default "fast")."""
    if _forced_mode is not None:
        return _forced_mode
    return _check_mode(os.environ.get("MINIDL_KERNELS", "fast").strip() or "fast", "MINIDL_KERNELS")


def set_mode(value: str | None) -> None:
    """Make every op in this process run its "reference" or its "fast" kernels; None: back to MINIDL_KERNELS."""
    global _forced_mode
    _forced_mode = None if value is None else _check_mode(value, "minidl.kernels.set_mode")


@contextlib.contextmanager
def use(value: str):
    """``with minidl.kernels.use("reference"):`` every op inside runs its reference (process-wide)."""
    global _forced_mode
    previous, _forced_mode = _forced_mode, _check_mode(value, "minidl.kernels.use")
    try:
        yield
    finally:
        _forced_mode = previous


def device_type(array) -> str:
    """"cpu" or "cuda": where ``array`` lives. (Tests route NumPy arrays to the CUDA paths through it.)"""
    return backend.device_of(array).type


def _raw_cuda(array) -> bool:
    """Whether the raw CUDA kernels can take ``array``: on a GPU, float32 or float64."""
    return device_type(array) == "cuda" and array.dtype in launches.RAW_DTYPES


def _fast(array) -> str | None:
    """"cpu", "cuda" (raw kernels apply) or None (the reference runs)."""
    if mode() == "reference" or not backend.is_array(array):   # a list or a number: the reference takes it
        return None
    if device_type(array) == "cpu":
        return "cpu"
    return "cuda" if _raw_cuda(array) else None


# ---- convolution ------------------------------------------------------------------------

def winograd_tiles(kernel: tuple, stride: tuple) -> tuple:
    """The tiles m with which Winograd can run this conv: () unless stride 1 and a square kernel it has points for."""
    if tuple(stride) != (1, 1) or kernel[0] != kernel[1]:
        return ()
    return tuple(sorted(m for m, r in WINOGRAD_POINTS if r == kernel[0]))


def winograd_tile(out_hw: tuple, kernel_size: int, tiles: tuple) -> int:
    """Of ``tiles``, the tile m with fewer transformed values, (m+r-1)^2 per tile, for this output size.

    Ties go to the smaller, more accurate tile.
    """
    def values(m):
        return (m + kernel_size - 1) ** 2 * -(-out_hw[0] // m) * -(-out_hw[1] // m)
    return min(tiles, key=values)


def conv_algorithm(x, kernel: tuple, stride: tuple, groups: int, out_hw: tuple, algorithm: str = "auto",
                   dilation: tuple = (1, 1)) -> str:
    """What conv2d runs: "reference", "im2col", "winograd_2x2" or "winograd_4x4" (see the table).

    Raises:
        ValueError for an unknown name, a Winograd algorithm forced on a conv it cannot
        do, or a fast algorithm forced on a dilated conv (only the reference dilates).
    """
    if algorithm not in CONV_ALGORITHMS:
        raise ValueError(f"conv2d: algorithm must be one of {CONV_ALGORITHMS}, got {algorithm!r}")
    if tuple(dilation) != (1, 1):
        if algorithm not in ("auto", "reference"):
            raise ValueError(f"conv2d: algorithm {algorithm!r} cannot run dilation {tuple(dilation)}; "
                             f"only 'reference' (or 'auto', which picks it) can")
        return "reference"
    tiles = winograd_tiles(kernel, stride)
    if algorithm == "auto":
        where = _fast(x)
        if where is None:
            return "reference"
        wide = x.shape[1] // groups >= WINOGRAD_MIN_CHANNELS
        winograd = where == "cpu" and kernel[0] in WINOGRAD_KERNELS and bool(tiles) and wide
        algorithm = "winograd" if winograd else "im2col"
    if algorithm in ("reference", "im2col"):
        return algorithm
    if algorithm == "winograd" and tiles:
        m = winograd_tile(out_hw, kernel[0], tiles)
        return f"winograd_{m}x{m}"
    if algorithm != "winograd" and int(algorithm[-1]) in tiles:
        return algorithm
    supported = ", ".join(f"F({m}x{m}, {r}x{r})" for m, r in sorted(WINOGRAD_POINTS, key=lambda p: (p[1], p[0])))
    raise ValueError(f"conv2d: algorithm {algorithm!r} needs stride 1 and a square kernel with a Winograd "
                     f"tile ({supported}), got kernel {tuple(kernel)} and stride {tuple(stride)}")


def conv2d(x, kernel: tuple, stride: tuple, pads: tuple, groups: int, out_hw: tuple, algorithm: str = "auto",
           dilation: tuple = (1, 1), relu: bool = False, prepared=None, residual=None):
    """The fast convolution for this call, or None for the reference (``minidl.functional.conv``).

    ``relu``: inference's conv + ReLU, the ReLU applied in the output pass (``functional.fused``).
    ``residual``: inference's residual block: an array of the output's shape added in the
    output pass, before the ReLU.
    ``prepared``: a frozen layer's ``PreparedWeights`` (inference), where the kernel keeps the
    transform of the weight it multiplies by (Winograd's U) between calls.
    """
    chosen = conv_algorithm(x, kernel, stride, groups, out_hw, algorithm, dilation)
    on_cpu = device_type(x) == "cpu"
    if chosen.startswith("winograd"):
        return WinogradConv2d(int(chosen[-1]), kernel[0], pads, groups, channels_last=on_cpu, relu=relu,
                              prepared=prepared, residual=residual)
    if chosen == "im2col":
        if on_cpu:
            return ChannelsLastConv2d(kernel, stride, pads, groups, relu=relu, residual=residual)
        if _raw_cuda(x):
            return RawIm2colConv2d(kernel, stride, pads, groups, relu=relu, residual=residual)
    return None


# ---- the other ops ------------------------------------------------------------------------

def max_pool2d(x, kernel: tuple, stride: tuple, pads: tuple, dilation: tuple = (1, 1),
               return_indices: bool = False, relu: bool = False):
    """The fast max pooling for this call, or None for the reference.

    The fast paths pool float arrays with undilated windows and keep no indices;
    ceil_mode reaches them as extra padding (``window.ceil_mode_pads``). ``relu``:
    inference's ReLU + pooling, max(relu(x)) as a running maximum from 0 (``functional.fused``).
    """
    if tuple(dilation) != (1, 1) or return_indices or x.dtype.kind != "f":
        return None
    where = _fast(x)
    if where == "cpu":
        return SlicedMaxPool2d(kernel, stride, pads, relu)
    return None if where is None else RawMaxPool2d(kernel, stride, pads, relu)


def batch_norm(x, training: bool, has_weight: bool, has_bias: bool, eps: float, momentum: float,
               running_mean=None, running_var=None, channel_reduce=None, relu: bool = False):
    """The fast batch norm for this call, or None for the reference.

    ``relu``: batch norm + ReLU as one kernel (``functional.fused.batch_norm_relu``),
    for training only: evaluation gets None (the composed reference).
    """
    where = _fast(x)
    if where is None or (relu and not training):
        return None
    passes = cpu_channel_passes if where == "cpu" else cuda_channel_passes
    return BatchNormKernel(passes, training, has_weight, has_bias, eps, momentum, running_mean, running_var,
                           channel_reduce, relu)


def relu(x):
    """Chunked ReLU on the CPU for an array in a contiguous layout, else None."""
    return ChunkedReLU() if _fast(x) == "cpu" and flat_memory(x) is not None else None


def linear(x):
    """The dense layer's products split over the CPU workers, else None (cuBLAS is parallel already)."""
    return SplitLinear() if _fast(x) == "cpu" else None


def resize_bilinear(x):
    """The raw CUDA resize, ``fn(x, row_taps, col_taps)``, or None for the reference."""
    return launches.resize_bilinear if _fast(x) == "cuda" else None


def _updatable(written, read) -> bool:
    """Whether a fused CPU update can take these arrays: all on the CPU, the ones it writes C-contiguous.

    The arrays it only reads (gradients) may have any layout: the kernel flattens a strided
    one into a copy (a Winograd convolution's weight gradient comes channels-last).
    """
    return (bool(written) and _fast(written[0]) == "cpu" and all(device_type(a) == "cpu" for a in read)
            and all(device_type(a) == "cpu" and a.flags.c_contiguous for a in written))


def sgd_step(weights, grads):
    """The fused CPU update for a step over these parameters (and momentum buffers) and gradients, or None.

    All or nothing: the fused update writes C-contiguous CPU arrays only.
    """
    return FusedSGD() if _updatable(weights, grads) else None


def adam_step(written, grads):
    """The fused CPU Adam/AdamW update for a step over these parameters and moments, and gradients, or None.

    All or nothing, as ``sgd_step``.
    """
    return FusedAdam() if _updatable(written, grads) else None


# ---- average and adaptive pooling, activations --------------------------------------------

def avg_pool2d(x, kernel: tuple, stride: tuple, pads: tuple, divisor):
    """The fast average pooling for this call, or None for the reference.

    ``pads`` already cover every window (ceil mode's overhang included); ``divisor`` is
    each window's (OH, OW) divisor, as the reference gets them. On the CPU the batch
    slices pay for channels-last input (the fast convolutions' output); on NCHW input
    the reference, which walks rows of W values either way, is as fast.
    """
    return SlicedAvgPool2d(kernel, stride, pads, divisor) if _fast(x) == "cpu" and is_channels_last(x) else None


def adaptive_avg_pool2d(x, out_hw: tuple):
    """The fast adaptive average pooling for this call, or None for the reference.

    On the CPU: output 1 x 1 is the global average; an output that divides the input is
    average pooling with kernel = stride = input / output; other sizes run the reference.
    """
    if _fast(x) != "cpu":
        return None
    if tuple(out_hw) == (1, 1):
        return GlobalAvgPool2d()
    (h, w), (oh, ow) = x.shape[2:], out_hw
    if h % oh or w % ow:
        return None
    kernel = (h // oh, w // ow)
    return SlicedAvgPool2d(kernel, kernel, ((0, 0), (0, 0)), np.full(out_hw, float(kernel[0] * kernel[1])))


def _elementwise(x):
    """Whether the chunked CPU kernels take ``x``: fast mode, on the CPU, in a contiguous layout."""
    return _fast(x) == "cpu" and flat_memory(x) is not None


def sigmoid(x):
    """Chunked sigmoid on the CPU for an array in a contiguous layout, else None."""
    return ChunkedSigmoid() if _elementwise(x) else None


def leaky_relu(x, negative_slope: float):
    """Chunked leaky ReLU on the CPU for an array in a contiguous layout, else None."""
    return ChunkedLeakyReLU(negative_slope) if _elementwise(x) else None


def gelu(x, approximate: str):
    """Chunked GELU on the CPU for an array in a contiguous layout, else None."""
    return ChunkedGELU(approximate) if _elementwise(x) else None


def pad(x, pad: tuple, value: float):
    """A channels-last 4-D input (or a strided view of one) padded into channels-last memory on the CPU."""
    return ChannelsLastPad(pad, value) if _fast(x) == "cpu" and channels_last_ordered(x) else None
