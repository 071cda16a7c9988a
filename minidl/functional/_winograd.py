"""Winograd minimal filtering: 3x3 stride-1 convolution with 2.25x to 4x fewer multiplications.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016).

One axis first. F(m, 3) computes m outputs of a 3-tap correlation,
y_i = sum_k g_k d_(i+k), from n = m + 2 inputs with n multiplications instead of 3m:

    y = AT [ (G g) * (BT d) ]        (* elementwise; AT (m, n), G (n, 3), BT (n, n))

The matrices come from polynomial arithmetic (Toom-Cook). Linear convolution is
polynomial multiplication: evaluate both factors at n points, multiply the values,
and interpolate the product back (Lagrange). Correlation is the transpose of that
recipe, so the evaluation matrix of the m-tap factor becomes AT and the
interpolation matrix, transposed, becomes BT. With finite points p_j and one point
at infinity (which picks the leading coefficient):
    AT[i, j] = p_j ** i                          (the last column: 1 in the last row)
    G[j, k]  = p_j ** k / prod_(l != j) (p_j - p_l)   (the last row: (0, 0, 1))
    BT[j]    = coefficients of prod_(l != j) (x - p_l)  (the last row: of prod_l (x - p_l))
Points 0, 1, -1 give F(2, 3) (4 products for 2 outputs); 0, 1, -1, 2, -1/2 give
F(4, 3) (6 for 4). Lavin & Gray use -2 as the last point; -1/2 (exact in binary, as
all the matrices' entries but G's are) cut F(4x4)'s float32 error from 6.8x to 5.4x
im2col's on the test's data. ``transform_matrices`` builds them; the tests check the
identity y = AT [(G g) * (BT d)] for every d and g.

In two dimensions the 1-D algorithm runs along both axes of a tile:
    Y = AT [ (G g G^T) * (BT d B) ] A     d (n x n) input tile, Y (m x m) output tile,
so m*m outputs cost n*n multiplications instead of 9*m*m: 2.25x fewer for F(2x2, 3x3),
4x fewer for F(4x4, 3x3). Neighbouring input tiles overlap by 2 pixels. With C input
and O output channels the elementwise product sums over channels, which makes it
one matrix product per tile position xi (n*n of them):

    M[xi] (tiles, O) = V[xi] (tiles, C) @ U[xi] (C, O)

where V = BT d B (every tile, every channel) and U = G g G^T (every filter) are the
transformed inputs and weights. The transforms are small matrix products too
(``_sandwich``), so everything runs as BLAS calls on large arrays.

Backward is the adjoint of each step, in reverse: gM = A gy_tile AT (the output
transform transposed), then gU[xi] = V[xi]^T @ gM[xi] (summed over tiles) and
gV[xi] = gM[xi] @ U[xi]^T, then g = G^T gU G and gd = B gV BT, whose overlapping
tiles are added back onto the image. These are the exact gradients of what forward
computes.

Layout: channels-last (N, H, W, C) memory throughout (see _layout.py), so every
copy moves runs of C values. Rounding: the transforms add and subtract values of
different tiles with weights up to 8 (F(4x4)), so float32 results carry a few times
im2col's rounding error: measured against a float64 reference (tests/test_winograd.py),
F(2x2) 1.4x and F(4x4) 5.4x im2col's, about 1e-6 of the output's magnitude.
"""
from __future__ import annotations

import functools

import numpy as np

from .. import backend
from .._cpu_threads import map_pieces
from ..autograd import Function, is_grad_enabled
from ._im2col import worker_slices
from ._layout import as_nchw, nhwc, prefers_channels_last

# Interpolation points of the two tile sizes (besides infinity); see the module doc.
POINTS = {2: (0, 1, -1), 4: (0, 1, -1, 2, -0.5)}

# Bytes of transformed inputs and products per batch slice on the CPU: a slice's
# tiles stay in cache between the transform and the product. But at least _MIN_TILES
# tiles, so that each position's product has enough rows to run near BLAS's peak (the
# seed net's conv3, 16 tiles of 640 channels per image: one image per 2 MB slice gave
# 90 ms forward and 244 ms backward at batch 32, four images per slice 69 and 131 ms).
_SLICE_BYTES = 2 * 2**20
_MIN_TILES = 64


def transform_matrices(m: int, r: int = 3, points=None) -> tuple:
    """AT (m, n), G (n, r), BT (n, n) of F(m, r), n = m + r - 1, in float64.

    Args:
        m: outputs per tile along one axis.
        r: filter taps.
        points: the n - 1 finite interpolation points (infinity is the last);
            default ``POINTS[m]``.
    """
    points = np.asarray(POINTS[m] if points is None else points, dtype=np.float64)
    n = m + r - 1
    if len(points) != n - 1 or len(set(points.tolist())) != n - 1:
        raise ValueError(f"transform_matrices: F({m}, {r}) needs {n - 1} distinct points, got {points.tolist()}")
    at, g, bt = np.zeros((m, n)), np.zeros((n, r)), np.zeros((n, n))
    for j, p in enumerate(points):
        others = np.delete(points, j)
        at[:, j] = p ** np.arange(m)
        g[j] = p ** np.arange(r) / np.prod(p - others)
        bt[j, :n - 1] = np.poly(others)[::-1]      # np.poly: coefficients, highest power first
    at[m - 1, n - 1] = 1.0
    g[n - 1, r - 1] = 1.0
    bt[n - 1] = np.poly(points)[::-1]
    return at, g, bt


@functools.lru_cache(maxsize=None)
def _host_matrices(m: int, dtype_name: str) -> tuple:
    return tuple(a.astype(dtype_name) for a in transform_matrices(m))


def _matrices(m: int, like) -> tuple:
    """AT, G, BT of F(m, 3) in ``like``'s dtype, on its device."""
    device = backend.device_of(like)
    return tuple(backend.to_device(a, device) for a in _host_matrices(m, like.dtype.name))


def _sandwich(mat, a):
    """out[i, j, ...] = sum_(k, l) mat[i, k] mat[j, l] a[k, l, ...]: mat a mat^T on the two leading axes.

    Two matrix products: first over the leading axis, then over the second for each i.
    Shapes: mat (P, Q), a (Q, Q, ...) contiguous -> (P, P, R) with R = the rest, flattened.
    """
    xp = backend.get_array_module(a)
    p, q = mat.shape
    first = xp.matmul(mat, a.reshape(q, -1))                # (P, Q*R): rows transformed
    return xp.matmul(mat, first.reshape(p, q, -1))          # (P, P, R): columns, per row


class Conv2dWinograd(Function):
    # 3x3 kernel, stride 1. For each batch slice of n images, tiles of m x m outputs,
    # TH x TW of them per image (T = n*TH*TW), a = m + 2, G groups:
    # x (n,H,W,C) -> xpad (n, m*TH+2, m*TW+2, C) -> tiles d (a, a, G, n,TH,TW, C/G)
    # -> V = BT d B (a*a, G, T, C/G);  weight (O,C/G,3,3) -> U = G w G^T (a*a, G, C/G, O/G)
    # -> M[xi, g] = V[xi, g] @ U[xi, g] (a*a, T, G, O/G) -> Y = AT M A (m, m, n,TH,TW, O)
    # -> y (n, OH, OW, O) channels-last (cropped where m does not divide OH, OW)
    def __init__(self, tile: int, pads: tuple, groups: int):
        self.m, self.pads, self.groups = tile, pads, groups
        self.kernel = (3, 3)   # for readers of the graph (minidl.viz labels Functions by it)

    def _geometry(self, x_shape):
        n, c, h, w = x_shape
        (top, bottom), (left, right) = self.pads
        oh, ow = h + top + bottom - 2, w + left + right - 2
        return (oh, ow), (-(-oh // self.m), -(-ow // self.m))

    def _slices(self, x, c, o):
        (oh, ow), (th, tw) = self._geometry(x.shape)
        a = self.m + 2
        per_image = a * a * th * tw * (c + o) * x.itemsize
        budget = max(_SLICE_BYTES, -(-_MIN_TILES // (th * tw)) * per_image)
        return worker_slices(x, per_image, budget)

    def _weight_transform(self, weight):
        """U = G w G^T per filter, as (a*a, G, C/G, O/G) matrices."""
        xp = backend.get_array_module(weight)
        _, g, _ = _matrices(self.m, weight)
        o, cg = weight.shape[:2]
        a = self.m + 2
        taps_first = xp.ascontiguousarray(weight.transpose(2, 3, 0, 1))      # (3, 3, O, C/G)
        u = _sandwich(g, taps_first).reshape(a * a, self.groups, o // self.groups, cg)
        return xp.ascontiguousarray(u.transpose(0, 1, 3, 2))

    def _input_transform(self, x_l, part, c):
        """V = BT d B of every tile of the images ``part``: (a*a, G, T, C/G)."""
        xp = backend.get_array_module(x_l)
        m, a = self.m, self.m + 2
        (top, _), (left, _) = self.pads
        n, h, w = x_l[part].shape[:3]
        _, (th, tw) = self._geometry((n, c, h, w))
        cg = c // self.groups
        # Zeros below and right of the image cover the padding and the last tiles' overhang.
        xpad = xp.zeros((n, m * th + 2, m * tw + 2, c), dtype=x_l.dtype)
        xpad[:, top:top + h, left:left + w] = x_l[part]
        s_n, s_h, s_w, s_c = xpad.strides
        tiles = xp.lib.stride_tricks.as_strided(
            xpad, shape=(a, a, self.groups, n, th, tw, cg),
            strides=(s_h, s_w, cg * s_c, s_n, m * s_h, m * s_w, s_c))
        _, _, bt = _matrices(m, x_l)
        v = _sandwich(bt, xp.ascontiguousarray(tiles))
        return v.reshape(a * a, self.groups, n * th * tw, cg)

    def forward(self, x, weight, bias=None):
        xp = backend.get_array_module(x)
        n, c = x.shape[:2]
        o = weight.shape[0]
        m, a = self.m, self.m + 2
        (oh, ow), (th, tw) = self._geometry(x.shape)
        at, _, _ = _matrices(m, x)
        x_l = nhwc(x)
        u = self._weight_transform(weight)
        y_l = xp.empty((n, oh, ow, o), dtype=x.dtype)
        exact = oh == m * th and ow == m * tw

        def work(part):
            v = self._input_transform(x_l, part, c)
            count = v.shape[2] // (th * tw)
            prod = xp.empty((a * a, v.shape[2], self.groups, o // self.groups), dtype=x.dtype)
            xp.matmul(v, u, out=prod.transpose(0, 2, 1, 3))  # per group, written as (T, O) rows
            y_tiles = _sandwich(at, prod.reshape(a, a, -1)).reshape(m, m, count, th, tw, o)
            full = y_l[part] if exact else xp.empty((count, m * th, m * tw, o), dtype=x.dtype)
            full.reshape(count, th, m, tw, m, o)[...] = y_tiles.transpose(2, 3, 0, 4, 1, 5)
            if not exact:
                y_l[part] = full[:, :oh, :ow]
            if bias is not None:
                y_l[part] += bias
            return v

        slices = self._slices(x, c, o)
        transformed = map_pieces(x, work, slices)
        if is_grad_enabled():  # backward reuses the transformed tiles and weights
            self.slices, self.transformed, self.u = slices, transformed, u
            self.x_shape, self.w_shape = x.shape, weight.shape
        y = as_nchw(y_l)
        return y if prefers_channels_last(x) else xp.ascontiguousarray(y)

    def _output_grad_tiles(self, gy_l, part, o):
        """gM = A gy_tile AT for the images ``part``: (a*a, T, G, O/G)."""
        xp = backend.get_array_module(gy_l)
        m, a = self.m, self.m + 2
        gy_p = gy_l[part]
        count, oh, ow = gy_p.shape[:3]
        th, tw = -(-oh // m), -(-ow // m)
        if (oh, ow) != (m * th, m * tw):  # outputs past the image were dropped: their gradient is 0
            full = xp.zeros((count, m * th, m * tw, o), dtype=gy_p.dtype)
            full[:, :oh, :ow] = gy_p
            gy_p = full
        tiles = xp.ascontiguousarray(gy_p.reshape(count, th, m, tw, m, o).transpose(2, 4, 0, 1, 3, 5))
        at, _, _ = _matrices(m, gy_l)
        return _sandwich(at.T, tiles).reshape(a * a, count * th * tw, self.groups, o // self.groups)

    def _scatter_tiles(self, gd, x_shape):
        """gx of the images of one slice: the overlapping input-tile gradients added back.

        Shapes: gd (a, a, G, n, TH, TW, C/G) -> gx (n, H, W, C).
        """
        xp = backend.get_array_module(gd)
        m = self.m
        h, w = x_shape[2:]
        (top, _), (left, _) = self.pads
        count, th, tw, cg = gd.shape[3:]
        gxpad = xp.zeros((count, m * th + m, m * tw + m, self.groups, cg), dtype=gd.dtype)
        # Tile (i, j) covers rows m*i .. m*i + m + 1: its first m rows land in block i,
        # its last 2 rows in the first 2 rows of block i + 1. Likewise across: 4 adds.
        for row0, rows in ((0, m), (m, 2)):
            for col0, cols in ((0, m), (m, 2)):
                blocks = gxpad[:, row0:row0 + m * th, col0:col0 + m * tw].reshape(
                    count, th, m, tw, m, self.groups, cg)
                blocks[:, :, :rows, :, :cols] += gd[row0:row0 + rows, col0:col0 + cols].transpose(3, 4, 0, 5, 1, 2, 6)
        return gxpad[:, top:top + h, left:left + w].reshape(count, h, w, self.groups * cg)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        need_x, need_w = self.needs_input_grad[:2]
        need_b = len(self.needs_input_grad) == 3 and self.needs_input_grad[2]
        m, a = self.m, self.m + 2
        x_shape, w_shape, u = self.x_shape, self.w_shape, self.u
        o, cg = w_shape[:2]
        _, (th, tw) = self._geometry(x_shape)
        u_t = xp.ascontiguousarray(u.transpose(0, 1, 3, 2)) if need_x else None    # (a*a, G, O/G, C/G)
        gy_l = nhwc(gy)
        _, g, bt = _matrices(m, gy)
        gx_l = xp.empty((x_shape[0],) + tuple(x_shape[2:]) + (x_shape[1],), dtype=gy.dtype) if need_x else None

        def work(index):
            part, v = self.slices[index], self.transformed[index]
            gm = self._output_grad_tiles(gy_l, part, o).transpose(0, 2, 1, 3)   # (a*a, G, T, O/G), a view
            if need_x:
                gv = xp.matmul(gm, u_t)                     # (a*a, G, T, C/G)
                gd = _sandwich(bt.T, gv.reshape(a, a, -1))
                gx_l[part] = self._scatter_tiles(gd.reshape(a, a, self.groups, -1, th, tw, cg), x_shape)
            gu = xp.matmul(v.transpose(0, 1, 3, 2), gm) if need_w else None   # gU (a*a, G, C/G, O/G)
            # This slice's share of the bias gradient, row after row (NumPy's order, as the
            # im2col path: a data-parallel split of the batch then changes few roundings).
            gb = gy_l[part].reshape(-1, o).sum(axis=0) if need_b else None
            return gu, gb

        parts = map_pieces(gy, work, range(len(self.slices)))
        gw = gb = None
        if need_b:
            gb = xp.zeros(o, dtype=gy.dtype) if not parts else parts[0][1]
            for _, part in parts[1:]:  # in slice order: the same result for any thread count
                gb = gb + part
        if need_w:
            gu = xp.zeros_like(u) if not parts else parts[0][0]
            for part, _ in parts[1:]:
                gu = gu + part
            gw = _sandwich(g.T, gu.reshape(a, a, -1))                            # G^T gU G: (3, 3, G*C/G*O/G)
            gw = gw.reshape(3, 3, self.groups, cg, o // self.groups).transpose(2, 4, 3, 0, 1).reshape(w_shape)
        gx = None
        if need_x:
            gx = as_nchw(gx_l) if prefers_channels_last(gy) else xp.ascontiguousarray(as_nchw(gx_l))
        assert gx is None or gx.shape == tuple(x_shape)
        assert gw is None or gw.shape == tuple(w_shape)
        assert gb is None or gb.shape == (o,)
        return (gx, gw) if len(self.needs_input_grad) == 2 else (gx, gw, gb)
