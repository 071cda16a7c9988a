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

Padding is -inf (the smallest value, for integers), never zero: a zero pad would
beat an all-negative window.

PyTorch's options: ``dilation`` spreads the taps (tap (kh, kw) reads offset
(kh*DH, kw*DW)); ``ceil_mode`` adds the partial windows at the end, which is the same
as padding the end further (``window.ceil_mode_pads``); ``return_indices`` turns the
winning tap into PyTorch's index, the winner's flat position h*W + w in its plane.

This module is the reference implementation; ``max_pool2d`` asks
``minidl.kernels.dispatch`` for a fast path first (batch slices in either memory
layout on the CPU, one raw CUDA kernel per direction on a GPU), which applies the
same rule and so returns the same values and gradients.
"""
from __future__ import annotations

from .. import backend
from ..autograd import Function, Tensor
from ..kernels import dispatch
from ..window import ceil_mode_pads, effective_kernel, int_pair, output_hw, pad2d, resolve_padding, tap_slice
from .shape import reshape
from .fast_path import FastPath


class MaxPool2d(Function):
    # x (N,C,H,W) -> xpad (N,C,Hp,Wp), padded with -inf -> y (N,C,OH,OW), and
    # argmax (N,C,OH,OW): the winning tap kh*KW + kw within each window.
    # With return_indices, a second output (N,C,OH,OW) int64: the winner's h*W + w.
    def __init__(self, kernel: tuple, stride: tuple, pads: tuple, dilation: tuple = (1, 1),
                 return_indices: bool = False):
        self.kernel, self.stride, self.pads = kernel, stride, pads
        self.dilation, self.return_indices = dilation, return_indices

    def forward(self, x):
        xp = backend.get_array_module(x)
        (kh_size, kw_size), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        oh, ow = output_hw("max_pool2d", x.shape[2:], self.kernel, self.stride, self.pads, self.dilation)
        lowest = -xp.inf if x.dtype.kind == "f" else xp.iinfo(x.dtype).min
        xpad = pad2d(x, self.pads, lowest)
        y = argmax = None
        for kh in range(kh_size):
            for kw in range(kw_size):
                candidate = xpad[:, :, tap_slice(kh * dh, sh, oh), tap_slice(kw * dw, sw, ow)]
                if y is None:   # the first tap starts the running maximum
                    y, argmax = candidate.copy(), xp.zeros(candidate.shape, dtype=xp.int32)
                    continue
                better = candidate > y    # strictly larger: on a tie the earlier tap keeps the gradient
                argmax = xp.where(better, kh * kw_size + kw, argmax)
                y = xp.maximum(y, candidate)   # a NaN wins (NumPy's maximum propagates it) but moves no argmax
        self.x_shape, self.argmax = x.shape, argmax
        y = xp.ascontiguousarray(y)
        return (y, self.flat_indices(argmax, x.shape)) if self.return_indices else y

    def flat_indices(self, argmax, x_shape):
        """PyTorch's indices: the winning tap (kh, kw) of output (oh, ow) sits at row
        oh*SH + kh*DH - top, column ow*SW + kw*DW - left of the input plane: h*W + w.

        Shapes: argmax (N,C,OH,OW) -> indices (N,C,OH,OW) int64.
        """
        xp = backend.get_array_module(argmax)
        (kw_size, (sh, sw), (dh, dw)) = self.kernel[1], self.stride, self.dilation
        (top, _), (left, _) = self.pads
        oh, ow = argmax.shape[2:]
        tap = argmax.astype(xp.int64)
        rows = xp.arange(oh, dtype=xp.int64).reshape(-1, 1) * sh + (tap // kw_size) * dh - top
        cols = xp.arange(ow, dtype=xp.int64) * sw + (tap % kw_size) * dw - left
        return rows * x_shape[3] + cols

    def backward(self, gy, *_):   # with return_indices, the indices' gradient comes too: ignored
        xp = backend.get_array_module(gy)
        (kh_size, kw_size), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        (top, bottom), (left, right) = self.pads
        n, c, h, w = self.x_shape
        oh, ow = gy.shape[2:]
        gxpad = xp.zeros((n, c, top + h + bottom, left + w + right), dtype=gy.dtype)
        for kh in range(kh_size):
            for kw in range(kw_size):
                # Outputs whose maximum sat at this tap send their gradient there.
                mine = self.argmax == kh * kw_size + kw
                gxpad[:, :, tap_slice(kh * dh, sh, oh), tap_slice(kw * dw, sw, ow)] += gy * mine
        gx = xp.ascontiguousarray(gxpad[:, :, top:top + h, left:left + w])
        assert gx.shape == tuple(self.x_shape)
        return gx


def pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode) -> tuple:
    """max_pool2d's argument checks for a batch x: (kernel, stride, pads, dilation), ceil_mode in the pads.

    Raises:
        ValueError naming max_pool2d for anything ``max_pool2d``'s docstring lists.
    """
    x_shape = tuple(x.shape)
    if len(x_shape) != 4:
        raise ValueError(f"max_pool2d: expected x (N, C, H, W) or (C, H, W), got shape {x_shape}")
    if x.dtype.kind not in "fiu":
        raise ValueError(f"max_pool2d: expected float or integer values, got dtype {x.dtype}")
    kernel = int_pair("max_pool2d", "kernel_size", kernel_size)
    no_stride = stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0)
    stride = kernel if no_stride else int_pair("max_pool2d", "stride", stride)
    dilation = int_pair("max_pool2d", "dilation", dilation)
    pads = resolve_padding("max_pool2d", padding, x_shape[2:], kernel, stride, dilation)
    span = effective_kernel(kernel, dilation)
    if any(p >= k for (before, after), k in zip(pads, span) for p in (before, after)):
        what = "kernel" if span == kernel else "dilated kernel's span"
        raise ValueError(f"max_pool2d: padding {pads} must be smaller than the {what} {span} on every side")
    output_hw("max_pool2d", x_shape[2:], kernel, stride, pads, dilation)  # raises if the kernel does not fit
    if ceil_mode:
        pads = ceil_mode_pads(x_shape[2:], kernel, stride, pads, dilation)
    return kernel, stride, pads, dilation


def max_pool2d(x: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False):
    """Max over each KH x KW window of each channel.

    Args:
        x: input Tensor (or array), (N, C, H, W), or (C, H, W) for one image; float or
            integer values.
        kernel_size: int or (KH, KW).
        stride: int or (SH, SW); None (or an empty tuple) means kernel_size
            (non-overlapping windows). A stride below the kernel size gives AlexNet's
            overlapping pooling.
        padding: as conv2d: int, (ph, pw), ((top, bottom), (left, right)), "valid"
            or "same" (TensorFlow's rule). Padded pixels are -inf, so they never win.
        dilation: int or (DH, DW), the distance between the taps of a window.
        ceil_mode: count the last window even where it hangs off the end (PyTorch's
            rule: a window must start inside the input or its leading padding).
        return_indices: also return PyTorch's indices, the flat position h*W + w of
            each window's maximum in its (H, W) plane.
    Returns:
        y Tensor, or (y, indices) with return_indices (indices: an int64 Tensor
        without gradient).

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW), OH = (H + top + bottom - DH*(KH-1) - 1) // SH + 1
    (rounded up with ceil_mode); x (C, H, W) -> y (C, OH, OW). N may be 0.

    Differences from PyTorch, on purpose: padding may be asymmetric, "valid" or "same",
    and up to the kernel size less one (PyTorch allows half the kernel). A window whose
    taps all fall on padding (possible with dilation) gives -inf, as in PyTorch, but
    minidl sends its gradient nowhere and its index points outside the plane, where
    PyTorch picks some pixel of the input for both.
    Raises:
        ValueError for a wrong rank or dtype, a non-positive kernel, stride or
        dilation, padding as large as the (dilated) kernel, or a kernel larger than
        the padded input.
    """
    x_shape = tuple(x.shape)
    if len(x_shape) == 3:   # one image: a batch of one, and back
        out = max_pool2d(reshape(x, (1,) + x_shape), kernel_size, stride, padding, dilation, ceil_mode,
                         return_indices)
        if return_indices:
            return reshape(out[0], out[0].shape[1:]), Tensor(out[1].data[0])
        return reshape(out, out.shape[1:])
    kernel, stride, pads, dilation = pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    return_indices = bool(return_indices)
    fast = dispatch.max_pool2d(x.data if isinstance(x, Tensor) else x, kernel, stride, pads, dilation, return_indices)
    if fast is not None:
        return FastPath("MaxPool2d", fast)(x)
    out = MaxPool2d(kernel, stride, pads, dilation, return_indices)(x)
    if return_indices:   # indices carry no gradient: a fresh leaf, cut off from the graph
        return out[0], Tensor(out[1].data)
    return out
