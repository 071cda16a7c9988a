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

from ... import backend


def is_channels_last(x) -> bool:
    """Whether the (N, C, H, W) array ``x`` lies in channels-last memory (contiguous NHWC).

    An array that is C-contiguous as well (C = 1, or 1 x 1 maps) counts as NCHW, so
    that every kernel walks it, and lays out its internal arrays, the NCHW way.
    """
    return x.ndim == 4 and not x.flags.c_contiguous and x.transpose(0, 2, 3, 1).flags.c_contiguous


def nhwc(x):
    """The (N, H, W, C) contiguous array behind ``x`` (N, C, H, W): a view if channels-last, else a copy."""
    xp = backend.get_array_module(x)
    return xp.ascontiguousarray(x.transpose(0, 2, 3, 1))


def as_nchw(x_nhwc):
    """A contiguous (N, H, W, C) array seen with the (N, C, H, W) shape: a view."""
    return x_nhwc.transpose(0, 3, 1, 2)
