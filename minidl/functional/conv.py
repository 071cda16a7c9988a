"""2-D convolution (cross-correlation, like every deep learning library): the public conv2d, and im2col.

im2col turns the convolution into matrix products, one per group:

    y[n, o, oh, ow] = sum_{c, kh, kw} W[o, c, kh, kw] * xpad[n, c, oh*S + kh, ow*S + kw] + b[o]
                    = (W as (O, C*KH*KW)) @ (col as (C*KH*KW, N*OH*OW))

Backward is two more products with the same matrices: the weight gradient
gy @ col.T and the column gradient W.T @ gy, which col2im folds back onto x. With
stride 1 the input gradient is computed instead as a convolution of its own: gy,
padded, correlated with the spatially flipped, channel-transposed weights (the
"transposed convolution" identity), which trades col2im's KH*KW accumulating passes
for one im2col copy.

Memory: ``col`` is KH*KW/stride^2 times bigger than x (for AlexNet's first layer at
batch 32 about 140 MB), so it is not kept for backward. Backward rebuilds it from
x, which the graph holds anyway; the copy is cheap next to the matrix products.
On the CPU the batch is also processed in slices whose col fits 16 MB, so even
the forward pass never holds a whole-batch col (see ``batch_slices``). Each big
temporary is deleted as soon as its product has consumed it. The slices are
independent, so on the CPU worker threads take them one at a time, each with a
single-threaded matrix product, and the copies around the products run on every
core too (minidl._cpu_threads).

Algorithms. ``conv2d`` picks one per call from the shapes and the device:
  - "winograd": on the CPU, a stride-1 convolution with a square kernel in
    ``WINOGRAD_KERNELS`` (3x3, 5x5) and at least ``WINOGRAD_MIN_CHANNELS`` input
    channels per group runs Winograd's minimal filtering (_winograd.py): 3x3 as
    F(2x2, 3x3) or F(4x4, 3x3), 2.25x or 4x fewer multiplications than im2col; 5x5
    as F(2x2, 5x5) or F(4x4, 5x5), 2.78x or 6.25x fewer. Of the tiles a kernel has,
    the one with fewer transformed values, (m+r-1)^2 per tile, for this output size
    (ties: the smaller, more accurate one): F(4x4) unless the map is tiny. The
    seed's conv2 (5x5, 96 -> 256 channels, groups=2, 27x27, batch 32; 2026-11-30):
    forward / backward im2col 96 / 211 ms, F(2x2, 5x5) 74 / 133, F(4x4, 5x5)
    34 / 55, PyTorch 64 / 128 (bench_kernels.py).
  - "im2col" for everything else: on the CPU in channels-last memory
    (_conv_channels_last.py), on a GPU the NCHW code below, whose copies have CUDA
    twins (_cuda_kernels.py).
``algorithm=`` (or the environment variable ``MINIDL_CONV_ALGORITHM``, read at every
call) forces one: "im2col", "winograd" (tile by the rule), "winograd_2x2" or
"winograd_4x4" (3x3 or 5x5); the Winograd ones need stride 1 and a kernel with that tile
(``_winograd.POINTS``), and run on a GPU too (xp code, no CUDA twin; their output is
then made NCHW-contiguous again).
"""
from __future__ import annotations

import os

from .. import backend
from .._cpu_threads import map_pieces
from ..autograd import Function, Tensor
from ._conv_channels_last import Conv2dChannelsLast
from ._im2col import col2im, im2col, worker_slices
from ._layout import prefers_channels_last
from ._winograd import POINTS, Conv2dWinograd
from ._window import output_hw, pair, resolve_padding

ALGORITHMS = ("auto", "im2col", "winograd", "winograd_2x2", "winograd_4x4")

# Below this many input channels per group the Winograd products are too thin to win
# (measured: see the README's performance section).
WINOGRAD_MIN_CHANNELS = 16
# Kernel sizes the "auto" rule gives to Winograd on the CPU (forcing works for every
# size with a tile in _winograd.POINTS).
WINOGRAD_KERNELS = (3, 5)


# The largest im2col buffer built at once on the CPU, in bytes: the batch is
# processed in slices (see batch_slices). 16 MB keeps BLAS near peak while the
# allocator recycles the buffer instead of page-faulting a fresh 100+ MB one.
_COL_BYTES = 16 * 2**20


class Conv2d(Function):
    # For each batch slice of n images:
    # x (n,C,H,W) -> col (C,KH,KW,n,OH,OW) = (G, C/G*KH*KW, n*OH*OW)
    # weight (O,C/G,KH,KW) = (G, O/G, C/G*KH*KW)
    # y_t = weight_g @ col_g: (G, O/G, n*OH*OW) = (O,n,OH,OW) -> y (n,O,OH,OW)
    def __init__(self, kernel: tuple, stride: tuple, pads: tuple, groups: int):
        self.kernel, self.stride, self.pads, self.groups = kernel, stride, pads, groups

    def _weight_matrices(self, weight):
        """weight (O, C/G, KH, KW) as G matrices (G, O/G, C/G*KH*KW), a free view."""
        return weight.reshape(self.groups, weight.shape[0] // self.groups, -1)

    def _gy_matrices(self, gy):
        """gy (n, O, OH, OW) as G matrices (G, O/G, n*OH*OW): forward's y_t layout, a contiguous copy."""
        xp = backend.get_array_module(gy)
        return xp.ascontiguousarray(gy.transpose(1, 0, 2, 3)).reshape(self.groups, gy.shape[1] // self.groups, -1)

    def _col(self, x, kernel):
        """im2col of x viewed as G matrices (G, C/G*KH*KW, n*OH*OW)."""
        col = im2col(x, kernel, self.stride, self.pads)
        n, oh, ow = col.shape[3:]
        return col.reshape(self.groups, -1, n * oh * ow)

    def _slices(self, x, weight):
        n, c, h, w = x.shape
        oh, ow = output_hw("conv2d", (h, w), weight.shape[2:], self.stride, self.pads)
        per_sample = c * weight[0, 0].size * oh * ow * x.itemsize
        return worker_slices(x, per_sample, _COL_BYTES), (oh, ow)

    def forward(self, x, weight, bias=None):
        xp = backend.get_array_module(x)
        o = weight.shape[0]
        w_mat = self._weight_matrices(weight)
        slices, (oh, ow) = self._slices(x, weight)
        y = xp.empty((x.shape[0], o, oh, ow), dtype=x.dtype)

        def work(part):
            col = self._col(x[part], weight.shape[2:])
            # One matrix product per group, all in one batched call; the result's
            # rows are the output channels in order, i.e. laid out (O, n, OH, OW).
            y_t = xp.matmul(w_mat, col)
            del col
            y_t = y_t.reshape(o, -1, oh, ow).transpose(1, 0, 2, 3)
            if bias is None:
                y[part] = y_t
            else:  # add the bias during the layout copy instead of in a pass of its own
                xp.add(y_t, bias.reshape(1, o, 1, 1), out=y[part])

        map_pieces(x, work, slices)
        self.save_for_backward(x, weight)  # both are held by the graph anyway: no extra memory
        return y

    def _input_grad_by_correlation(self) -> bool:
        """Whether gx can be computed as a correlation of gy (stride 1, padding <= kernel - 1).

        Then gx is itself a convolution: gy, padded by KH-1-top above and KH-1-bottom
        below (likewise KW across), correlated with the weights flipped in both spatial
        axes and with in/out channels swapped. Its im2col is one strided copy, where
        col2im needs KH*KW read-modify-write passes over the image (3x slower here).
        """
        (top, bottom), (left, right) = self.pads
        kh, kw = self.kernel
        return self.stride == (1, 1) and max(top, bottom) < kh and max(left, right) < kw

    def _prefers_correlation(self, x_shape, gy_shape) -> bool:
        """Use the correlation path when it applies and gy's im2col is no larger than x's.

        Its col holds O*KH*KW*H*W values per image against C*KH*KW*OH*OW for col2im's;
        when O is much larger than C (AlexNet's conv2: 256 vs 96) the bigger copy costs
        more than col2im saves (measured: 510 vs 390 ms backward at batch 32).
        """
        o, c = gy_shape[1], x_shape[1]
        same_or_smaller = o * x_shape[2] * x_shape[3] <= c * gy_shape[2] * gy_shape[3]
        return self._input_grad_by_correlation() and same_or_smaller

    def _flipped_weight_matrices(self, weight):
        """weight (O, C/G, KH, KW) -> (G, C/G, O/G*KH*KW): channels swapped, taps reversed."""
        xp = backend.get_array_module(weight)
        o, cg, kh, kw = weight.shape
        flipped = weight[:, :, ::-1, ::-1].reshape(self.groups, o // self.groups, cg, kh, kw)
        return xp.ascontiguousarray(flipped.transpose(0, 2, 1, 3, 4)).reshape(self.groups, cg, -1)

    def _input_grad_correlation(self, gy, weight, x_shape):
        """gx of a stride-1 conv as the correlation of padded gy with the flipped weights.

        Shapes: gy (N,O,OH,OW) -> per slice gcol (G, O/G*KH*KW, n*H*W);
        weight -> (G, C/G, O/G*KH*KW); product (G, C/G, n*H*W) = (C,n,H,W) -> gx (N,C,H,W).
        """
        xp = backend.get_array_module(gy)
        (top, bottom), (left, right) = self.pads
        kh, kw = self.kernel
        n, c, h, w = x_shape
        pads = ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right))
        w_mat = self._flipped_weight_matrices(weight)
        gx = xp.empty(x_shape, dtype=gy.dtype)

        def work(part):
            gcol = im2col(gy[part], self.kernel, (1, 1), pads)
            gcol = gcol.reshape(self.groups, -1, gcol.shape[3] * h * w)
            gx_t = xp.matmul(w_mat, gcol)
            del gcol
            gx[part] = gx_t.reshape(c, -1, h, w).transpose(1, 0, 2, 3)

        per_sample = gy.shape[1] * kh * kw * h * w * gy.itemsize
        map_pieces(gy, work, worker_slices(gy, per_sample, _COL_BYTES))
        return gx

    def _input_grad_col2im(self, gy, weight, x_shape):
        """gx of any conv: the column gradient W.T @ gy folded back onto x by col2im.

        Shapes: per slice gy (n,O,OH,OW) -> (G, O/G, n*OH*OW); weight^T (G, C/G*KH*KW, O/G)
        -> gcol (C,KH,KW,n,OH,OW) -> col2im -> gx (n,C,H,W).
        """
        xp = backend.get_array_module(gy)
        w_mat = self._weight_matrices(weight)
        gx = xp.empty(x_shape, dtype=gy.dtype)

        def work(part):
            gcol = xp.matmul(w_mat.transpose(0, 2, 1), self._gy_matrices(gy[part]))
            gcol = gcol.reshape((x_shape[1],) + self.kernel + (-1,) + gy.shape[2:])
            gx[part] = col2im(gcol, gx[part].shape, self.stride, self.pads)

        map_pieces(gx, work, self._slices(gx, weight)[0])
        return gx

    def _weight_grad(self, x, gy, weight):
        """gw = sum over the batch of gy @ col(x).T, per group.

        Shapes: per slice gy (n,O,OH,OW) -> (G, O/G, n*OH*OW); col (G, C/G*KH*KW, n*OH*OW)
        -> gw (G, O/G, C/G*KH*KW) -> (O, C/G, KH, KW).
        """
        xp = backend.get_array_module(x)

        def work(part):
            col = self._col(x[part], self.kernel)
            # col's transpose is a view that BLAS reads as such, without a copy.
            return xp.matmul(self._gy_matrices(gy[part]), col.transpose(0, 2, 1))

        # One product per slice (each as small as the weights), summed in slice order:
        # the same sum however many threads computed the products.
        products = map_pieces(x, work, self._slices(x, weight)[0])
        if not products:  # an empty batch: no slices, a zero gradient
            return xp.zeros(weight.shape, dtype=weight.dtype)
        gw = products[0]
        for product in products[1:]:
            gw += product
        return gw.reshape(weight.shape)

    def backward(self, gy):
        x, weight = self.saved_arrays
        need_x, need_w = self.needs_input_grad[:2]
        need_b = len(self.needs_input_grad) == 3 and self.needs_input_grad[2]
        gw = self._weight_grad(x, gy, weight) if need_w else None
        gx = None
        if need_x:
            by_correlation = self._prefers_correlation(x.shape, gy.shape)
            gx = (self._input_grad_correlation if by_correlation else self._input_grad_col2im)(gy, weight, x.shape)
        gb = gy.sum(axis=(0, 2, 3)) if need_b else None
        assert gx is None or gx.shape == x.shape
        assert gw is None or gw.shape == weight.shape
        assert gb is None or gb.shape == (weight.shape[0],)
        return (gx, gw) if len(self.needs_input_grad) == 2 else (gx, gw, gb)


def winograd_tile(out_hw: tuple, kernel_size: int, tiles: tuple) -> int:
    """The Winograd tile m with fewer transformed values, (m+r-1)^2 per tile, for this output size.

    Among ``tiles`` (ascending: those F(m x m, r x r) exists for, ``_winograd_tiles``);
    ties: the smaller, more accurate one.
    """
    def values(m):
        return (m + kernel_size - 1) ** 2 * -(-out_hw[0] // m) * -(-out_hw[1] // m)
    return min(tiles, key=values)


def _winograd_tiles(kernel: tuple, stride: tuple) -> tuple:
    """The tiles m with which Winograd can run this conv: () unless stride 1 and a square kernel it has points for."""
    if stride != (1, 1) or kernel[0] != kernel[1]:
        return ()
    return tuple(sorted(m for m, r in POINTS if r == kernel[0]))


def choose_algorithm(x, kernel: tuple, stride: tuple, groups: int, out_hw: tuple, algorithm: str) -> str:
    """The algorithm conv2d runs: "im2col", "winograd_2x2" or "winograd_4x4" (see the module doc).

    Raises:
        ValueError for an unknown name, or a Winograd algorithm forced on a conv it cannot do.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"conv2d: algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    tiles = _winograd_tiles(kernel, stride)
    if algorithm == "auto":
        channels = x.shape[1] // groups
        wanted = (prefers_channels_last(x) and kernel[0] in WINOGRAD_KERNELS and bool(tiles)
                  and channels >= WINOGRAD_MIN_CHANNELS)
        algorithm = "winograd" if wanted else "im2col"
    if algorithm == "im2col":
        return algorithm
    if algorithm == "winograd" and tiles:
        m = winograd_tile(out_hw, kernel[0], tiles)
        return f"winograd_{m}x{m}"
    if algorithm != "winograd" and int(algorithm[-1]) in tiles:
        return algorithm
    supported = ", ".join(f"F({m}x{m}, {r}x{r})" for m, r in sorted(POINTS, key=lambda p: (p[1], p[0])))
    raise ValueError(f"conv2d: algorithm {algorithm!r} needs stride 1 and a square kernel with a Winograd "
                     f"tile ({supported}), got kernel {kernel} and stride {stride}")


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
           groups: int = 1, algorithm: str | None = None) -> Tensor:
    """2-D convolution (cross-correlation) of a batch of images.

    Args:
        x: input Tensor (or array).
        weight: filters; with groups, filter o sees only input channels of its group.
        bias: optional per-output-channel offset.
        stride: int or (SH, SW).
        padding: int, (ph, pw), ((top, bottom), (left, right)), "valid", or "same"
            (TensorFlow's rule: output = ceil(in / stride), the odd pixel of total
            padding at the bottom/right). Padding is zeros.
        groups: split input and output channels into this many independent groups
            (AlexNet's two "streams" are groups=2).
        algorithm: None or "auto" picks by the rule in the module doc; "im2col",
            "winograd", "winograd_2x2" or "winograd_4x4" (3x3 or 5x5 kernels)
            force one (tests, teaching).
            None reads ``MINIDL_CONV_ALGORITHM`` (default "auto").
    Returns:
        y Tensor. On the CPU its memory is channels-last (see _layout.py); its shape
        and values are those of NCHW.

    Shapes: x (N, C, H, W), weight (O, C/groups, KH, KW), bias (O,) -> y (N, O, OH, OW)
    with OH = (H + top + bottom - KH) // SH + 1, likewise OW.
    Raises:
        ValueError for wrong ranks, channel/group mismatches, bad stride/padding, a
        kernel larger than the padded input, or an algorithm that cannot run this conv.
    """
    x_shape, w_shape = tuple(x.shape), tuple(weight.shape)
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"conv2d: expected x (N, C, H, W) and weight (O, C/groups, KH, KW), "
                         f"got x {x_shape} and weight {w_shape}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    c, o = x_shape[1], w_shape[0]
    if c % groups or o % groups:
        raise ValueError(f"conv2d: groups={groups} must divide both input channels ({c}) and "
                         f"output channels ({o}); x {x_shape}, weight {w_shape}")
    if w_shape[1] != c // groups:
        raise ValueError(f"conv2d: weight {w_shape} expects {w_shape[1]} input channels per group, "
                         f"but x {x_shape} with groups={groups} has {c // groups}")
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"conv2d: bias must have shape ({o},) for weight {w_shape}, got {tuple(bias.shape)}")
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        raise ValueError(f"conv2d: x, weight and bias must share one dtype, got x {x.dtype}, "
                         f"weight {weight.dtype}" + (f", bias {bias.dtype}" if bias is not None else ""))
    kernel = w_shape[2:]
    if min(kernel) < 1:
        raise ValueError(f"conv2d: kernel size must be positive, got weight {w_shape}")
    stride = pair("conv2d", "stride", stride)
    pads = resolve_padding("conv2d", padding, x_shape[2:], kernel, stride)
    out_hw = output_hw("conv2d", x_shape[2:], kernel, stride, pads)  # raises if the kernel does not fit
    if algorithm is None:
        algorithm = os.environ.get("MINIDL_CONV_ALGORITHM", "auto").strip() or "auto"
    data = x.data if isinstance(x, Tensor) else x
    chosen = choose_algorithm(data, tuple(kernel), stride, groups, out_hw, algorithm)
    if chosen.startswith("winograd"):
        fn = Conv2dWinograd(int(chosen[-1]), kernel[0], pads, groups)
    elif prefers_channels_last(data):
        fn = Conv2dChannelsLast(tuple(kernel), stride, pads, groups)
    else:
        fn = Conv2d(tuple(kernel), stride, pads, groups)
    return fn(x, weight) if bias is None else fn(x, weight, bias)
