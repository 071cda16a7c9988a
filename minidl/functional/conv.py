"""2-D convolution (cross-correlation, like every deep learning library), by im2col and one matrix product.

A convolution slides a KH x KW window over the padded image and takes, at every
position, the dot product of the window with each filter:

    y[n, o, oh, ow] = sum_{c, kh, kw} W[o, c, kh, kw] * xpad[n, c, oh*SH + kh, ow*SW + kw] + b[o]

im2col copies every window into a column of one matrix, so that the whole sum is a
single matrix product, which BLAS (or cuBLAS) runs near the machine's peak:

    y (O, N*OH*OW) = W (O, C*KH*KW) @ col (C*KH*KW, N*OH*OW)

Neither direction ever loops over pixels. For a fixed kernel tap (kh, kw), the pixels
the window reads over all output positions form one strided slice of the padded
image, ``xpad[..., kh::SH, kw::SW]`` cut to OH x OW (``window.tap_slice``), so im2col
is KH*KW slice copies. Backward is two more products with the same matrices, the
weight gradient gW = gy @ col^T and the column gradient gcol = W^T @ gy, and col2im,
the adjoint of im2col, which adds every column back onto the pixels it was copied
from (pixels in several windows collect the sum of their columns: exactly the
gradient of the copy).

Groups (AlexNet's two "streams"): filter o sees only the C/G input channels of its
group, so col splits as (G, C/G*KH*KW, N*OH*OW), W as (G, O/G, C/G*KH*KW), and the
product is one batched matmul over the G groups.

Dilation (DH, DW) spreads the taps apart: tap (kh, kw) reads xpad[..., oh*SH + kh*DH,
ow*SW + kw*DW], so im2col and col2im take the slice at offset kh*DH instead of kh and
nothing else changes.

This module is the reference implementation. ``conv2d`` asks ``minidl.kernels.dispatch``
for a fast path first (Winograd or channels-last im2col on the CPU, im2col with raw
CUDA copies on a GPU); each one computes what ``Conv2d`` below computes, and the tests
hold them to it.
"""
from __future__ import annotations

import os

from .. import backend
from ..autograd import Function, Tensor
from ..kernels import dispatch
from ..window import int_pair, output_hw, pad2d, resolve_padding, tap_slice
from .shape import reshape
from .fast_path import FastPath


def im2col(x, kernel: tuple, stride: tuple, pads: tuple, dilation: tuple = (1, 1)):
    """Copy every window of ``x`` into the columns of one array.

    Args:
        x: images; kernel, stride: (KH, KW), (SH, SW); pads: ((top, bottom), (left, right)), zeros;
        dilation: (DH, DW), the distance between taps.
    Returns:
        col with col[c, kh, kw, n, oh, ow] = xpad[n, c, oh*SH + kh*DH, ow*SW + kw*DW].

    Shapes: x (N,C,H,W) -> xpad (C,N,Hp,Wp) -> col (C,KH,KW,N,OH,OW). Read as a matrix,
    col is (C*KH*KW, N*OH*OW): one row per weight element, one column per output pixel.
    """
    xp = backend.get_array_module(x)
    n, c = x.shape[:2]
    (kh_size, kw_size), (sh, sw), (dh, dw) = kernel, stride, dilation
    oh, ow = output_hw("im2col", x.shape[2:], kernel, stride, pads, dilation)
    xpad = pad2d(x.transpose(1, 0, 2, 3), pads)   # channels first: each tap's pixels land as col[:, kh, kw]
    col = xp.empty((c, kh_size, kw_size, n, oh, ow), dtype=x.dtype)
    for kh in range(kh_size):
        for kw in range(kw_size):
            col[:, kh, kw] = xpad[:, :, tap_slice(kh * dh, sh, oh), tap_slice(kw * dw, sw, ow)]
    return col


def col2im(col, x_shape: tuple, stride: tuple, pads: tuple, dilation: tuple = (1, 1)):
    """The adjoint of im2col: add every column back onto the pixel it was copied from.

    Within one tap the slice's pixels are distinct, so each tap is one vectorised add;
    where windows overlap, the adds of successive taps accumulate.

    Shapes: col (C,KH,KW,N,OH,OW) -> gxpad (C,N,Hp,Wp) -> gx x_shape (N,C,H,W), contiguous.
    """
    xp = backend.get_array_module(col)
    c, kh_size, kw_size, n, oh, ow = col.shape
    (sh, sw), (dh, dw), ((top, bottom), (left, right)) = stride, dilation, pads
    h, w = x_shape[2:]
    gxpad = xp.zeros((c, n, top + h + bottom, left + w + right), dtype=col.dtype)
    for kh in range(kh_size):
        for kw in range(kw_size):
            gxpad[:, :, tap_slice(kh * dh, sh, oh), tap_slice(kw * dw, sw, ow)] += col[:, kh, kw]
    gx = xp.ascontiguousarray(gxpad[:, :, top:top + h, left:left + w].transpose(1, 0, 2, 3))
    assert gx.shape == tuple(x_shape)
    return gx


class Conv2d(Function):
    # x (N,C,H,W) -> col (C,KH,KW,N,OH,OW) = (G, C/G*KH*KW, N*OH*OW)
    # weight (O,C/G,KH,KW) = (G, O/G, C/G*KH*KW)
    # y_t = weight_g @ col_g: (G, O/G, N*OH*OW) = (O,N,OH,OW) -> y (N,O,OH,OW)
    def __init__(self, kernel: tuple, stride: tuple, pads: tuple, groups: int, dilation: tuple = (1, 1)):
        self.kernel, self.stride, self.pads, self.groups, self.dilation = kernel, stride, pads, groups, dilation

    def forward(self, x, weight, bias=None):
        xp = backend.get_array_module(x)
        n, o, g = x.shape[0], weight.shape[0], self.groups
        oh, ow = output_hw("conv2d", x.shape[2:], self.kernel, self.stride, self.pads, self.dilation)
        rows = weight[0].size   # C/G*KH*KW (sizes spelled out: with N = 0 a -1 could not be inferred)
        col = im2col(x, self.kernel, self.stride, self.pads, self.dilation).reshape(g, rows, n * oh * ow)
        w_mat = weight.reshape(g, o // g, rows)
        y_t = xp.matmul(w_mat, col)                       # one product per group, rows = output channels
        y = xp.ascontiguousarray(y_t.reshape(o, n, oh, ow).transpose(1, 0, 2, 3))
        if bias is not None:
            y += bias.reshape(1, o, 1, 1)
        self.save_for_backward(x, weight, col)
        return y

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        x, weight, col = self.saved_arrays
        need_x, need_w = self.needs_input_grad[:2]
        need_b = len(self.needs_input_grad) == 3 and self.needs_input_grad[2]
        o, g, pixels = weight.shape[0], self.groups, col.shape[2]
        gy_mat = xp.ascontiguousarray(gy.transpose(1, 0, 2, 3)).reshape(g, o // g, pixels)   # (G, O/G, N*OH*OW)
        gw = gx = gb = None
        if need_w:   # gW = gy @ col^T, per group
            gw = xp.matmul(gy_mat, col.transpose(0, 2, 1)).reshape(weight.shape)
        if need_x:   # gcol = W^T @ gy, per group, folded back onto the image
            gcol = xp.matmul(weight.reshape(g, o // g, col.shape[1]).transpose(0, 2, 1), gy_mat)
            gcol = gcol.reshape((x.shape[1],) + self.kernel + (x.shape[0],) + gy.shape[2:])
            gx = col2im(gcol, x.shape, self.stride, self.pads, self.dilation)
        if need_b:
            gb = gy.sum(axis=(0, 2, 3))
        assert gx is None or gx.shape == x.shape
        assert gw is None or gw.shape == weight.shape
        assert gb is None or gb.shape == (o,)
        return (gx, gw) if len(self.needs_input_grad) == 2 else (gx, gw, gb)


def conv_geometry(x, weight, bias, stride, padding, groups, dilation) -> tuple:
    """conv2d's argument checks for a batch x: (kernel, stride, pads, dilation, out_hw), each as pairs.

    Raises:
        ValueError naming conv2d for anything ``conv2d``'s docstring lists.
    """
    x_shape, w_shape = tuple(x.shape), tuple(weight.shape)
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"conv2d: expected x (N, C, H, W) or (C, H, W) and weight (O, C/groups, KH, KW), "
                         f"got x {x_shape} and weight {w_shape}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    c, o = x_shape[1], w_shape[0]
    if c % groups or o % groups:
        raise ValueError(f"conv2d: groups={groups} must divide both input channels ({c}) and "
                         f"output channels ({o}); x {x_shape}, weight {w_shape}")
    if w_shape[1] != c // groups:
        raise ValueError(f"conv2d: weight {w_shape} expects {w_shape[1]} input channels per group, "
                         f"but x {x_shape} with groups={groups} has {c // groups}")
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"conv2d: bias must have shape ({o},) for weight {w_shape}, got {tuple(bias.shape)}")
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        raise ValueError(f"conv2d: x, weight and bias must share one dtype, got x {x.dtype}, "
                         f"weight {weight.dtype}" + (f", bias {bias.dtype}" if bias is not None else ""))
    kernel = w_shape[2:]
    if min(kernel) < 1:
        raise ValueError(f"conv2d: kernel size must be positive, got weight {w_shape}")
    stride = int_pair("conv2d", "stride", stride)
    dilation = int_pair("conv2d", "dilation", dilation)
    pads = resolve_padding("conv2d", padding, x_shape[2:], kernel, stride, dilation)
    out_hw = output_hw("conv2d", x_shape[2:], kernel, stride, pads, dilation)  # raises if the kernel does not fit
    return tuple(kernel), stride, pads, dilation, out_hw


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
           groups: int = 1, algorithm: str | None = None, *, dilation=1) -> Tensor:
    """2-D convolution (cross-correlation) of a batch of images, or of one image.

    Args:
        x: input Tensor (or array), (N, C, H, W), or (C, H, W) for one image (PyTorch's
            unbatched input).
        weight: filters; with groups, filter o sees only input channels of its group.
        bias: optional per-output-channel offset.
        stride: int or (SH, SW).
        padding: int, (ph, pw), ((top, bottom), (left, right)), "valid", or "same"
            (TensorFlow's rule: output = ceil(in / stride), the odd pixel of total
            padding at the bottom/right). Padding is zeros.
        groups: split input and output channels into this many independent groups
            (AlexNet's two "streams" are groups=2).
        algorithm: None or "auto" lets ``minidl.kernels.dispatch`` choose (its table
            has the rule); "reference" runs ``Conv2d`` above; "im2col" the device's fast
            im2col; "winograd", "winograd_2x2" or "winograd_4x4" Winograd's minimal
            filtering (stride 1, 3x3 or 5x5). None reads ``MINIDL_CONV_ALGORITHM``
            (default "auto"). minidl's own argument; PyTorch has none.
        dilation: int or (DH, DW), the distance between kernel taps (keyword only).
            Dilated convolutions run the reference.
    Returns:
        y Tensor. On the CPU's fast paths its memory is channels-last
        (``minidl/kernels/cpu/layout.py``); its shape and values are those of NCHW.

    Shapes: x (N, C, H, W), weight (O, C/groups, KH, KW), bias (O,) -> y (N, O, OH, OW)
    with OH = (H + top + bottom - DH*(KH-1) - 1) // SH + 1, likewise OW; x (C, H, W)
    -> y (O, OH, OW). N may be 0.

    Differences from PyTorch, on purpose: the sixth positional argument is ``groups``
    (PyTorch's is ``dilation``, here keyword only), and padding="same" works for any
    stride with TensorFlow's rule, where PyTorch allows it at stride 1 only. At stride 1
    the two rules agree, dilated or not: total padding DH*(KH-1), the odd pixel at the
    bottom/right.
    Raises:
        ValueError for wrong ranks, channel/group mismatches, bad stride/padding/dilation,
        a kernel larger than the padded input, or an algorithm that cannot run this conv.
    """
    x_shape, w_shape = tuple(x.shape), tuple(weight.shape)
    if len(x_shape) == 3 and len(w_shape) == 4:   # one image: a batch of one, and back
        y = conv2d(reshape(x, (1,) + x_shape), weight, bias, stride, padding, groups, algorithm, dilation=dilation)
        return reshape(y, y.shape[1:])
    kernel, stride, pads, dilation, out_hw = conv_geometry(x, weight, bias, stride, padding, groups, dilation)
    if algorithm is None:
        algorithm = os.environ.get("MINIDL_CONV_ALGORITHM", "auto").strip() or "auto"
    data = x.data if isinstance(x, Tensor) else x
    fast = dispatch.conv2d(data, kernel, stride, pads, groups, out_hw, algorithm, dilation)
    fn = Conv2d(kernel, stride, pads, groups, dilation) if fast is None else FastPath("Conv2d", fast)
    return fn(x, weight) if bias is None else fn(x, weight, bias)
