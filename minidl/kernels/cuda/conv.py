"""Convolution on a GPU: the reference's im2col + GEMM, with the copies as raw CUDA kernels.

The algorithm is the reference's (``minidl.functional.conv``): im2col copies every
window into a column, one batched matrix product (cuBLAS) per group of channels
does the rest, and backward is two more products plus col2im. Here im2col and
col2im are one raw kernel each (``launches.py``) instead of KH*KW strided copies, the
batch runs in slices whose columns fit GPU_BYTES, and at stride 1 the input gradient
is a correlation of gy with the flipped weights when that is the cheaper copy
(``convolution.input_grad_by_correlation``).
"""
from __future__ import annotations

from ... import backend
from ...window import output_hw, transposed_padding
from ..convolution import ConvolutionKernel, input_grad_by_correlation
from ..cpu.slices import GPU_BYTES, batch_slices
from . import launches


class RawIm2colConv2d(ConvolutionKernel):
    # For each batch slice of n images:
    # x (n,C,H,W) -> col (C,KH,KW,n,OH,OW) = (G, C/G*KH*KW, n*OH*OW)
    # weight (O,C/G,KH,KW) = (G, O/G, C/G*KH*KW)
    # y_t = weight_g @ col_g: (G, O/G, n*OH*OW) = (O,n,OH,OW) -> y (n,O,OH,OW)
    algorithm = "im2col, raw CUDA copies"

    def _col(self, x, kernel, stride, pads):
        """im2col of x as G matrices (G, C/G*KH*KW, n*OH*OW)."""
        out_hw = output_hw("conv2d", x.shape[2:], kernel, stride, pads)
        col = launches.im2col(x, kernel, stride, pads, out_hw)
        return col.reshape(self.groups, -1, x.shape[0] * out_hw[0] * out_hw[1])

    def _gy_matrices(self, gy):
        """gy (n, O, OH, OW) as G matrices (G, O/G, n*OH*OW): forward's y_t layout, a contiguous copy."""
        xp = backend.get_array_module(gy)
        return xp.ascontiguousarray(gy.transpose(1, 0, 2, 3)).reshape(self.groups, gy.shape[1] // self.groups, -1)

    def _slices(self, n: int, channels: int, out_hw: tuple, itemsize: int) -> list:
        per_image = channels * self.kernel[0] * self.kernel[1] * out_hw[0] * out_hw[1] * itemsize
        return batch_slices(n, per_image, GPU_BYTES)

    def forward(self, x, weight, bias=None):
        xp = backend.get_array_module(x)
        x = xp.ascontiguousarray(x)
        self.x, self.weight, self.x_shape, self.w_shape = x, weight, x.shape, weight.shape
        o = weight.shape[0]
        oh, ow = output_hw("conv2d", x.shape[2:], self.kernel, self.stride, self.pads)
        w_mat = weight.reshape(self.groups, o // self.groups, -1)
        y = xp.empty((x.shape[0], o, oh, ow), dtype=x.dtype)
        for part in self._slices(x.shape[0], x.shape[1], (oh, ow), x.itemsize):
            y_t = xp.matmul(w_mat, self._col(x[part], self.kernel, self.stride, self.pads))
            y_t = y_t.reshape(o, -1, oh, ow).transpose(1, 0, 2, 3)
            if bias is None:
                y[part] = y_t
            else:   # the bias is added during the layout copy instead of in a pass of its own
                xp.add(y_t, bias.reshape(1, o, 1, 1), out=y[part])
            self.finish_slice(y, part, self.residual)
        return y

    def _gy_columns(self, gy):
        """gy (n, O, OH, OW) as G matrices (G, n*OH*OW, O/G), a contiguous copy: gy_matrices transposed."""
        xp = backend.get_array_module(gy)
        n, o, oh, ow = gy.shape
        grouped = gy.reshape(n, self.groups, o // self.groups, oh, ow).transpose(1, 0, 3, 4, 2)
        return xp.ascontiguousarray(grouped).reshape(self.groups, n * oh * ow, o // self.groups)

    def _weight_grad(self, gy):
        """gw = sum over slices of gy @ col(x).T, per group, in slice order: (O, C/G, KH, KW).

        Computed transposed, gw.T = col @ gy.T: CuPy's batched matmul copies every
        non-contiguous operand, and col.T would be a copy of the whole column matrix
        (C*KH*KW x n*OH*OW) per slice. Here col is the left operand as it lies, gy is
        copied into (G, n*OH*OW, O/G) (one copy of gy per slice, as before), and
        only the weight-sized product is read transposed when it is added up.
        """
        xp = backend.get_array_module(gy)
        gw = xp.zeros((self.groups, self.w_shape[0] // self.groups, self.weight[0].size), dtype=gy.dtype)
        for part in self._slices(self.x_shape[0], self.x_shape[1], gy.shape[2:], gy.itemsize):
            col = self._col(self.x[part], self.kernel, self.stride, self.pads)   # (G, C/G*KH*KW, n*OH*OW)
            gw += xp.matmul(col, self._gy_columns(gy[part])).transpose(0, 2, 1)
        return gw.reshape(self.w_shape)

    def _input_grad_col2im(self, gy):
        """gx = col2im(W^T @ gy) per slice: (G, C/G*KH*KW, O/G) @ (G, O/G, n*OH*OW) -> (C,KH,KW,n,OH,OW)."""
        xp = backend.get_array_module(gy)
        w_t = self.weight.reshape(self.groups, self.w_shape[0] // self.groups, -1).transpose(0, 2, 1)
        gx = xp.empty(self.x_shape, dtype=gy.dtype)
        for part in self._slices(self.x_shape[0], self.x_shape[1], gy.shape[2:], gy.itemsize):
            gcol = xp.matmul(w_t, self._gy_matrices(gy[part]))
            gcol = gcol.reshape((self.x_shape[1],) + self.kernel + (-1,) + gy.shape[2:])
            gx[part] = launches.col2im(gcol, gx[part].shape, self.stride, self.pads)
        return gx

    def _input_grad_correlation(self, gy):
        """gx of a stride-1 conv: gy, padded by ``transposed_padding``, correlated with the flipped weights.

        Shapes: gy (n,O,OH,OW) -> gcol (G, O/G*KH*KW, n*H*W); flipped weights (G, C/G, O/G*KH*KW)
        -> (G, C/G, n*H*W) = (C,n,H,W) -> gx (n,C,H,W).
        """
        xp = backend.get_array_module(gy)
        o, cg, kh, kw = self.w_shape
        n, c, h, w = self.x_shape
        flipped = self.weight[:, :, ::-1, ::-1].reshape(self.groups, o // self.groups, cg, kh, kw)
        w_mat = xp.ascontiguousarray(flipped.transpose(0, 2, 1, 3, 4)).reshape(self.groups, cg, -1)
        pads = transposed_padding(self.kernel, self.pads)
        gy = xp.ascontiguousarray(gy)
        gx = xp.empty(self.x_shape, dtype=gy.dtype)
        for part in self._slices(n, o, (h, w), gy.itemsize):
            gx_t = xp.matmul(w_mat, self._col(gy[part], self.kernel, (1, 1), pads))
            gx[part] = gx_t.reshape(c, -1, h, w).transpose(1, 0, 2, 3)
        return gx

    def gradients(self, gy, need_x, need_w, need_b):
        gw = self._weight_grad(gy) if need_w else None
        gx = None
        if need_x:
            if input_grad_by_correlation(self.kernel, self.stride, self.pads, self.x_shape, gy.shape):
                gx = self._input_grad_correlation(gy)
            else:
                gx = self._input_grad_col2im(gy)
        gb = gy.sum(axis=(0, 2, 3)) if need_b else None
        return gx, gw, gb
