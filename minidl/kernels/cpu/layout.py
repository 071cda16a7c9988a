"""Channels-last memory under the (N, C, H, W) shape: the CPU fast paths' layout.

Every 4-D activation in minidl has the shape (N, C, H, W), and every index means
what it means in NCHW. Its *memory* can be ordered either way:

    NCHW, C-contiguous:  x[n, c, h, w] at ((n*C + c)*H + h)*W + w
    channels-last:       x[n, c, h, w] at ((n*H + h)*W + w)*C + c

A channels-last array is ``nhwc.transpose(0, 3, 1, 2)`` of a contiguous (N, H, W, C)
array: a view, no copy. On the CPU, the fast convolution, pooling and batch norm write
their outputs channels-last, because NumPy's strided copies and BLAS both want long
contiguous runs: in channels-last memory a pixel's C channels are one run, so a
window copy (im2col, Winograd tiles, pooling slices) moves runs of C values instead
of rows of W values (4 to 32 values on CIFAR-sized maps), and a convolution's
matrix product writes its (pixels, channels) result straight into the output.

Elementwise operations (ReLU, dropout, sums) keep whatever layout their input has
(NumPy's ufuncs follow the input's memory order), and reshapes such as flatten read
the logical NCHW order, so nothing outside the kernels needs to know. The reference
implementations (minidl.functional) take either layout and return NCHW; on a GPU the
kernels keep NCHW (their CUDA kernels index it).
"""
from __future__ import annotations

import numpy as np

from ... import backend
from ...window import padded_place


def is_channels_last(x) -> bool:
    """Whether the (N, C, H, W) array ``x`` lies in channels-last memory (contiguous NHWC).

    An array that is C-contiguous as well (C = 1, or 1 x 1 maps) counts as NCHW, so
    that every kernel walks it, and lays out its internal arrays, the NCHW way.
    """
    return x.ndim == 4 and not x.flags.c_contiguous and x.transpose(0, 2, 3, 1).flags.c_contiguous


def channels_last_ordered(x) -> bool:
    """Whether (N, C, H, W) ``x`` walks its channels fastest: channels-last, or a strided view of it
    (``x[:, :, ::2, ::2]`` of a channels-last array). Copies of it are best made channels-last."""
    return x.ndim == 4 and x.shape[1] > 1 and x.strides[1] <= min(x.strides[2], x.strides[3]) and \
        not x.flags.c_contiguous


def nhwc(x):
    """The (N, H, W, C) contiguous array behind ``x`` (N, C, H, W): a view if channels-last, else a copy."""
    xp = backend.get_array_module(x)
    return xp.ascontiguousarray(x.transpose(0, 2, 3, 1))


def as_nchw(x_nhwc):
    """A contiguous (N, H, W, C) array seen with the (N, C, H, W) shape: a view."""
    return x_nhwc.transpose(0, 3, 1, 2)


class ChannelsLastPad:
    # x (N,C,H,W) channels-last -> y (N, C+cb+ca, H+hb+ha, W+wb+wa), channels-last too, the rest ``value``.
    # The reference's output is NCHW: at a ResNet's shortcut that would turn the whole
    # residual stream NCHW, and every later layer would pay a layout copy.
    algorithm = "channels-last"   # what minidl.viz shows for the call

    def __init__(self, pad: tuple, value: float):
        self.pad, self.value = pad, value

    def forward(self, x):
        out_shape, self.out_index, self.in_index = padded_place(x.shape, self.pad)
        n, c, h, w = out_shape
        y = as_nchw(np.full((n, h, w, c), self.value, dtype=x.dtype))
        y[self.out_index] = x[self.in_index]
        self.x = x
        return y

    def backward(self, gy, needs):
        gx = np.zeros_like(self.x)   # x's layout
        gx[self.in_index] = gy[self.out_index]
        return (gx,)
