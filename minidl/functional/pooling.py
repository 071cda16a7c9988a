"""2-D max pooling, with overlapping windows and -inf padding.

Forward walks the KH*KW kernel taps, never the pixels: for one tap, the pixels it
sees across all windows form one strided slice of the padded input
(``window.tap_slice``), so a running maximum over the taps gives every window's
maximum in KH*KW vectorised steps. Alongside it we record *which* tap won, one small
integer per output, instead of keeping the input for backward.

Backward sends each output's gradient to exactly one input: its window's maximum
(the first one in tap order if several tie, because the running maximum only moves
on a strictly larger value). With overlapping windows (stride < kernel) one input can
be the maximum of several windows; its gradient is the sum of theirs, which the
per-tap strided adds accumulate.

Padding is -inf, never zero: a zero pad would beat an all-negative window.

This module is the reference implementation; ``max_pool2d`` asks
``minidl.kernels.dispatch`` for a fast path first (batch slices in either memory
layout on the CPU, one raw CUDA kernel per direction on a GPU), which applies the
same rule and so returns the same values and gradients.
"""
from __future__ import annotations

from .. import backend
from ..autograd import Function, Tensor
from ..kernels import dispatch
from ..window import int_pair, output_hw, pad2d, resolve_padding, tap_slice
from .fast_path import FastPath


class MaxPool2d(Function):
    # x (N,C,H,W) -> xpad (N,C,Hp,Wp), padded with -inf -> y (N,C,OH,OW), and
    # argmax (N,C,OH,OW): the winning tap kh*KW + kw within each window.
    def __init__(self, kernel: tuple, stride: tuple, pads: tuple):
        self.kernel, self.stride, self.pads = kernel, stride, pads

    def forward(self, x):
        xp = backend.get_array_module(x)
        (kh_size, kw_size), (sh, sw) = self.kernel, self.stride
        oh, ow = output_hw("max_pool2d", x.shape[2:], self.kernel, self.stride, self.pads)
        xpad = pad2d(x, self.pads, -xp.inf)
        y = argmax = None
        for kh in range(kh_size):
            for kw in range(kw_size):
                candidate = xpad[:, :, tap_slice(kh, sh, oh), tap_slice(kw, sw, ow)]
                if y is None:   # the first tap starts the running maximum
                    y, argmax = candidate.copy(), xp.zeros(candidate.shape, dtype=xp.int32)
                    continue
                better = candidate > y    # strictly larger: on a tie the earlier tap keeps the gradient
                argmax = xp.where(better, kh * kw_size + kw, argmax)
                y = xp.maximum(y, candidate)   # a NaN wins (NumPy's maximum propagates it) but moves no argmax
        self.x_shape, self.argmax = x.shape, argmax
        return xp.ascontiguousarray(y)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        (kh_size, kw_size), (sh, sw) = self.kernel, self.stride
        (top, bottom), (left, right) = self.pads
        n, c, h, w = self.x_shape
        oh, ow = gy.shape[2:]
        gxpad = xp.zeros((n, c, top + h + bottom, left + w + right), dtype=gy.dtype)
        for kh in range(kh_size):
            for kw in range(kw_size):
                # Outputs whose maximum sat at this tap send their gradient there.
                mine = self.argmax == kh * kw_size + kw
                gxpad[:, :, tap_slice(kh, sh, oh), tap_slice(kw, sw, ow)] += gy * mine
        gx = xp.ascontiguousarray(gxpad[:, :, top:top + h, left:left + w])
        assert gx.shape == tuple(self.x_shape)
        return gx


def max_pool2d(x: Tensor, kernel_size, stride=None, padding=0) -> Tensor:
    """Max over each KH x KW window of each channel.

    Args:
        x: input Tensor (or array).
        kernel_size: int or (KH, KW).
        stride: int or (SH, SW); defaults to kernel_size (non-overlapping windows).
            A stride below the kernel size gives AlexNet's overlapping pooling.
        padding: as conv2d: int, (ph, pw), ((top, bottom), (left, right)), "valid"
            or "same" (TensorFlow's rule). Padded pixels are -inf, so they never win.
    Returns:
        y Tensor.

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW), OH = (H + top + bottom - KH) // SH + 1.
    Raises:
        ValueError for a wrong rank, a non-positive kernel or stride, padding as large
        as the kernel (a window could then hold only padding), or a kernel larger than
        the padded input.
    """
    x_shape = tuple(x.shape)
    if len(x_shape) != 4:
        raise ValueError(f"max_pool2d: expected x (N, C, H, W), got shape {x_shape}")
    if x.dtype.kind != "f":
        raise ValueError(f"max_pool2d: expected a floating-point x, got dtype {x.dtype}")
    kernel = int_pair("max_pool2d", "kernel_size", kernel_size)
    stride = kernel if stride is None else int_pair("max_pool2d", "stride", stride)
    pads = resolve_padding("max_pool2d", padding, x_shape[2:], kernel, stride)
    if any(p >= k for (before, after), k in zip(pads, kernel) for p in (before, after)):
        raise ValueError(f"max_pool2d: padding {pads} must be smaller than the kernel {kernel} on every side")
    output_hw("max_pool2d", x_shape[2:], kernel, stride, pads)  # raises if the kernel does not fit
    fast = dispatch.max_pool2d(x.data if isinstance(x, Tensor) else x, kernel, stride, pads)
    return (MaxPool2d(kernel, stride, pads) if fast is None else FastPath("MaxPool2d", fast))(x)
