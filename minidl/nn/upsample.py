"""Upsample and its two fixed-mode forms, as PyTorch's layers over ``F.interpolate``.

No parameters or buffers (empty state_dicts, as PyTorch's). Shapes: (N, C, H, W) ->
(N, C, OH, OW).
"""
from __future__ import annotations

from .. import functional as F
from ..functional.interpolation import resized_hw
from .module import Module


class Upsample(Module):
    """Resize feature maps to ``size`` or by ``scale_factor``, as ``torch.nn.Upsample``.

    Args:
        size: (OH, OW) or one int; or scale_factor instead.
        scale_factor: a number or (sH, sW) (stored as floats, as PyTorch's).
        mode: "nearest", "nearest-exact", "bilinear" or "area" (see ``F.interpolate``).
        align_corners: bilinear only.
        recompute_scale_factor: as ``F.interpolate``'s.
    """

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        self.size = size
        if isinstance(scale_factor, (tuple, list)):
            scale_factor = tuple(float(s) for s in scale_factor)
        elif scale_factor is not None:
            scale_factor = float(scale_factor)
        self.scale_factor, self.mode, self.align_corners = scale_factor, mode, align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, x):
        return F.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners,
                             self.recompute_scale_factor)

    def shape_info(self, shape):
        c, h, w = shape
        (oh, ow), _ = resized_hw((h, w), self.size, self.scale_factor, "Upsample")
        return (c, int(oh), int(ow)), ""

    def extra_repr(self):
        what = f"scale_factor={self.scale_factor!r}" if self.size is None else f"size={self.size!r}"
        return f"{what}, mode={self.mode!r}"


class UpsamplingNearest2d(Upsample):
    """``Upsample`` with mode "nearest" (PyTorch's UpsamplingNearest2d)."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    """``Upsample`` with mode "bilinear" and align_corners=True (PyTorch's UpsamplingBilinear2d)."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)
