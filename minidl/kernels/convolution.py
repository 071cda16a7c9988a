"""What every fast convolution shares: the backward's bookkeeping and the correlation rule.

The fast convolutions (channels-last im2col and Winograd on the CPU, im2col with raw
CUDA copies on a GPU) compute the same three gradients as the reference in
``minidl.functional.conv``, each its own way; the bookkeeping around them (which
gradients are wanted, their shapes, the tuple backward returns) is written once here.
"""
from __future__ import annotations

from .. import backend


class ConvolutionKernel:
    """Base of the fast convolutions: raw arrays in and out, one instance per call.

    A subclass implements ``forward(x, weight, bias=None) -> y``, which sets
    ``self.x_shape`` and ``self.w_shape`` and keeps what backward needs, and
    ``gradients(gy, need_x, need_w, need_b) -> (gx, gw, gb)`` (None for what is not
    wanted). ``minidl.functional.fast_path.FastPath`` runs it as a Function.

    Args:
        kernel, stride: (KH, KW), (SH, SW).
        pads: ((top, bottom), (left, right)).
        groups: channel groups.
        relu: apply max(y, 0) in the output pass, while each slice of y is in cache
            (inference: ``minidl.functional.fused.conv2d_relu``; there is no backward then).
        residual: None, or an array of y's shape added in the output pass, before the ReLU
            (inference: a residual block's shortcut, ``functional.fused.conv2d_inference``).
    """

    algorithm = "im2col"   # what minidl.viz shows for the call

    def __init__(self, kernel: tuple, stride: tuple, pads: tuple, groups: int, relu: bool = False, residual=None):
        self.kernel, self.stride, self.pads, self.groups = tuple(kernel), tuple(stride), pads, groups
        self.relu, self.residual = relu, residual

    def finish_slice(self, y, part, residual) -> None:
        """The output pass's fused steps on the slice ``part`` of y, in place: + residual[part], then the ReLU.

        ``residual`` is None or the residual seen in y's memory layout.
        """
        y_part = y[part]
        if residual is not None:
            y_part += residual[part]
        if self.relu:
            backend.get_array_module(y_part).maximum(y_part, 0, out=y_part)

    def forward(self, x, weight, bias=None):
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def gradients(self, gy, need_x: bool, need_w: bool, need_b: bool) -> tuple:
        raise NotImplementedError(f"{type(self).__name__} must implement gradients")

    def backward(self, gy, needs: tuple) -> tuple:
        """(gx, gw) or (gx, gw, gb), matching forward's inputs; None where not wanted."""
        assert not self.relu and self.residual is None, \
            "a convolution with its ReLU or residual fused in is for inference: it has no backward"
        need_x, need_w = needs[:2]
        need_b = len(needs) == 3 and needs[2]
        gx, gw, gb = self.gradients(gy, need_x, need_w, need_b)
        assert gx is None or gx.shape == tuple(self.x_shape)
        assert gw is None or gw.shape == tuple(self.w_shape)
        assert gb is None or gb.shape == (self.w_shape[0],)
        return (gx, gw) if len(needs) == 2 else (gx, gw, gb)


def input_grad_by_correlation(kernel: tuple, stride: tuple, pads: tuple, x_shape: tuple, gy_shape: tuple) -> bool:
    """Whether gx should be computed as a correlation of gy with the flipped weights.

    It can be at stride 1 with padding below the kernel on every side
    (``window.transposed_padding``): then gx's columns are one strided copy of gy,
    where col2im needs KH*KW read-modify-write passes over the image. It pays when
    gy's columns, O*KH*KW*H*W values per image, are no larger than x's, C*KH*KW*OH*OW;
    when O is much larger than C the bigger copy costs more than col2im saves.
    """
    (top, bottom), (left, right) = pads
    kh, kw = kernel
    fits = tuple(stride) == (1, 1) and max(top, bottom) < kh and max(left, right) < kw
    o, c = gy_shape[1], x_shape[1]
    return fits and o * x_shape[2] * x_shape[3] <= c * gy_shape[2] * gy_shape[3]
