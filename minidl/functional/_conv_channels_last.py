"""im2col convolution in channels-last memory: the CPU's path for every conv Winograd does not take.

The algorithm is conv.py's (copy every window into a column, one matrix product
per group), arranged so that the product writes the channels-last output directly:

    y (pixels, O/G) = col (pixels, KH*KW*C/G) @ W (KH*KW*C/G, O/G)      per group

One row of col per output pixel. Gathered from channels-last x, a row is the
window's KH rows of KW*C/G values, each a contiguous run of x (with one group the
kw and c axes merge into runs of KW*C values), so the copy moves long runs where
the NCHW gather moves rows of OW values. An NCHW input (the network's images, C = 3)
is gathered the NCHW way instead, (C*KH*KW, pixels) with runs of OW values, and
the product reads that matrix transposed; either way y comes out channels-last.
There the bias rides in the product: each group's columns get one more row, all
ones, and its weight matrix one more row, the bias, so the product adds it to every
pixel while it writes y, instead of a pass of its own over y afterwards (cifar
conv1, K = 27: the bias pass cost a third as much as the product).

Backward: the weight gradient col^T @ gy, and the input gradient either as a
correlation of gy with the flipped weights (stride 1; one more gather, see conv.py)
or as the column gradient gy @ W^T added back onto the image window by window
(col2im, KH*KW strided adds of runs of C/G values).
"""
from __future__ import annotations

from .. import backend
from .._cpu_threads import map_pieces
from ..autograd import Function
from ._im2col import im2col, im2col_view, pad2d, worker_slices
from ._layout import as_nchw, is_channels_last, nhwc
from ._window import output_hw

# Column bytes per batch slice. Smaller than conv.py's 16 MB: a slice's columns and
# outputs then stay in cache between the copy, the product and the bias (cifar conv1,
# 110 KB of columns per image: forward 6.7 -> 3.7 ms at batch 128). But at least
# _MIN_PIXELS output pixels (product rows) per slice, so that the products of big
# kernels stay near BLAS's peak (the seed net's conv2, 729 pixels and 7 MB of columns
# per image: backward 850 ms with one image per slice, 616 ms with two).
_COL_BYTES = 1 * 2**20
_MIN_PIXELS = 1024


def _slices(x, per_image_bytes: int, pixels_per_image: int) -> list:
    """Batch slices of ``x`` for the workers: _COL_BYTES of columns, or _MIN_PIXELS pixels if more."""
    budget = max(_COL_BYTES, -(-_MIN_PIXELS // max(pixels_per_image, 1)) * per_image_bytes)
    return worker_slices(x, per_image_bytes, budget)


def _pixel_cols(x_l, part, kernel, stride, pads, groups):
    """Columns gathered from channels-last x for the images ``part``: (G, n*OH*OW, KH*KW*C/G).

    Row (n, oh, ow) of group g holds xpad[n, oh*SH + kh, ow*SW + kw, g*C/G + c] in (kh, kw, c) order.
    """
    xp = backend.get_array_module(x_l)
    (kh, kw), (sh, sw) = kernel, stride
    n, h, w, c = x_l[part].shape
    oh, ow = output_hw("conv2d", (h, w), kernel, stride, pads)
    src = pad2d(x_l[part], pads, axes=(1, 2))
    cg = c // groups
    s_n, s_h, s_w, s_c = src.strides
    windows = xp.lib.stride_tricks.as_strided(
        src, shape=(groups, n, oh, ow, kh, kw, cg),
        strides=(cg * s_c, s_n, sh * s_h, sw * s_w, s_h, s_w, s_c))
    return xp.ascontiguousarray(windows).reshape(groups, n * oh * ow, kh * kw * cg)


def _pixel_weights(weight, groups):
    """weight (O, C/G, KH, KW) as (G, KH*KW*C/G, O/G), rows in _pixel_cols' (kh, kw, c) order."""
    xp = backend.get_array_module(weight)
    o, cg, kh, kw = weight.shape
    w = weight.reshape(groups, o // groups, cg, kh, kw).transpose(0, 3, 4, 2, 1)
    return xp.ascontiguousarray(w).reshape(groups, kh * kw * cg, o // groups)


def _flipped_pixel_weights(weight, groups):
    """The weights of gx's correlation: taps reversed, in/out channels swapped: (G, KH*KW*O/G, C/G)."""
    xp = backend.get_array_module(weight)
    o, cg, kh, kw = weight.shape
    w = weight[:, :, ::-1, ::-1].reshape(groups, o // groups, cg, kh, kw).transpose(0, 3, 4, 1, 2)
    return xp.ascontiguousarray(w).reshape(groups, kh * kw * (o // groups), cg)


def _rows_of_groups(y_l, part, groups):
    """The channels-last slice y_l[part] (n, OH, OW, O) as G matrices (G, n*OH*OW, O/G): a view."""
    block = y_l[part]
    return block.reshape(-1, groups, block.shape[-1] // groups).transpose(1, 0, 2)


def correlate(x_l, w_mat, kernel, stride, pads, groups, bias=None):
    """Channels-last convolution: y (N, OH, OW, O) from x (N, H, W, C) and _pixel_weights-ordered matrices.

    Shapes: x_l (N, H, W, C), w_mat (G, KH*KW*C/G, O/G), bias (O,) -> (N, OH, OW, O).
    """
    xp = backend.get_array_module(x_l)
    n, h, w, c = x_l.shape
    o = w_mat.shape[0] * w_mat.shape[2]
    oh, ow = output_hw("conv2d", (h, w), kernel, stride, pads)
    y_l = xp.empty((n, oh, ow, o), dtype=x_l.dtype)

    def work(part):
        cols = _pixel_cols(x_l, part, kernel, stride, pads, groups)
        xp.matmul(cols, w_mat, out=_rows_of_groups(y_l, part, groups))
        del cols
        if bias is not None:
            y_l[part] += bias

    per_image = c * kernel[0] * kernel[1] * oh * ow * x_l.itemsize
    map_pieces(x_l, work, _slices(x_l, per_image, oh * ow))
    return y_l


class Conv2dChannelsLast(Function):
    # For each batch slice of n images, M = n*OH*OW pixels, G groups, K = KH*KW*C/G:
    # x channels-last (n,H,W,C) -> col (G, M, K), taps in (kh, kw, c) order, or
    # x NCHW (n,C,H,W) -> im2col (C,KH,KW,n,OH,OW) = (G, K, M), read transposed;
    # weight (O,C/G,KH,KW) -> (G, K, O/G) in the same tap order
    # y[g] = col[g] @ weight[g] (M, O/G) -> y (n,OH,OW,O) channels-last, seen as (n,O,OH,OW)
    def __init__(self, kernel: tuple, stride: tuple, pads: tuple, groups: int):
        self.kernel, self.stride, self.pads, self.groups = kernel, stride, pads, groups

    def _channel_cols(self, x, part):
        """NCHW-gathered columns of the images ``part`` as (G, M, K) (a transposed view)."""
        col = im2col(x[part], self.kernel, self.stride, self.pads)
        m = col[0, 0, 0].size
        return col.reshape(self.groups, -1, m).transpose(0, 2, 1)

    def _channel_weights(self, weight):
        """weight (O, C/G, KH, KW) as (G, C/G*KH*KW, O/G) in im2col's (c, kh, kw) order: a view."""
        return weight.reshape(self.groups, weight.shape[0] // self.groups, -1).transpose(0, 2, 1)

    def _channel_cols_and_ones(self, x, part):
        """_channel_cols with a row of ones under each group's K rows: (G, M, K + 1), a transposed view."""
        xp = backend.get_array_module(x)
        windows = im2col_view(x[part], self.kernel, self.stride, self.pads)   # (C, KH, KW, n, OH, OW)
        (c, kh, kw, n, oh, ow), g = windows.shape, self.groups
        k = c // g * kh * kw
        col = xp.empty((g, k + 1, n * oh * ow), dtype=x.dtype)
        # Both sides seen as (G, C/G, KH, KW, n, OH, OW): axes only split, so both stay views.
        xp.copyto(col[:, :k].reshape(g, c // g, kh, kw, n, oh, ow), windows.reshape(g, c // g, kh, kw, n, oh, ow))
        col[:, k] = 1
        return col.transpose(0, 2, 1)

    def _channel_weights_and_bias(self, weight, bias):
        """_channel_weights with each group's bias as one more row: (G, K + 1, O/G)."""
        xp = backend.get_array_module(weight)
        w = self._channel_weights(weight)
        g, k, og = w.shape
        w_and_b = xp.empty((g, k + 1, og), dtype=weight.dtype)
        w_and_b[:, :k] = w
        w_and_b[:, k] = bias.reshape(g, og)
        return w_and_b

    def forward(self, x, weight, bias=None):
        xp = backend.get_array_module(x)
        self.pixel_major = is_channels_last(x)
        self.save_for_backward(x, weight)  # both are held by the graph anyway
        if self.pixel_major:
            w_mat = _pixel_weights(weight, self.groups)
            return as_nchw(correlate(nhwc(x), w_mat, self.kernel, self.stride, self.pads, self.groups, bias))
        n, c = x.shape[:2]
        o = weight.shape[0]
        oh, ow = output_hw("conv2d", x.shape[2:], self.kernel, self.stride, self.pads)
        y_l = xp.empty((n, oh, ow, o), dtype=x.dtype)
        if bias is None:
            w_mat, cols = self._channel_weights(weight), self._channel_cols
        else:   # the bias rides in the product (module doc)
            w_mat, cols = self._channel_weights_and_bias(weight, bias), self._channel_cols_and_ones

        def work(part):
            xp.matmul(cols(x, part), w_mat, out=_rows_of_groups(y_l, part, self.groups))

        per_image = c * weight[0, 0].size * oh * ow * x.itemsize
        map_pieces(x, work, _slices(x, per_image, oh * ow))
        return as_nchw(y_l)

    def _weight_and_bias_grads(self, x, gy_l, weight, need_w: bool, need_b: bool):
        """gw = sum over slices of col^T @ gy, per group, back in (O, C/G, KH, KW); gb = sum of gy.

        Each slice's share of gb is summed while its gy is in cache, row after row
        (NumPy's order), so a data-parallel split of the batch changes few roundings.
        """
        xp = backend.get_array_module(x)
        g, (kh, kw) = self.groups, self.kernel
        o, cg = weight.shape[:2]
        x_l = nhwc(x) if self.pixel_major and need_w else None

        def work(part):
            gw_part = gb_part = None
            if need_w:
                if self.pixel_major:
                    cols = _pixel_cols(x_l, part, self.kernel, self.stride, self.pads, g)
                else:
                    cols = self._channel_cols(x, part)
                gw_part = xp.matmul(cols.transpose(0, 2, 1), _rows_of_groups(gy_l, part, g))   # (G, K, O/G)
            if need_b:
                gb_part = gy_l[part].reshape(-1, o).sum(axis=0)
            return gw_part, gb_part

        per_image = x.shape[1] * kh * kw * gy_l.shape[1] * gy_l.shape[2] * x.itemsize
        parts = map_pieces(x, work, _slices(x, per_image, gy_l.shape[1] * gy_l.shape[2]))
        if not parts:  # an empty batch
            return (xp.zeros(weight.shape, dtype=weight.dtype) if need_w else None,
                    xp.zeros(o, dtype=weight.dtype) if need_b else None)
        gw, gb = parts[0]
        for gw_part, gb_part in parts[1:]:  # in slice order: the same sums for any thread count
            if need_w:
                gw += gw_part
            if need_b:
                gb += gb_part
        if need_w:
            if self.pixel_major:
                gw = gw.reshape(g, kh, kw, cg, o // g).transpose(0, 4, 3, 1, 2)
            else:
                gw = gw.reshape(g, cg, kh, kw, o // g).transpose(0, 4, 1, 2, 3)
            gw = xp.ascontiguousarray(gw).reshape(weight.shape)
        return gw, gb

    def _input_grad_col2im(self, gy_l, weight, x_shape):
        """gx as the column gradient gy @ W^T added back window by window (any stride).

        Shapes: per slice gy (G, M, O/G) @ (G, O/G, K) -> gcol (G, n, OH, OW, KH, KW, C/G)
        -> gxpad (n, Hp, Wp, G, C/G) -> gx (n, H, W, C).
        """
        xp = backend.get_array_module(gy_l)
        g, (kh_size, kw_size), (sh, sw) = self.groups, self.kernel, self.stride
        (top, bottom), (left, right) = self.pads
        n, c, h, w = x_shape
        oh, ow = gy_l.shape[1:3]
        w_t = _pixel_weights(weight, g).transpose(0, 2, 1)
        gx_l = xp.empty((n, h, w, c), dtype=gy_l.dtype)

        def work(part):
            gcol = xp.matmul(_rows_of_groups(gy_l, part, g), w_t)
            count = gcol.shape[1] // (oh * ow)
            gcol = gcol.reshape(g, count, oh, ow, kh_size, kw_size, c // g)
            gxpad = xp.zeros((count, top + h + bottom, left + w + right, g, c // g), dtype=gy_l.dtype)
            for kh in range(kh_size):
                for kw in range(kw_size):
                    rows, cols = slice(kh, kh + sh * (oh - 1) + 1, sh), slice(kw, kw + sw * (ow - 1) + 1, sw)
                    gxpad[:, rows, cols] += gcol[:, :, :, :, kh, kw].transpose(1, 2, 3, 0, 4)
            gx_l[part] = gxpad[:, top:top + h, left:left + w].reshape(count, h, w, c)

        per_image = c * kh_size * kw_size * oh * ow * gy_l.itemsize
        map_pieces(gy_l, work, _slices(gy_l, per_image, oh * ow))
        return gx_l

    def _input_grad_correlation(self, gy_l, weight):
        """gx of a stride-1 conv: gy, padded by KH-1-top above (likewise the other sides),
        correlated with the flipped, channel-swapped weights (see conv.py)."""
        (top, bottom), (left, right) = self.pads
        kh, kw = self.kernel
        pads = ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right))
        return correlate(gy_l, _flipped_pixel_weights(weight, self.groups), self.kernel, (1, 1), pads, self.groups)

    def backward(self, gy):
        x, weight = self.saved_arrays
        need_x, need_w = self.needs_input_grad[:2]
        need_b = len(self.needs_input_grad) == 3 and self.needs_input_grad[2]
        gy_l = nhwc(gy)
        gw, gb = self._weight_and_bias_grads(x, gy_l, weight, need_w, need_b)
        gx = None
        if need_x:
            if _prefers_correlation(self.kernel, self.stride, self.pads, x.shape, gy.shape):
                gx = as_nchw(self._input_grad_correlation(gy_l, weight))
            else:
                gx = as_nchw(self._input_grad_col2im(gy_l, weight, x.shape))
        assert gx is None or gx.shape == x.shape
        assert gw is None or gw.shape == weight.shape
        assert gb is None or gb.shape == (weight.shape[0],)
        return (gx, gw) if len(self.needs_input_grad) == 2 else (gx, gw, gb)


def _prefers_correlation(kernel, stride, pads, x_shape, gy_shape) -> bool:
    """Stride 1, padding <= kernel - 1 on every side, and gy's columns no larger than x's (conv.py)."""
    (top, bottom), (left, right) = pads
    kh, kw = kernel
    fits = stride == (1, 1) and max(top, bottom) < kh and max(left, right) < kw
    o, c = gy_shape[1], x_shape[1]
    return fits and o * x_shape[2] * x_shape[3] <= c * gy_shape[2] * gy_shape[3]
