"""im2col convolution in channels-last memory: the CPU's path for every conv Winograd does not take.

The algorithm is the reference's (``minidl.functional.conv``: copy every window into
a column, one matrix product per group), arranged so that the product writes the
channels-last output directly:

    y (pixels, O/G) = col (pixels, KH*KW*C/G) @ W (KH*KW*C/G, O/G)      per group

One row of col per output pixel. Gathered from channels-last x, a row is the
window's KH rows of KW*C/G values, each a contiguous run of x (with one group the
kw and c axes merge into runs of KW*C values), so the copy moves long runs where
the NCHW gather moves rows of OW values. An NCHW input (the network's images, C = 3)
is gathered the NCHW way instead, (C*KH*KW, pixels) with runs of OW values, and
the product reads that matrix transposed; either way y comes out channels-last.
There the bias rides in the product: each group's columns get one more row, all
ones, and its weight matrix one more row, the bias, so the product adds it to every
pixel while it writes y, instead of a pass of its own over y afterwards.

Backward: the weight gradient col^T @ gy, and the input gradient either as a
correlation of gy with the flipped weights (``convolution.input_grad_by_correlation``)
or as the column gradient gy @ W^T added back onto the image window by window
(col2im, KH*KW strided adds of runs of C/G values).
"""
from __future__ import annotations

import numpy as np

from ...window import output_hw, pad2d, tap_slice, transposed_padding
from ..convolution import ConvolutionKernel, input_grad_by_correlation
from .layout import as_nchw, is_channels_last, nhwc
from .slices import CONV_COLUMN_BYTES, CONV_MIN_PIXELS, worker_slices
from .threads import map_pieces


def _slices(x, per_image_bytes: int, pixels_per_image: int) -> list:
    """Batch slices of ``x`` for the workers: CONV_COLUMN_BYTES of columns, at least CONV_MIN_PIXELS pixels."""
    return worker_slices(x, per_image_bytes, CONV_COLUMN_BYTES, pixels_per_image, CONV_MIN_PIXELS)


def _pixel_cols(x_l, part, kernel, stride, pads, groups):
    """Columns gathered from channels-last x for the images ``part``: (G, n*OH*OW, KH*KW*C/G).

    Row (n, oh, ow) of group g holds xpad[n, oh*SH + kh, ow*SW + kw, g*C/G + c] in (kh, kw, c) order.
    """
    (kh, kw), (sh, sw) = kernel, stride
    n, h, w, c = x_l[part].shape
    oh, ow = output_hw("conv2d", (h, w), kernel, stride, pads)
    src = pad2d(x_l[part], pads, axes=(1, 2))
    cg = c // groups
    s_n, s_h, s_w, s_c = src.strides
    windows = np.lib.stride_tricks.as_strided(
        src, shape=(groups, n, oh, ow, kh, kw, cg),
        strides=(cg * s_c, s_n, sh * s_h, sw * s_w, s_h, s_w, s_c))
    return np.ascontiguousarray(windows).reshape(groups, n * oh * ow, kh * kw * cg)


def _channel_windows(x, kernel, stride, pads):
    """Every window of NCHW x as a strided view (C, KH, KW, n, OH, OW) of the padded x (no copy).

    Elements repeat where windows overlap, so nothing is written through it.
    """
    n, c = x.shape[:2]
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = output_hw("conv2d", x.shape[2:], kernel, stride, pads)
    xpad = pad2d(x.transpose(1, 0, 2, 3), pads)     # (C, n, Hp, Wp)
    s_c, s_n, s_h, s_w = xpad.strides
    return np.lib.stride_tricks.as_strided(
        xpad, shape=(c, kh, kw, n, oh, ow), strides=(s_c, s_h, s_w, s_n, s_h * sh, s_w * sw))


def _pixel_weights(weight, groups):
    """weight (O, C/G, KH, KW) as (G, KH*KW*C/G, O/G), rows in _pixel_cols' (kh, kw, c) order."""
    o, cg, kh, kw = weight.shape
    w = weight.reshape(groups, o // groups, cg, kh, kw).transpose(0, 3, 4, 2, 1)
    return np.ascontiguousarray(w).reshape(groups, kh * kw * cg, o // groups)


def _flipped_pixel_weights(weight, groups):
    """The weights of gx's correlation: taps reversed, in/out channels swapped: (G, KH*KW*O/G, C/G)."""
    o, cg, kh, kw = weight.shape
    w = weight[:, :, ::-1, ::-1].reshape(groups, o // groups, cg, kh, kw).transpose(0, 3, 4, 1, 2)
    return np.ascontiguousarray(w).reshape(groups, kh * kw * (o // groups), cg)


def _rows_of_groups(y_l, part, groups):
    """The channels-last slice y_l[part] (n, OH, OW, O) as G matrices (G, n*OH*OW, O/G): a view."""
    block = y_l[part]
    return block.reshape(-1, groups, block.shape[-1] // groups).transpose(1, 0, 2)


def correlate(x_l, w_mat, kernel, stride, pads, groups, bias=None, finish=None):
    """Channels-last convolution: y (N, OH, OW, O) from x (N, H, W, C) and _pixel_weights-ordered matrices.

    ``finish(y_l, part)``, if given, runs on each slice of y while it is in cache (the
    kernel's fused output pass: a residual, the ReLU).
    Shapes: x_l (N, H, W, C), w_mat (G, KH*KW*C/G, O/G), bias (O,) -> (N, OH, OW, O).
    """
    n, h, w, c = x_l.shape
    o = w_mat.shape[0] * w_mat.shape[2]
    oh, ow = output_hw("conv2d", (h, w), kernel, stride, pads)
    y_l = np.empty((n, oh, ow, o), dtype=x_l.dtype)

    def work(part):
        cols = _pixel_cols(x_l, part, kernel, stride, pads, groups)
        np.matmul(cols, w_mat, out=_rows_of_groups(y_l, part, groups))
        del cols
        if bias is not None:
            y_l[part] += bias
        if finish is not None:
            finish(y_l, part)

    per_image = c * kernel[0] * kernel[1] * oh * ow * x_l.itemsize
    map_pieces(x_l, work, _slices(x_l, per_image, oh * ow))
    return y_l


class ChannelsLastConv2d(ConvolutionKernel):
    # For each batch slice of n images, M = n*OH*OW pixels, G groups, K = KH*KW*C/G:
    # x channels-last (n,H,W,C) -> col (G, M, K), taps in (kh, kw, c) order, or
    # x NCHW (n,C,H,W) -> windows (C,KH,KW,n,OH,OW) = (G, K, M), read transposed;
    # weight (O,C/G,KH,KW) -> (G, K, O/G) in the same tap order
    # y[g] = col[g] @ weight[g] (M, O/G) -> y (n,OH,OW,O) channels-last, seen as (n,O,OH,OW)

    def _channel_cols(self, x, part):
        """NCHW-gathered columns of the images ``part`` as (G, M, K) (a transposed view of a copy)."""
        col = np.ascontiguousarray(_channel_windows(x[part], self.kernel, self.stride, self.pads))
        m = col[0, 0, 0].size
        return col.reshape(self.groups, -1, m).transpose(0, 2, 1)

    def _channel_weights(self, weight):
        """weight (O, C/G, KH, KW) as (G, C/G*KH*KW, O/G) in the windows' (c, kh, kw) order: a view."""
        return weight.reshape(self.groups, weight.shape[0] // self.groups, -1).transpose(0, 2, 1)

    def _channel_cols_and_ones(self, x, part):
        """_channel_cols with a row of ones under each group's K rows: (G, M, K + 1), a transposed view."""
        windows = _channel_windows(x[part], self.kernel, self.stride, self.pads)   # (C, KH, KW, n, OH, OW)
        (c, kh, kw, n, oh, ow), g = windows.shape, self.groups
        k = c // g * kh * kw
        col = np.empty((g, k + 1, n * oh * ow), dtype=x.dtype)
        # Both sides seen as (G, C/G, KH, KW, n, OH, OW): axes only split, so both stay views.
        np.copyto(col[:, :k].reshape(g, c // g, kh, kw, n, oh, ow), windows.reshape(g, c // g, kh, kw, n, oh, ow))
        col[:, k] = 1
        return col.transpose(0, 2, 1)

    def _channel_weights_and_bias(self, weight, bias):
        """_channel_weights with each group's bias as one more row: (G, K + 1, O/G)."""
        w = self._channel_weights(weight)
        g, k, og = w.shape
        w_and_b = np.empty((g, k + 1, og), dtype=weight.dtype)
        w_and_b[:, :k] = w
        w_and_b[:, k] = bias.reshape(g, og)
        return w_and_b

    def forward(self, x, weight, bias=None):
        self.pixel_major = is_channels_last(x)
        self.x, self.weight = x, weight          # both are held by the graph anyway
        self.x_shape, self.w_shape = x.shape, weight.shape
        residual_l = None if self.residual is None else nhwc(self.residual)   # in y's channels-last memory

        def finish(y_l, part):
            self.finish_slice(y_l, part, residual_l)

        if self.pixel_major:
            w_mat = _pixel_weights(weight, self.groups)
            return as_nchw(correlate(nhwc(x), w_mat, self.kernel, self.stride, self.pads, self.groups, bias,
                                     finish))
        n, c = x.shape[:2]
        o = weight.shape[0]
        oh, ow = output_hw("conv2d", x.shape[2:], self.kernel, self.stride, self.pads)
        y_l = np.empty((n, oh, ow, o), dtype=x.dtype)
        if bias is None:
            w_mat, cols = self._channel_weights(weight), self._channel_cols
        else:   # the bias rides in the product (module doc)
            w_mat, cols = self._channel_weights_and_bias(weight, bias), self._channel_cols_and_ones

        def work(part):
            np.matmul(cols(x, part), w_mat, out=_rows_of_groups(y_l, part, self.groups))
            finish(y_l, part)

        per_image = c * weight[0, 0].size * oh * ow * x.itemsize
        map_pieces(x, work, _slices(x, per_image, oh * ow))
        return as_nchw(y_l)

    def _weight_and_bias_grads(self, gy_l, need_w: bool, need_b: bool):
        """gw = sum over slices of col^T @ gy, per group, back in (O, C/G, KH, KW); gb = sum of gy.

        Each slice's share of gb is summed while its gy is in cache, row after row
        (NumPy's order), so a data-parallel split of the batch changes few roundings.
        """
        x, weight, g, (kh, kw) = self.x, self.weight, self.groups, self.kernel
        o, cg = weight.shape[:2]
        x_l = nhwc(x) if self.pixel_major and need_w else None

        def work(part):
            gw_part = gb_part = None
            if need_w:
                if self.pixel_major:
                    cols = _pixel_cols(x_l, part, self.kernel, self.stride, self.pads, g)
                else:
                    cols = self._channel_cols(x, part)
                gw_part = np.matmul(cols.transpose(0, 2, 1), _rows_of_groups(gy_l, part, g))   # (G, K, O/G)
            if need_b:
                gb_part = gy_l[part].reshape(-1, o).sum(axis=0)
            return gw_part, gb_part

        per_image = x.shape[1] * kh * kw * gy_l.shape[1] * gy_l.shape[2] * x.itemsize
        parts = map_pieces(x, work, _slices(x, per_image, gy_l.shape[1] * gy_l.shape[2]))
        if not parts:  # an empty batch
            return (np.zeros(weight.shape, dtype=weight.dtype) if need_w else None,
                    np.zeros(o, dtype=weight.dtype) if need_b else None)
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
            gw = np.ascontiguousarray(gw).reshape(weight.shape)
        return gw, gb

    def _input_grad_col2im(self, gy_l):
        """gx as the column gradient gy @ W^T added back window by window (any stride).

        Shapes: per slice gy (G, M, O/G) @ (G, O/G, K) -> gcol (G, n, OH, OW, KH, KW, C/G)
        -> gxpad (n, Hp, Wp, G, C/G) -> gx (n, H, W, C).
        """
        g, (kh_size, kw_size), (sh, sw) = self.groups, self.kernel, self.stride
        (top, bottom), (left, right) = self.pads
        n, c, h, w = self.x_shape
        oh, ow = gy_l.shape[1:3]
        w_t = _pixel_weights(self.weight, g).transpose(0, 2, 1)
        gx_l = np.empty((n, h, w, c), dtype=gy_l.dtype)

        def work(part):
            gcol = np.matmul(_rows_of_groups(gy_l, part, g), w_t)
            count = gcol.shape[1] // (oh * ow)
            gcol = gcol.reshape(g, count, oh, ow, kh_size, kw_size, c // g)
            gxpad = np.zeros((count, top + h + bottom, left + w + right, g, c // g), dtype=gy_l.dtype)
            for kh in range(kh_size):
                for kw in range(kw_size):
                    rows, cols = tap_slice(kh, sh, oh), tap_slice(kw, sw, ow)
                    gxpad[:, rows, cols] += gcol[:, :, :, :, kh, kw].transpose(1, 2, 3, 0, 4)
            gx_l[part] = gxpad[:, top:top + h, left:left + w].reshape(count, h, w, c)

        per_image = c * kh_size * kw_size * oh * ow * gy_l.itemsize
        map_pieces(gy_l, work, _slices(gy_l, per_image, oh * ow))
        return gx_l

    def _input_grad_correlation(self, gy_l):
        """gx of a stride-1 conv: gy, padded by ``transposed_padding``, correlated with the flipped weights."""
        pads = transposed_padding(self.kernel, self.pads)
        return correlate(gy_l, _flipped_pixel_weights(self.weight, self.groups), self.kernel, (1, 1), pads,
                         self.groups)

    def gradients(self, gy, need_x, need_w, need_b):
        gy_l = nhwc(gy)
        gw, gb = self._weight_and_bias_grads(gy_l, need_w, need_b) if need_w or need_b else (None, None)
        gx = None
        if need_x:
            if input_grad_by_correlation(self.kernel, self.stride, self.pads, self.x_shape, gy.shape):
                gx = as_nchw(self._input_grad_correlation(gy_l))
            else:
                gx = as_nchw(self._input_grad_col2im(gy_l))
        return gx, gw, gb
