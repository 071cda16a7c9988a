"""The pooling layers beside MaxPool2d: average pooling and adaptive average and max pooling.

Thin modules over ``minidl.functional``, with PyTorch's names and constructor signatures.
None has parameters or buffers, so their state_dicts are empty, as PyTorch's are; each
answers ``shape_info(shape)`` like the layers in ``layers.py``.
"""
from __future__ import annotations

import numbers

from .. import functional as F
from ..window import check_padding, int_pair, pool_window_output
from .layers import _spatial
from .module import Module


def _pool_padding(name: str, padding, kernel: tuple):
    """``padding`` checked as ``check_padding`` does, and at most half the kernel (PyTorch's rule)."""
    pads = check_padding(name, padding)
    if not isinstance(pads, str) and any(2 * p > k for side, k in zip(pads, kernel) for p in side):
        raise ValueError(f"{name}: padding {padding!r} must be at most half the kernel {kernel} on every side")
    return pads


class AvgPool2d(Module):
    """Average pooling over KH x KW windows, as ``torch.nn.AvgPool2d`` (see ``F.avg_pool2d``).

    Args:
        kernel_size: int or (h, w); stride defaults to kernel_size.
        padding: zeros around the input, as Conv2d's (at most half the kernel per side).
        ceil_mode, count_include_pad, divisor_override: as ``F.avg_pool2d``.

    Shapes: (N, C, H, W) -> (N, C, OH, OW); (C, H, W) -> (C, OH, OW).
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        self.kernel_size = int_pair("AvgPool2d", "kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else int_pair("AvgPool2d", "stride", stride)
        self.padding = _pool_padding("AvgPool2d", padding, self.kernel_size)
        self._padding_arg = padding
        self.ceil_mode, self.count_include_pad = bool(ceil_mode), bool(count_include_pad)
        self.divisor_override = divisor_override

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self._padding_arg, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def shape_info(self, shape):
        c, h, w = _spatial(shape, "AvgPool2d")
        (oh, ow), formula = pool_window_output("AvgPool2d", (h, w), self.kernel_size, self.stride, self.padding,
                                               self.ceil_mode)
        return (c, oh, ow), formula

    def extra_repr(self):
        text = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self._padding_arg!r}"
        if self.ceil_mode:
            text += ", ceil_mode=True"
        if not self.count_include_pad:
            text += ", count_include_pad=False"
        if self.divisor_override is not None:
            text += f", divisor_override={self.divisor_override}"
        return text


class _AdaptivePool2d(Module):
    """Shared by the adaptive pools: the output size is fixed, the windows follow the input."""

    def __init__(self, output_size):
        super().__init__()
        pair = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
        positive = [v is None or (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0) for v in pair]
        if len(pair) != 2 or not all(positive):
            raise ValueError(f"{type(self).__name__}: output_size must be a positive int or a pair of positive "
                             f"ints or None, got {output_size!r}")
        self.output_size = output_size

    def shape_info(self, shape):
        c, h, w = _spatial(shape, type(self).__name__)
        pair = self.output_size if isinstance(self.output_size, (tuple, list)) else (self.output_size,) * 2
        oh, ow = (n if v is None else v for v, n in zip(pair, (h, w)))
        return (c, oh, ow), f"adaptive {h}x{w} -> {oh}x{ow}"

    def extra_repr(self):
        return f"output_size={self.output_size!r}"


class AdaptiveAvgPool2d(_AdaptivePool2d):
    """The mean over adaptive windows, as ``torch.nn.AdaptiveAvgPool2d`` (see ``F.adaptive_avg_pool2d``).

    Args:
        output_size: int or (OH, OW), an entry None keeping the input's size; 1 is global average pooling.

    Shapes: (N, C, H, W) -> (N, C, OH, OW); (C, H, W) -> (C, OH, OW).
    """

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)


class AdaptiveMaxPool2d(_AdaptivePool2d):
    """The maximum over adaptive windows, as ``torch.nn.AdaptiveMaxPool2d`` (see ``F.adaptive_max_pool2d``).

    Args:
        output_size: as AdaptiveAvgPool2d.
        return_indices: the forward returns (y, indices) instead of y.

    Shapes: (N, C, H, W) -> (N, C, OH, OW); (C, H, W) -> (C, OH, OW).
    """

    def __init__(self, output_size, return_indices=False):
        super().__init__(output_size)
        self.return_indices = bool(return_indices)

    def forward(self, x):
        return F.adaptive_max_pool2d(x, self.output_size, self.return_indices)

    def extra_repr(self):
        return super().extra_repr() + (", return_indices=True" if self.return_indices else "")
