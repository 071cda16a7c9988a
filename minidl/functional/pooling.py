"""2-D max pooling, with overlapping windows and -inf padding, in either memory layout.

Forward walks the KH*KW kernel offsets (never the pixels): for one offset, the
pixels it sees across all windows form one strided slice of the padded input, so a
running maximum over the offsets gives every window's maximum in KH*KW vectorised
steps. Alongside it we record *which* offset won, as a small integer per output
(int8 for kernels up to 127 elements), instead of keeping the input for backward.

Backward sends each output's gradient to exactly one input: its window's maximum
(the first one in window order if several tie, because the running maximum only
moves on a strictly larger value). With overlapping windows (stride < kernel) one
input can be the maximum of several windows; its gradient is the sum of theirs,
which the per-offset strided adds accumulate.

Padding is -inf, never zero: a zero pad would beat an all-negative window.

On CUDA (float32/float64, unless MINIDL_RAW_KERNELS=0) both directions run as one
raw kernel each (``_cuda_kernels``): forward with one thread per window, applying
the same running-maximum rule; backward with one thread per input pixel, gathering
the gradients of the windows that chose it, in the order the loop below adds them.
"""
from __future__ import annotations

from .. import backend
from .._cpu_threads import map_pieces
from ..autograd import Function, Tensor
from . import _cuda_kernels as cuda_kernels
from ._im2col import pad2d, window, worker_slices
from ._layout import as_nchw, is_channels_last, nhwc
from ._window import output_hw, pair, resolve_padding


def _index_dtype(xp, positions: int):
    """The smallest signed int dtype that can number ``positions`` window offsets."""
    for dtype in (xp.int8, xp.int16, xp.int32):
        if positions <= xp.iinfo(dtype).max:
            return dtype
    return xp.int64


# Input bytes per batch slice on the CPU: a slice's padded input, outputs and
# temporaries then stay in cache across the KH*KW passes (about 2x faster).
_SLICE_BYTES = 2 * 2**20


def _spatial_view(x):
    """x (N, C, H, W) as the array the CPU loops walk, and where its H and W axes are.

    Channels-last x: its (N, H, W, C) memory, axes 1 and 2, so every strided slice moves
    runs of C values; otherwise x itself, axes 2 and 3 (runs of OW values).
    """
    if is_channels_last(x):
        return nhwc(x), (1, 2)
    return x, (2, 3)


def _index(axes, rows, cols):
    """An index selecting ``rows`` and ``cols`` on the spatial ``axes`` of a 4-D array."""
    index = [slice(None)] * 4
    index[axes[0]], index[axes[1]] = rows, cols
    return tuple(index)


def _as_layout(a, axes):
    """A result computed on a _spatial_view back as (N, C, H, W)."""
    return as_nchw(a) if axes == (1, 2) else a


class MaxPool2d(Function):
    # For each batch slice of n images (channels-last ones walked as (n,H,W,C)):
    # x (n,C,H,W) -> xpad (n,C,Hp,Wp) padded with -inf -> y (n,C,OH,OW), and
    # argmax (n,C,OH,OW): the winning offset kh*KW + kw within each window (1 byte).
    # y, argmax and gx keep x's memory layout.
    def __init__(self, kernel: tuple, stride: tuple, pads: tuple):
        self.kernel, self.stride, self.pads = kernel, stride, pads

    def _slices(self, x_shape, x):
        (top, bottom), (left, right) = self.pads
        padded = x_shape[1] * (x_shape[2] + top + bottom) * (x_shape[3] + left + right)
        return worker_slices(x, padded * x.itemsize, _SLICE_BYTES)

    def forward(self, x):
        xp = backend.get_array_module(x)
        (kh_size, kw_size), (sh, sw) = self.kernel, self.stride
        oh, ow = output_hw("max_pool2d", x.shape[2:], self.kernel, self.stride, self.pads)
        self.x_shape = x.shape
        if cuda_kernels.wanted(x):
            y, self.argmax = cuda_kernels.max_pool2d_forward(
                xp.ascontiguousarray(x), self.kernel, self.stride, self.pads, (oh, ow),
                _index_dtype(xp, kh_size * kw_size))
            return y
        a, axes = _spatial_view(x)
        self.axes = axes
        out_shape = list(a.shape)
        out_shape[axes[0]], out_shape[axes[1]] = oh, ow
        y = xp.empty(out_shape, dtype=x.dtype)
        argmax = xp.zeros(y.shape, dtype=_index_dtype(xp, kh_size * kw_size))

        def work(part):
            xpad = pad2d(a[part], self.pads, -xp.inf, axes)
            y_part, argmax_part = y[part], argmax[part]
            candidate = xp.empty_like(y_part)
            for kh in range(kh_size):
                for kw in range(kw_size):
                    # Copy the strided slice once, so the three passes below run on
                    # contiguous memory (several times faster than on strided views).
                    candidate[...] = xpad[_index(axes, window(kh, sh, oh), window(kw, sw, ow))]
                    k = kh * kw_size + kw
                    if k == 0:
                        y_part[...] = candidate
                        continue
                    # Strictly larger: on a tie the earlier offset keeps the gradient.
                    better = (candidate > y_part).astype(argmax.dtype)
                    # "argmax = k where better": offsets come in increasing order, so
                    # this is a maximum, and arithmetic beats a masked assignment.
                    better *= k
                    xp.maximum(argmax_part, better, out=argmax_part)
                    xp.maximum(y_part, candidate, out=y_part)

        map_pieces(x, work, self._slices(x.shape, x), nbytes=x.nbytes)
        self.argmax = argmax  # 1 byte per output: all that backward needs besides shapes
        return _as_layout(y, axes)

    def backward(self, gy):
        if cuda_kernels.wanted(gy):
            xp = backend.get_array_module(gy)
            return cuda_kernels.max_pool2d_backward(xp.ascontiguousarray(gy), self.argmax, self.x_shape,
                                                    self.kernel, self.stride, self.pads)
        xp = backend.get_array_module(gy)
        (kh_size, kw_size), (sh, sw) = self.kernel, self.stride
        (top, bottom), (left, right) = self.pads
        axes = self.axes
        g = nhwc(gy) if axes == (1, 2) else xp.ascontiguousarray(gy)   # gy in argmax's layout
        oh, ow = gy.shape[2:]
        h, w = self.x_shape[2:]
        gx_shape = list(g.shape)
        gx_shape[axes[0]], gx_shape[axes[1]] = h, w
        gx = xp.empty(gx_shape, dtype=gy.dtype)

        def work(part):
            gy_part, argmax_part = g[part], self.argmax[part]
            pad_shape = list(gy_part.shape)
            pad_shape[axes[0]], pad_shape[axes[1]] = top + h + bottom, left + w + right
            gxpad = xp.zeros(pad_shape, dtype=gy.dtype)
            mine, sent = xp.empty(gy_part.shape, dtype=bool), xp.empty_like(gy_part)
            for kh in range(kh_size):
                for kw in range(kw_size):
                    # Outputs whose maximum sat at this offset send their gradient
                    # there; the += accumulates where windows overlap.
                    xp.equal(argmax_part, kh * kw_size + kw, out=mine)
                    xp.multiply(gy_part, mine, out=sent)
                    gxpad[_index(axes, window(kh, sh, oh), window(kw, sw, ow))] += sent
            gx[part] = gxpad[_index(axes, slice(top, top + h), slice(left, left + w))]

        map_pieces(gy, work, self._slices(self.x_shape, gy), nbytes=gx.nbytes)
        gx = _as_layout(gx, axes)
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
    kernel = pair("max_pool2d", "kernel_size", kernel_size)
    stride = kernel if stride is None else pair("max_pool2d", "stride", stride)
    pads = resolve_padding("max_pool2d", padding, x_shape[2:], kernel, stride)
    if any(p >= k for (before, after), k in zip(pads, kernel) for p in (before, after)):
        raise ValueError(f"max_pool2d: padding {pads} must be smaller than the kernel {kernel} on every side")
    output_hw("max_pool2d", x_shape[2:], kernel, stride, pads)  # raises if the kernel does not fit
    return MaxPool2d(kernel, stride, pads)(x)
