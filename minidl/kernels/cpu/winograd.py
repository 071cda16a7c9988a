"""Winograd minimal filtering: stride-1 r x r convolutions with fewer multiplications.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016). The
1-D algorithm F(m, r), its matrices and the choice of interpolation points are in
_winograd_transforms.py: m outputs of an r-tap filter from n = m + r - 1 inputs with
n multiplications, y = AT [(G g) * (BT d)].

In two dimensions the 1-D algorithm runs along both axes of a tile:
    Y = AT [ (G g G^T) * (BT d B) ] A     d (n x n) input tile, Y (m x m) output tile,
so m*m outputs cost n*n multiplications instead of r*r*m*m: 2.25x fewer for
F(2x2, 3x3), 4x for F(4x4, 3x3), 100/36 = 2.78x for F(2x2, 5x5) and 400/64 = 6.25x
for F(4x4, 5x5). Neighbouring input tiles overlap by r - 1 pixels. With C input and
O output channels the elementwise product sums over channels, which makes it one
matrix product per tile position xi (n*n of them):

    M[xi] (tiles, O) = V[xi] (tiles, C) @ U[xi] (C, O)

where V = BT d B (every tile, every channel) and U = G g G^T (every filter) are the
transformed inputs and weights. The transforms are small matrix products too
(``sandwich``), so everything runs as BLAS calls on large arrays.

Backward is the adjoint of each step, in reverse: gM = A gy_tile AT (the output
transform transposed), then gU[xi] = V[xi]^T @ gM[xi] (summed over tiles) and
gV[xi] = gM[xi] @ U[xi]^T, then g = G^T gU G and gd = B gV BT, whose overlapping
tiles are added back onto the image. These are the exact gradients of what forward
computes.

Memory: backward needs V, but keeps only x (which the graph holds anyway: it is the
previous layer's saved output) and transforms each batch slice's tiles again. V of a
whole batch is (m + r - 1)^2 / m^2 times the input (2.25x for F(4x4, 3x3)); one
slice's V is sized to stay in cache, so transforming it again costs about what
reading the kept V back from memory did (docs/performance.md has both measured).

Layout: channels-last (N, H, W, C) memory throughout (see layout.py), so every
copy moves runs of C values. The code is written against ``xp``: forced on a GPU
(``conv2d(algorithm="winograd")``) it runs on CuPy and returns NCHW memory there.

Rounding: the transforms add and subtract values of different tiles with weights up
to 8 (F(4x4, 3x3)), so float32 results carry a few times im2col's rounding error
(tests/kernels/cpu/test_winograd.py bounds the factor; docs/performance.md has it).
"""
from __future__ import annotations

from ... import backend
from ..convolution import ConvolutionKernel
from .layout import as_nchw, nhwc
from .slices import WINOGRAD_BYTES, WINOGRAD_MIN_TILES, worker_slices
from .threads import map_pieces
from .winograd_transforms import POINTS, matrices, sandwich


class WinogradConv2d(ConvolutionKernel):
    # r x r kernel, stride 1. For each batch slice of n images, tiles of m x m outputs,
    # TH x TW of them per image (T = n*TH*TW), a = m + r - 1, G groups:
    # x (n,H,W,C) -> xpad (n, m*TH+r-1, m*TW+r-1, C) -> tiles d (a, a, G, n,TH,TW, C/G)
    # -> V = BT d B (a*a, G, T, C/G);  weight (O,C/G,r,r) -> U = G w G^T (a*a, G, C/G, O/G)
    # -> M[xi, g] = V[xi, g] @ U[xi, g] (a*a, T, G, O/G) -> Y = AT M A (m, m, n,TH,TW, O)
    # -> y (n, OH, OW, O) channels-last (cropped where m does not divide OH, OW)
    #
    # Args: tile m, kernel_size r; pads and groups as the convolution's; channels_last:
    # whether y (and gx) stay in channels-last memory (the CPU) or become NCHW (a GPU);
    # relu, residual: the ReLU and a residual added before it, in the output pass (inference); prepared: a frozen layer's
    # PreparedWeights (kernels/prepared_weights.py), so that U is computed once, not per call.
    keep_for_backward = True   # FastPath sets it False under no_grad: nothing is kept for backward then

    def __init__(self, tile: int, kernel_size: int, pads: tuple, groups: int, channels_last: bool = True,
                 relu: bool = False, prepared=None, residual=None):
        if (tile, kernel_size) not in POINTS:
            raise ValueError(f"WinogradConv2d: F({tile}x{tile}, {kernel_size}x{kernel_size}) is not supported; "
                             f"supported (tile, kernel): {sorted(POINTS)}")
        super().__init__((kernel_size, kernel_size), (1, 1), pads, groups, relu, residual)
        self.m, self.r, self.channels_last = tile, kernel_size, channels_last
        self.a = tile + kernel_size - 1               # input tile side
        self.prepared = prepared
        self.algorithm = f"winograd F({tile}x{tile}, {kernel_size}x{kernel_size})"

    def _geometry(self, x_shape):
        n, c, h, w = x_shape
        (top, bottom), (left, right) = self.pads
        oh, ow = h + top + bottom - (self.r - 1), w + left + right - (self.r - 1)
        return (oh, ow), (-(-oh // self.m), -(-ow // self.m))

    def _slices(self, x, c, o):
        (oh, ow), (th, tw) = self._geometry(x.shape)
        per_image = self.a * self.a * th * tw * (c + o) * x.itemsize
        return worker_slices(x, per_image, WINOGRAD_BYTES, th * tw, WINOGRAD_MIN_TILES)

    def _weight_transform(self, weight):
        """U = G w G^T per filter, as (a*a, G, C/G, O/G) matrices (a frozen layer's: computed once)."""
        if self.prepared is not None:
            return self.prepared.get(weight, ("winograd", self.m, self.r, self.groups),
                                     lambda: self._transform_weight(weight))
        return self._transform_weight(weight)

    def _transform_weight(self, weight):
        xp = backend.get_array_module(weight)
        _, g, _ = matrices(self.m, self.r, weight)
        o, cg = weight.shape[:2]
        a = self.a
        taps_first = xp.ascontiguousarray(weight.transpose(2, 3, 0, 1))      # (r, r, O, C/G)
        u = sandwich(g, taps_first).reshape(a * a, self.groups, o // self.groups, cg)
        return xp.ascontiguousarray(u.transpose(0, 1, 3, 2))

    def _input_transform(self, x_l, part, c):
        """V = BT d B of every tile of the images ``part``: (a*a, G, T, C/G)."""
        xp = backend.get_array_module(x_l)
        m, a, halo = self.m, self.a, self.r - 1
        (top, _), (left, _) = self.pads
        n, h, w = x_l[part].shape[:3]
        _, (th, tw) = self._geometry((n, c, h, w))
        cg = c // self.groups
        # Zeros below and right of the image cover the padding and the last tiles' overhang.
        xpad = xp.zeros((n, m * th + halo, m * tw + halo, c), dtype=x_l.dtype)
        xpad[:, top:top + h, left:left + w] = x_l[part]
        s_n, s_h, s_w, s_c = xpad.strides
        tiles = xp.lib.stride_tricks.as_strided(
            xpad, shape=(a, a, self.groups, n, th, tw, cg),
            strides=(s_h, s_w, cg * s_c, s_n, m * s_h, m * s_w, s_c))
        _, _, bt = matrices(m, self.r, x_l)
        v = sandwich(bt, xp.ascontiguousarray(tiles))
        return v.reshape(a * a, self.groups, n * th * tw, cg)

    def forward(self, x, weight, bias=None):
        xp = backend.get_array_module(x)
        n, c = x.shape[:2]
        o = weight.shape[0]
        m, a = self.m, self.a
        (oh, ow), (th, tw) = self._geometry(x.shape)
        at, _, _ = matrices(m, self.r, x)
        x_l = nhwc(x)
        u = self._weight_transform(weight)
        y_l = xp.empty((n, oh, ow, o), dtype=x.dtype)
        residual_l = None if self.residual is None else nhwc(self.residual)
        exact = oh == m * th and ow == m * tw

        def work(part):
            v = self._input_transform(x_l, part, c)
            count = v.shape[2] // (th * tw)
            prod = xp.empty((a * a, v.shape[2], self.groups, o // self.groups), dtype=x.dtype)
            xp.matmul(v, u, out=prod.transpose(0, 2, 1, 3))  # per group, written as (T, O) rows
            y_tiles = sandwich(at, prod.reshape(a, a, -1)).reshape(m, m, count, th, tw, o)
            full = y_l[part] if exact else xp.empty((count, m * th, m * tw, o), dtype=x.dtype)
            full.reshape(count, th, m, tw, m, o)[...] = y_tiles.transpose(2, 3, 0, 4, 1, 5)
            if not exact:
                y_l[part] = full[:, :oh, :ow]
            if bias is not None:
                y_l[part] += bias
            self.finish_slice(y_l, part, residual_l)

        slices = self._slices(x, c, o)
        map_pieces(x, work, slices)
        self.x_shape, self.w_shape = x.shape, weight.shape
        if self.keep_for_backward:  # backward transforms each slice's tiles again (module doc: why)
            self.slices, self.x_l, self.u = slices, x_l, u
        y = as_nchw(y_l)
        return y if self.channels_last else xp.ascontiguousarray(y)

    def _output_grad_tiles(self, gy_l, part, o):
        """gM = A gy_tile AT for the images ``part``: (a*a, T, G, O/G)."""
        xp = backend.get_array_module(gy_l)
        m, a = self.m, self.a
        gy_p = gy_l[part]
        count, oh, ow = gy_p.shape[:3]
        th, tw = -(-oh // m), -(-ow // m)
        if (oh, ow) != (m * th, m * tw):  # outputs past the image were dropped: their gradient is 0
            full = xp.zeros((count, m * th, m * tw, o), dtype=gy_p.dtype)
            full[:, :oh, :ow] = gy_p
            gy_p = full
        tiles = xp.ascontiguousarray(gy_p.reshape(count, th, m, tw, m, o).transpose(2, 4, 0, 1, 3, 5))
        at, _, _ = matrices(m, self.r, gy_l)
        return sandwich(at.T, tiles).reshape(a * a, count * th * tw, self.groups, o // self.groups)

    def _scatter_tiles(self, gd, x_shape):
        """gx of the images of one slice: the overlapping input-tile gradients added back.

        Shapes: gd (a, a, G, n, TH, TW, C/G) -> gx (n, H, W, C).
        """
        xp = backend.get_array_module(gd)
        m, a = self.m, self.a
        h, w = x_shape[2:]
        (top, _), (left, _) = self.pads
        count, th, tw, cg = gd.shape[3:]
        # Tile (i, j) covers rows m*i .. m*i + a - 1: cut into bands of m rows, its band k
        # lands in row block i + k (the last band may be shorter). Likewise across.
        bands = [(k * m, min(m, a - k * m)) for k in range(-(-a // m))]
        extra = m * (len(bands) - 1)
        gxpad = xp.zeros((count, m * th + extra, m * tw + extra, self.groups, cg), dtype=gd.dtype)
        for row0, rows in bands:
            for col0, cols in bands:
                blocks = gxpad[:, row0:row0 + m * th, col0:col0 + m * tw].reshape(
                    count, th, m, tw, m, self.groups, cg)
                blocks[:, :, :rows, :, :cols] += gd[row0:row0 + rows, col0:col0 + cols].transpose(3, 4, 0, 5, 1, 2, 6)
        return gxpad[:, top:top + h, left:left + w].reshape(count, h, w, self.groups * cg)

    def gradients(self, gy, need_x, need_w, need_b):
        xp = backend.get_array_module(gy)
        m, a, r = self.m, self.a, self.r
        x_shape, w_shape, u = self.x_shape, self.w_shape, self.u
        o, cg = w_shape[:2]
        _, (th, tw) = self._geometry(x_shape)
        u_t = xp.ascontiguousarray(u.transpose(0, 1, 3, 2)) if need_x else None    # (a*a, G, O/G, C/G)
        gy_l = nhwc(gy)
        _, g, bt = matrices(m, r, gy)
        gx_l = xp.empty((x_shape[0],) + tuple(x_shape[2:]) + (x_shape[1],), dtype=gy.dtype) if need_x else None

        def work(index):
            part = self.slices[index]
            v = self._input_transform(self.x_l, part, x_shape[1])            # V again, in cache
            gm = self._output_grad_tiles(gy_l, part, o).transpose(0, 2, 1, 3)   # (a*a, G, T, O/G), a view
            if need_x:
                gv = xp.matmul(gm, u_t)                     # (a*a, G, T, C/G)
                gd = sandwich(bt.T, gv.reshape(a, a, -1))
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
            gw = sandwich(g.T, gu.reshape(a, a, -1))                             # G^T gU G: (r, r, G*C/G*O/G)
            gw = gw.reshape(r, r, self.groups, cg, o // self.groups).transpose(2, 4, 3, 0, 1).reshape(w_shape)
        gx = None
        if need_x:
            gx = as_nchw(gx_l) if self.channels_last else xp.ascontiguousarray(as_nchw(gx_l))
        return gx, gw, gb
