"""Transposed 2-D convolution ("deconvolution"): the convolution's input gradient, used as a layer.

A convolution with stride S maps an image to a smaller one; its transpose maps back,
spreading every input pixel over a KH x KW patch of the output, patches S apart,
overlapping patches adding up. It is the learnable upsampling of decoders, GANs'
generators and segmentation heads. Written with the convolution's own pieces
(``conv.py``): with weight (C_in, C_out/G, KH, KW),

    forward   y   = col2im(W^T @ x)            (the conv's backward to its input)
    backward  gx  = W @ im2col(gy)             (the conv's forward)
              gW  = x @ im2col(gy)^T           (the conv's weight gradient, roles swapped)

so a transposed convolution is exactly the adjoint of ``conv2d`` with the same weight,
stride, padding, dilation and groups: <conv2d(a, W), b> = <a, conv_transpose2d(b, W)>.

Output size per axis (PyTorch's): OH = (H - 1) SH - 2 PH + DH (KH - 1) + OPH + 1.
``output_padding`` (OPH < SH or < DH) adds rows and columns at the bottom and right,
choosing among the sizes that a strided convolution maps to the same H. No fast path.
"""
from __future__ import annotations

import numbers

from .. import backend
from ..autograd import Function, Tensor
from ..window import int_pair, output_hw
from .conv import col2im, im2col


class ConvTranspose2d(Function):
    # x (N, Cin, H, W), weight (Cin, Cout/G, KH, KW) = (G, Cin/G, Cout/G*KH*KW)
    # -> x_mat (G, Cin/G, N*H*W) -> col = W^T @ x_mat (G, Cout/G*KH*KW, N*H*W) = (Cout, KH, KW, N, H, W)
    # -> col2im -> y (N, Cout, OH, OW), plus bias (Cout,)
    def __init__(self, stride: tuple, pads: tuple, output_hw: tuple, groups: int, dilation: tuple):
        self.stride, self.pads, self.out_hw, self.groups, self.dilation = stride, pads, output_hw, groups, dilation

    def forward(self, x, weight, bias=None):
        xp = backend.get_array_module(x)
        n, c_in, h, w = x.shape
        g, kernel = self.groups, weight.shape[2:]
        c_out = weight.shape[1] * g
        x_mat = xp.ascontiguousarray(x.transpose(1, 0, 2, 3)).reshape(g, c_in // g, n * h * w)
        w_mat = weight.reshape(g, c_in // g, -1)                                  # (G, Cin/G, Cout/G*KH*KW)
        col = xp.matmul(w_mat.transpose(0, 2, 1), x_mat).reshape((c_out,) + kernel + (n, h, w))
        y = col2im(col, (n, c_out) + self.out_hw, self.stride, self.pads, self.dilation)
        if bias is not None:
            y += bias.reshape(1, c_out, 1, 1)
        self.save_for_backward(x, weight)
        return y

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        x, weight = self.saved_arrays
        n, c_in, h, w = x.shape
        g, kernel = self.groups, weight.shape[2:]
        c_out = gy.shape[1]
        # the windows of gy that the forward's patches came from: exactly H x W of them
        col = im2col(gy, kernel, self.stride, self.pads, self.dilation)[..., :h, :w]
        col = xp.ascontiguousarray(col).reshape(g, c_out // g * kernel[0] * kernel[1], n * h * w)
        needs = self.needs_input_grad
        gx = gw = gb = None
        if needs[0]:   # gx = W @ im2col(gy), per group
            gx_t = xp.matmul(weight.reshape(g, c_in // g, -1), col).reshape(c_in, n, h, w)
            gx = xp.ascontiguousarray(gx_t.transpose(1, 0, 2, 3))
        if needs[1]:   # gW = x @ im2col(gy)^T, per group
            x_mat = xp.ascontiguousarray(x.transpose(1, 0, 2, 3)).reshape(g, c_in // g, n * h * w)
            gw = xp.matmul(x_mat, col.transpose(0, 2, 1)).reshape(weight.shape)
        if len(needs) == 3 and needs[2]:
            gb = gy.sum(axis=(0, 2, 3))
        assert gx is None or gx.shape == x.shape
        assert gw is None or gw.shape == weight.shape
        assert gb is None or gb.shape == (c_out,)
        return (gx, gw) if len(needs) == 2 else (gx, gw, gb)


def transposed_output_hw(in_hw, kernel, stride, padding, output_padding, dilation) -> tuple:
    """(OH, OW): per axis (in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1."""
    return tuple((n - 1) * s - 2 * p + d * (k - 1) + e + 1
                 for n, k, s, p, e, d in zip(in_hw, kernel, stride, padding, output_padding, dilation))


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups: int = 1,
                     dilation=1) -> Tensor:
    """Transposed convolution, as ``torch.nn.functional.conv_transpose2d`` (same argument order).

    Args:
        input: Tensor (N, C_in, H, W).
        weight: Tensor (C_in, C_out/groups, KH, KW) (the convolution's layout, in and out swapped).
        bias: Tensor (C_out,) or None.
        stride, dilation: int or (h, w), >= 1.
        padding: int or (h, w): removed from both sides of the full output.
        output_padding: int or (h, w): extra rows/columns at the bottom/right; each
            smaller than the stride or the dilation along its axis.
        groups: C_in and C_out split into independent groups.
    Returns:
        y Tensor (N, C_out, OH, OW), OH = (H - 1) SH - 2 PH + DH (KH - 1) + OPH + 1.
    Raises:
        ValueError naming conv_transpose2d for mismatched shapes or settings.
    """
    fn = "conv_transpose2d"
    if input.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"{fn}: expected input (N, C_in, H, W) and weight (C_in, C_out/groups, KH, KW), "
                         f"got {tuple(input.shape)} and {tuple(weight.shape)}")
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1 \
            or input.shape[1] != weight.shape[0] or weight.shape[0] % groups:
        raise ValueError(f"{fn}: input has {input.shape[1]} channels, weight {tuple(weight.shape)} expects "
                         f"{weight.shape[0]}, which groups={groups!r} must divide")
    if bias is not None and tuple(bias.shape) != (weight.shape[1] * groups,):
        raise ValueError(f"{fn}: bias must have shape ({weight.shape[1] * groups},), got {tuple(bias.shape)}")
    stride, dilation = int_pair(fn, "stride", stride), int_pair(fn, "dilation", dilation)
    padding, extra = int_pair(fn, "padding", padding, 0), int_pair(fn, "output_padding", output_padding, 0)
    for axis, (s, d, e) in enumerate(zip(stride, dilation, extra)):
        if e >= max(s, d):
            raise ValueError(f"{fn}: output_padding must be smaller than the stride or the dilation, got "
                             f"{extra[axis]} with stride {s} and dilation {d}")
    kernel = tuple(weight.shape[2:])
    out = transposed_output_hw(input.shape[2:], kernel, stride, padding, extra, dilation)
    if min(out) < 1:
        raise ValueError(f"{fn}: the output would be {out[0]} x {out[1]} for input {tuple(input.shape)}: "
                         "too much padding")
    pads = tuple((p, p) for p in padding)
    output_hw(fn, out, kernel, stride, pads, dilation)   # the convolution it transposes must exist too
    inputs = (input, weight) if bias is None else (input, weight, bias)
    return ConvTranspose2d(stride, pads, out, int(groups), dilation)(*inputs)
