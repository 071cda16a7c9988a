"""im2col / col2im, padding and batch slicing shared by convolution and pooling.

A 2-D convolution slides a KH x KW window over a padded image. im2col copies every
window into a column of one big matrix, so that the whole convolution becomes a
single matrix product (which BLAS or cuBLAS runs near peak speed); col2im is its
adjoint, summing the columns back onto the image, which is what backward needs.

Neither ever loops over pixels. For a fixed kernel offset (kh, kw) the pixels that
the window sees, over all output positions, form one strided slice of the padded
image, ``xpad[..., kh::stride, kw::stride]`` (cut to OH x OW). im2col stacks those
KH*KW slices; it does so as one copy of a strided *view* (``as_strided``), which
NumPy and CuPy both copy in a single efficient pass. col2im loops over the offsets
and adds each slice back, one vectorised add per offset; within one offset the
slice elements are distinct, so no scatter-add (``np.add.at``) is ever needed, and
where windows overlap the successive adds accumulate.

Column layout. ``col`` has shape (C, KH, KW, N, OH, OW). Read as a matrix it is
(C*KH*KW, N*OH*OW): one row per weight element and one column per output pixel of
the whole batch, so the forward product is W (O, C*KH*KW) @ col, and the weight
gradient gy (O, N*OH*OW) @ col.T uses a transposed *view* of col, which BLAS reads
without copying. With groups the leading C axis splits as (groups, C/groups), so
each group's rows are a contiguous block.
"""
from __future__ import annotations

from .. import backend
from .._cpu_threads import balanced_slices
from . import _cuda_kernels as cuda_kernels
from ._window import output_hw


def pad2d(x, pads: tuple, value: float = 0.0, axes: tuple = (-2, -1)):
    """``x`` with its two spatial ``axes`` (by default the last two) padded by ``pads`` filled with ``value``.

    A new contiguous array, so when ``x`` is a transposed view the copy also
    transposes it for free; with no padding at all ``x`` itself comes back.

    Shapes: x (..., H, W) -> (..., top + H + bottom, left + W + right); with
    axes=(1, 2) a channels-last (N, H, W, C) -> (N, top + H + bottom, left + W + right, C).
    """
    xp = backend.get_array_module(x)
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return x  # nothing to pad: the input itself (possibly a view), no copy
    row_axis, col_axis = (axis % x.ndim for axis in axes)
    shape, inside = list(x.shape), [slice(None)] * x.ndim
    shape[row_axis] += top + bottom
    shape[col_axis] += left + right
    inside[row_axis] = slice(top, top + x.shape[row_axis])
    inside[col_axis] = slice(left, left + x.shape[col_axis])
    out = xp.full(shape, value, dtype=x.dtype)
    out[tuple(inside)] = x
    return out


def window(offset: int, stride: int, out: int) -> slice:
    """The positions that kernel offset ``offset`` sees over ``out`` outputs: offset, offset+stride, ..."""
    return slice(offset, offset + stride * (out - 1) + 1, stride)


def im2col(x, kernel: tuple, stride: tuple, pads: tuple):
    """Copy every convolution window of ``x`` into the columns of one array.

    Args:
        x: input images.
        kernel, stride: (KH, KW), (SH, SW).
        pads: ((top, bottom), (left, right)), zero-filled.
    Returns:
        col with col[c, kh, kw, n, oh, ow] = xpad[n, c, oh*SH + kh, ow*SW + kw].

    Shapes: x (N,C,H,W) -> xpad (C,N,Hp,Wp) -> col (C,KH,KW,N,OH,OW).
    On CUDA a raw kernel does it in one pass (``_cuda_kernels.im2col``).
    """
    if cuda_kernels.wanted(x):
        oh, ow = output_hw("im2col", x.shape[2:], kernel, stride, pads)
        return cuda_kernels.im2col(x, kernel, stride, pads, (oh, ow))
    return backend.get_array_module(x).ascontiguousarray(im2col_view(x, kernel, stride, pads))


def im2col_view(x, kernel: tuple, stride: tuple, pads: tuple):
    """im2col's result as a strided view of the padded x, before the copy (see im2col).

    Elements repeat where windows overlap, so write nothing through it; copy it
    (``im2col``) or copy it into part of a bigger array (a conv's columns with extra rows).

    Shapes: x (N,C,H,W) -> xpad (C,N,Hp,Wp) -> view (C,KH,KW,N,OH,OW).
    """
    xp = backend.get_array_module(x)
    n, c = x.shape[:2]
    (kh_size, kw_size), (sh, sw) = kernel, stride
    oh, ow = output_hw("im2col", x.shape[2:], kernel, stride, pads)
    # Channels first, so that each offset's pixels (C,N,OH,OW) land as col[:, kh, kw].
    xpad = pad2d(x.transpose(1, 0, 2, 3), pads)
    # The strided view windows[c, kh, kw, n, oh, ow] = xpad[c, n, oh*SH + kh, ow*SW + kw]
    # is im2col without a copy (elements repeat where windows overlap); one
    # contiguous copy of it is col. Same result as the loop
    #     for kh, kw: col[:, kh, kw] = xpad[:, :, kh::SH, kw::SW] (cut to OH, OW)
    # but a single copy lets NumPy/CuPy iterate it in one efficient pass.
    s_c, s_n, s_h, s_w = xpad.strides
    return xp.lib.stride_tricks.as_strided(
        xpad, shape=(c, kh_size, kw_size, n, oh, ow), strides=(s_c, s_h, s_w, s_n, s_h * sh, s_w * sw))


def col2im(col, x_shape: tuple, stride: tuple, pads: tuple):
    """The adjoint of im2col: add every column back onto the pixel it was copied from.

    Pixels seen by several windows receive the sum of their columns' values, which
    is exactly the gradient of im2col.

    Args:
        col: gradient with respect to im2col's output.
        x_shape: (N, C, H, W) of the original input.
        stride, pads: as given to im2col.
    Returns:
        gx, contiguous, shape x_shape.

    Shapes: col (C,KH,KW,N,OH,OW) -> gxpad (C,N,Hp,Wp) -> gx (N,C,H,W).
    On CUDA a raw kernel gathers each pixel's sum in one pass (``_cuda_kernels.col2im``).
    """
    if cuda_kernels.wanted(col):
        return cuda_kernels.col2im(col, x_shape, stride, pads)
    xp = backend.get_array_module(col)
    c, kh_size, kw_size, n, oh, ow = col.shape
    (sh, sw), ((top, bottom), (left, right)) = stride, pads
    h, w = x_shape[2:]
    gxpad = xp.zeros((c, n, top + h + bottom, left + w + right), dtype=col.dtype)
    for kh in range(kh_size):
        for kw in range(kw_size):
            gxpad[:, :, window(kh, sh, oh), window(kw, sw, ow)] += col[:, kh, kw]
    gx = xp.ascontiguousarray(gxpad[:, :, top:top + h, left:left + w].transpose(1, 0, 2, 3))
    assert gx.shape == tuple(x_shape)
    return gx


def batch_slices(x, per_sample_bytes: int, cpu_budget: int, gpu_budget: int = 512 * 2**20) -> list:
    """Split the batch axis of ``x`` into slices whose work buffers fit a budget.

    On the CPU, kernels that stream big temporaries run faster slice by slice: a
    small buffer stays in cache between passes and is recycled by the allocator
    (a fresh 150 MB buffer costs ~30 ms of page faults on every call), and peak
    memory drops too. GPUs prefer few large operations, so their budget is large.

    Args:
        x: the batch (N, ...); its device picks the budget.
        per_sample_bytes: temporary bytes one sample needs.
        cpu_budget, gpu_budget: bytes per slice (at least one sample per slice).
    Returns:
        a list of slices covering 0..N.
    """
    budget = cpu_budget if backend.device_of(x).type == "cpu" else gpu_budget
    step = max(1, budget // max(per_sample_bytes, 1))
    return [slice(i, min(i + step, x.shape[0])) for i in range(0, x.shape[0], step)]


def worker_slices(x, per_sample_bytes: int, cpu_budget: int) -> list:
    """``batch_slices`` for kernels whose slices run on the CPU workers (``_cpu_threads.map_pieces``).

    On the CPU the slice count is a multiple of the worker count, sizes within one of
    each other (``_cpu_threads.balanced_slices``), so the workers finish together; a
    GPU gets ``batch_slices``' default budget.
    """
    if backend.device_of(x).type == "cpu":
        return balanced_slices(x.shape[0], per_sample_bytes, cpu_budget)
    return batch_slices(x, per_sample_bytes, cpu_budget)
