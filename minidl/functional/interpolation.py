"""Resizing feature maps: ``interpolate`` (nearest, nearest-exact, bilinear, area), as PyTorch's.

Every mode but "area" is a linear map of each row and each column separately, so it
is two small matrices:

    y (N, C, OH, OW) = Rh (OH, H) @ x (N, C, H, W) @ Rw(OW, W)^T
    backward: gx = Rh^T @ gy @ Rw

Row o of R holds the weights output position o takes from the input positions:
nearest picks one input (a single 1), bilinear blends the two neighbours of its
source coordinate (weights 1 - f and f). Where the source coordinate of output o
lies is the whole difference between the modes (PyTorch's conventions, s = in / out,
or 1 / scale_factor when one is given):

    nearest        floor(o * s)                      (the top-left input of o's cell)
    nearest-exact  floor((o + 0.5) * s)              (the input under o's centre)
    bilinear       (o + 0.5) * s - 0.5, at least 0   (centres aligned: align_corners=False)
                   o * (in - 1) / (out - 1)          (corners aligned: align_corners=True)

"area" averages each output cell's inputs: ``adaptive_avg_pool2d``. The matrices are
dense (OH x H and OW x W), which is small next to the feature maps themselves; no
fast path.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from .adaptive_pooling import adaptive_avg_pool2d

MODES = ("nearest", "nearest-exact", "bilinear", "area")


def interpolation_matrix(out_size: int, in_size: int, mode: str, align_corners: bool, scale=None) -> np.ndarray:
    """R (out_size, in_size), float64: row o holds the weights of output o on the inputs.

    ``scale`` is the user's scale_factor along this axis (None: sizes only), which
    PyTorch uses for the coordinates when it is given.
    """
    r = np.zeros((out_size, in_size))
    o = np.arange(out_size)
    if mode in ("nearest", "nearest-exact"):
        # float32 arithmetic, as PyTorch's kernels compute these indices
        s = np.float32(1.0 / scale) if scale else np.float32(in_size) / np.float32(out_size)
        position = o.astype(np.float32) + (np.float32(0.5) if mode == "nearest-exact" else np.float32(0))
        source = np.minimum(np.floor(position * s).astype(np.int64), in_size - 1)
        r[o, source] = 1.0
        return r
    if align_corners:
        source = o * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    else:
        s = 1.0 / scale if scale else in_size / out_size
        source = np.maximum((o + 0.5) * s - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    frac = source - low
    np.add.at(r, (o, low), 1.0 - frac)
    np.add.at(r, (o, high), frac)      # at the last input high == low: the weights add to 1
    return r


class Resize2d(Function):
    # x (N, C, H, W) -> y = Rh @ x @ Rw^T (N, C, OH, OW); Rh (OH, H) and Rw (OW, W) on x's device.
    def __init__(self, rows, cols):
        self.rows, self.cols = rows, cols

    def forward(self, x):
        xp = backend.get_array_module(x)
        self.rows, self.cols = (xp.asarray(backend.to_device(m, backend.device_of(x)), dtype=x.dtype)
                                for m in (self.rows, self.cols))
        return self.rows @ (x @ self.cols.T)

    def backward(self, gy):
        gx = self.rows.T @ (gy @ self.cols)
        assert gx.shape[:2] == gy.shape[:2] and gx.shape[2:] == (self.rows.shape[1], self.cols.shape[1])
        return gx


def _pair(fn: str, name: str, value, kind):
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{fn}: {name} must be a number or a pair of numbers for (H, W), got {value!r}")
    return values


def resized_hw(in_hw, size, scale_factor, fn: str = "interpolate"):
    """((OH, OW), (sH, sW)): the output size from ``size`` or ``scale_factor`` (OH = floor(H * sH)),
    and the scale factors as floats (None, None when the size is given). Arguments checked."""
    if size is not None:
        return _pair(fn, "size", size, numbers.Integral), (None, None)
    scales = tuple(float(s) for s in _pair(fn, "scale_factor", scale_factor, numbers.Real))
    if not all(s > 0 and math.isfinite(s) for s in scales):
        raise ValueError(f"{fn}: scale_factor must be positive, got {scale_factor!r}")
    return (math.floor(in_hw[0] * scales[0]), math.floor(in_hw[1] * scales[1])), scales


def interpolate(input, size=None, scale_factor=None, mode: str = "nearest", align_corners=None,
                recompute_scale_factor=None, antialias: bool = False) -> Tensor:
    """Resize images (N, C, H, W) to ``size`` or by ``scale_factor``, as ``torch.nn.functional.interpolate``.

    Args:
        input: Tensor (N, C, H, W).
        size: (OH, OW) or one int for both; or give scale_factor instead.
        scale_factor: a number or (sH, sW): OH = floor(H * sH); the coordinates then use
            1 / sH, as PyTorch's, unless recompute_scale_factor is True (then OH / H).
        mode: "nearest", "nearest-exact", "bilinear" or "area".
        align_corners: bilinear only: map corner pixels' centres onto each other (True)
            or the image's edges (False, the default).
        antialias: PyTorch's low-pass filter when shrinking; not offered (refused).
    Returns:
        y Tensor (N, C, OH, OW), input's dtype.
    Raises:
        ValueError naming interpolate for another mode or rank, both or neither of
        size and scale_factor, align_corners outside bilinear, or antialias.
    """
    fn = "interpolate"
    if mode not in MODES:
        raise ValueError(f"{fn}: mode must be one of {MODES} for 4-D input, got {mode!r}")
    if input.ndim != 4:
        raise ValueError(f"{fn}: expected input (N, C, H, W), got {tuple(input.shape)}")
    if align_corners is not None and mode != "bilinear":
        raise ValueError(f"{fn}: align_corners can only be set with mode 'bilinear', got mode {mode!r}")
    if antialias:
        raise ValueError(f"{fn}: antialias=True is not supported")
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{fn}: give exactly one of size and scale_factor, got size={size!r}, "
                         f"scale_factor={scale_factor!r}")
    h, w = input.shape[2:]
    out, scales = resized_hw((h, w), size, scale_factor)
    if recompute_scale_factor:
        scales = (None, None)
    if min(out) < 1:
        raise ValueError(f"{fn}: the output size must be at least 1 x 1, got {tuple(out)} for input {h} x {w}")
    if mode == "area":
        return adaptive_avg_pool2d(input, tuple(int(n) for n in out))
    corners = bool(align_corners)
    rows = interpolation_matrix(int(out[0]), h, mode, corners, scales[0])
    cols = interpolation_matrix(int(out[1]), w, mode, corners, scales[1])
    return Resize2d(rows, cols)(input)
