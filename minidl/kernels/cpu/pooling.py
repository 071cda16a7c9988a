"""Max pooling on the CPU: the reference's running maximum, in batch slices, in either memory layout.

The algorithm is the reference's (``minidl.functional.pooling``): a running maximum
over the KH*KW kernel taps, each tap one strided slice of the padded input, with the
winning tap recorded as one small integer per output; backward sends each output's
gradient to its window's winner. Two things make it fast here:

* the batch is cut into slices whose padded input fits in cache across the KH*KW
  passes, and the slices run on the worker threads;
* a channels-last input is walked as its (N, H, W, C) memory, so every strided slice
  moves runs of C values instead of rows of OW values; y, argmax and gx keep the
  input's layout.
"""
from __future__ import annotations

import numpy as np

from ...window import output_hw, pad2d, tap_slice
from .spatial import as_layout, in_walked_layout, pooling_slices, spatial_index, spatial_view, with_spatial
from .threads import map_pieces


def index_dtype(taps: int):
    """The smallest signed int dtype that can number ``taps`` window offsets."""
    for dtype in (np.int8, np.int16, np.int32):
        if taps <= np.iinfo(dtype).max:
            return dtype
    return np.int64


class SlicedMaxPool2d:
    # For each batch slice of n images (channels-last ones walked as (n,H,W,C)):
    # x (n,C,H,W) -> xpad padded with -inf -> y (n,C,OH,OW), and
    # argmax (n,C,OH,OW): the winning tap kh*KW + kw within each window (1 byte).
    #
    # relu: max(y, 0), with ReLU before the pooling fused in (max(relu(x)) = relu(max(x))):
    # for inference, keeping no argmax (``minidl.functional.fused.relu_max_pool2d``).
    algorithm = "batch slices"   # what minidl.viz shows for the call

    def __init__(self, kernel: tuple, stride: tuple, pads: tuple, relu: bool = False):
        self.kernel, self.stride, self.pads, self.relu = kernel, stride, pads, relu

    def forward(self, x):
        (kh_size, kw_size), (sh, sw) = self.kernel, self.stride
        oh, ow = output_hw("max_pool2d", x.shape[2:], self.kernel, self.stride, self.pads)
        self.x_shape = x.shape
        a, axes = spatial_view(x)
        self.axes = axes
        y = np.empty(with_spatial(a.shape, axes, oh, ow), dtype=x.dtype)
        if self.relu:
            return as_layout(self._relu_max(a, axes, y), axes)
        argmax = np.zeros(y.shape, dtype=index_dtype(kh_size * kw_size))

        def work(part):
            xpad = pad2d(a[part], self.pads, -np.inf, axes)
            y_part, argmax_part = y[part], argmax[part]
            candidate = np.empty_like(y_part)
            for kh in range(kh_size):
                for kw in range(kw_size):
                    # Copy the strided slice once, so the three passes below run on
                    # contiguous memory (several times faster than on strided views).
                    candidate[...] = xpad[spatial_index(axes, tap_slice(kh, sh, oh), tap_slice(kw, sw, ow))]
                    k = kh * kw_size + kw
                    if k == 0:
                        y_part[...] = candidate
                        continue
                    # Strictly larger: on a tie the earlier tap keeps the gradient.
                    better = (candidate > y_part).astype(argmax.dtype)
                    # "argmax = k where better": taps come in increasing order, so
                    # this is a maximum, and arithmetic beats a masked assignment.
                    better *= k
                    np.maximum(argmax_part, better, out=argmax_part)
                    np.maximum(y_part, candidate, out=y_part)

        map_pieces(x, work, pooling_slices(x.shape, self.pads, x), nbytes=x.nbytes)
        self.argmax = argmax  # 1 byte per output: all that backward needs besides shapes
        return as_layout(y, axes)

    def _relu_max(self, a, axes, y):
        """Inference: y = max(0, every tap), no argmax kept, separably and without a padded copy.

        A window's maximum is the maximum over its KH rows of each row's maximum over its KW
        columns, so the KW column taps run first, over (n, H, OW, C), and the KH row taps then
        run over that, (n, OH, OW, C): KW + KH passes instead of KH * KW. No padded copy is
        made: a tap that hangs over the edge for some windows runs on the windows it covers
        only, which is exact because the padding (-inf) never wins and the ReLU is a maximum
        with 0 at the end.
        """
        (kh_size, kw_size), (sh, sw) = self.kernel, self.stride
        (top, _), (left, _) = self.pads
        oh, ow = y.shape[axes[0]], y.shape[axes[1]]
        h, w = a.shape[axes[0]], a.shape[axes[1]]
        row_taps = _covered(kh_size, sh, top, h, oh)
        col_taps = _covered(kw_size, sw, left, w, ow)

        def work(part):
            x_part, y_part = a[part], y[part]
            rows = np.empty(with_spatial(x_part.shape, axes, h, ow), dtype=y.dtype)
            _running_max(rows, x_part, col_taps, lambda cols: spatial_index(axes, slice(None), cols))
            _running_max(y_part, rows, row_taps, lambda rows_of: spatial_index(axes, rows_of, slice(None)))
            np.maximum(y_part, 0, out=y_part)

        map_pieces(a, work, pooling_slices(self.x_shape, self.pads, a), nbytes=a.nbytes)
        return y

    def backward(self, gy, needs):
        assert not self.relu, "max pooling with its ReLU fused in is for inference: it has no backward"
        (kh_size, kw_size), (sh, sw) = self.kernel, self.stride
        (top, bottom), (left, right) = self.pads
        axes = self.axes
        g = in_walked_layout(gy, axes)   # gy in argmax's layout
        oh, ow = gy.shape[2:]
        h, w = self.x_shape[2:]
        gx = np.empty(with_spatial(g.shape, axes, h, w), dtype=gy.dtype)

        def work(part):
            gy_part, argmax_part = g[part], self.argmax[part]
            gxpad = np.zeros(with_spatial(gy_part.shape, axes, top + h + bottom, left + w + right), dtype=gy.dtype)
            mine, sent = np.empty(gy_part.shape, dtype=bool), np.empty_like(gy_part)
            for kh in range(kh_size):
                for kw in range(kw_size):
                    # Outputs whose maximum sat at this tap send their gradient
                    # there; the += accumulates where windows overlap.
                    np.equal(argmax_part, kh * kw_size + kw, out=mine)
                    np.multiply(gy_part, mine, out=sent)
                    gxpad[spatial_index(axes, tap_slice(kh, sh, oh), tap_slice(kw, sw, ow))] += sent
            gx[part] = gxpad[spatial_index(axes, slice(top, top + h), slice(left, left + w))]

        map_pieces(gy, work, pooling_slices(self.x_shape, self.pads, gy), nbytes=gx.nbytes)
        gx = as_layout(gx, axes)
        assert gx.shape == tuple(self.x_shape)
        return (gx,)


def _covered(taps: int, stride: int, before: int, size: int, out: int) -> list:
    """Per tap along one axis: (the outputs it covers, the input positions it reads), as slices.

    Tap k of output i reads input i*stride + k - before; only the outputs whose read lies
    inside [0, size) are covered (the others would read padding). Taps covering every
    output come first, so that a running maximum can start from them.
    """
    covered = []
    for k in range(taps):
        first = max(0, -(-(before - k) // stride))           # the first i with i*stride + k - before >= 0
        last = min(out - 1, (size - 1 + before - k) // stride)
        if first <= last:
            start = first * stride + k - before
            covered.append((slice(first, last + 1), slice(start, start + stride * (last - first) + 1, stride),
                            first == 0 and last == out - 1))
    return sorted(covered, key=lambda tap: not tap[2])


def _running_max(out, src, taps, index) -> None:
    """out = the maximum of src's taps (``_covered``) along one axis; 0 where no tap covers.

    ``index(slice)`` selects that slice on the axis. 0 is right only because the caller's
    ReLU follows: every value the caller keeps is >= 0.
    """
    full = sum(1 for tap in taps if tap[2])
    if full >= 2:
        np.maximum(src[index(taps[0][1])], src[index(taps[1][1])], out=out)
    elif full == 1:
        out[...] = src[index(taps[0][1])]
    else:
        out[...] = 0
    for covers, reads, _ in taps[min(full, 2):]:
        view = out[index(covers)]
        np.maximum(view, src[index(reads)], out=view)
