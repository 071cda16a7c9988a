"""CUDA C sources of minidl's hand-written kernels (launched from ``launches.py``).

Each kernel is the raw-CUDA twin of an ``xp`` function that stays the reference:
im2col / col2im (``minidl/functional/conv.py``), max pooling forward / backward
(``minidl/functional/pooling.py``), batch norm's centred affine map (the reference's
``(x - mean) * scale + shift`` in ``minidl/functional/normalization.py``) and the
bilinear resize (``minidl/data/transforms.py``). Shared rules, so that each one is easy to check:

* one thread per *output* element, in a 1-D grid-stride loop with 64-bit indices
  (any grid size covers any array, and no index overflows past 2**31 elements);
* gathers, never scatters: a thread reads what it needs and writes only its own
  element, so there are no atomics, no shared memory, no ``__syncthreads``, and
  every sum is added by one thread in a fixed order (results are reproducible);
  where the ``xp`` twin accumulates, the kernel adds the same terms in the same
  order, so the two agree to the last bit;
* compiled with ``--fmad=false``: ``a * b + c`` rounds twice, as the twin's
  separate NumPy/CuPy passes do, instead of once in a fused multiply-add;
* no headers and no math library: NVRTC has no standard headers, and the tests
  compile the very same text with g++ (tests/cuda_emulation.py), so every
  constant a kernel needs (-inf for pooling's padding) arrives as an argument.

The element type is ``real_t`` (float or double) and pooling's argmax type
``index_t``; ``cuda_source`` puts their typedefs in front of the kernel text.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

# NVRTC options for every kernel (see the module docstring).
KERNEL_OPTIONS = ("--fmad=false",)

# C spelling of the NumPy dtypes a kernel can be built for.
REAL_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
INDEX_TYPES = {np.dtype(np.int8): "signed char", np.dtype(np.int16): "short",
               np.dtype(np.int32): "int", np.dtype(np.int64): "long long"}


class KernelSource(NamedTuple):
    body: str          # CUDA C text defining ``extern "C" __global__ void <name>(...)``
    uses_index: bool   # whether it needs the ``index_t`` typedef too


_IM2COL = r"""
// im2col: x (N,C,H,W) -> col (C,KH,KW,N,OH,OW), one thread per col element
// (consecutive threads write consecutive memory):
//   col[c,kh,kw,n,oh,ow] = x[n, c, oh*SH + kh - top, ow*SW + kw - left], or 0 in the padding.
extern "C" __global__ void minidl_im2col(
        const real_t* __restrict__ x, real_t* __restrict__ col,
        const long long n_size, const long long c_size, const long long h_size, const long long w_size,
        const long long kh_size, const long long kw_size, const long long oh_size, const long long ow_size,
        const long long sh, const long long sw, const long long top, const long long left) {
    const long long total = c_size * kh_size * kw_size * n_size * oh_size * ow_size;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        long long rest = i;
        const long long ow = rest % ow_size; rest /= ow_size;
        const long long oh = rest % oh_size; rest /= oh_size;
        const long long n = rest % n_size; rest /= n_size;
        const long long kw = rest % kw_size; rest /= kw_size;
        const long long kh = rest % kh_size;
        const long long c = rest / kh_size;
        const long long row = oh * sh + kh - top;
        const long long column = ow * sw + kw - left;
        const bool inside = row >= 0 && row < h_size && column >= 0 && column < w_size;
        col[i] = inside ? x[((n * c_size + c) * h_size + row) * w_size + column] : (real_t)0;
    }
}
"""

# The window range that col2im and pooling's backward share: padded row p is seen
# by window oh at kernel offset kh = p - oh*SH exactly when 0 <= kh < KH, that is
# for oh from max(0, floor((p - KH) / SH) + 1) up to min(floor(p / SH), OH - 1).
# Both kernels walk oh (and ow) *downwards*, i.e. kh (kw) upwards: the order in
# which their xp twins add the offsets, so the sums match bit for bit.
_WINDOW_RANGE = r"""
// The windows along one axis that see padded position p (kernel k, stride s, out windows):
// window o covers p exactly when 0 <= p - o*s < k.
__device__ void minidl_window_range(const long long p, const long long k, const long long s,
                                    const long long out, long long* first, long long* last) {
    *first = p >= k ? (p - k) / s + 1 : 0;
    *last = p / s < out - 1 ? p / s : out - 1;
}
"""

_COL2IM = _WINDOW_RANGE + r"""
// col2im, the adjoint of im2col: col (C,KH,KW,N,OH,OW) -> gx (N,C,H,W), one thread per
// pixel, summing the columns of every window that covers it (a gather: no atomics).
extern "C" __global__ void minidl_col2im(
        const real_t* __restrict__ col, real_t* __restrict__ gx,
        const long long n_size, const long long c_size, const long long h_size, const long long w_size,
        const long long kh_size, const long long kw_size, const long long oh_size, const long long ow_size,
        const long long sh, const long long sw, const long long top, const long long left) {
    const long long total = n_size * c_size * h_size * w_size;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        long long rest = i;
        const long long column = rest % w_size; rest /= w_size;
        const long long row = rest % h_size; rest /= h_size;
        const long long c = rest % c_size;
        const long long n = rest / c_size;
        const long long p = row + top, q = column + left;  // in the padded image
        long long oh_first, oh_last, ow_first, ow_last;
        minidl_window_range(p, kh_size, sh, oh_size, &oh_first, &oh_last);
        minidl_window_range(q, kw_size, sw, ow_size, &ow_first, &ow_last);
        real_t sum = 0;
        for (long long oh = oh_last; oh >= oh_first; --oh) {
            const long long kh = p - oh * sh;
            for (long long ow = ow_last; ow >= ow_first; --ow) {
                const long long kw = q - ow * sw;
                sum += col[((((c * kh_size + kh) * kw_size + kw) * n_size + n) * oh_size + oh) * ow_size + ow];
            }
        }
        gx[i] = sum;
    }
}
"""

_MAX_POOL_FORWARD = r"""
// Max pooling forward: x (N,C,H,W) -> y, argmax (N,C,OH,OW), one thread per output.
// Pixels in the padding read as pad_value (-inf). The rule is the xp twin's running
// maximum over the offsets k = kh*KW + kw in order: the maximum moves only on a
// strictly larger value (the first maximum wins ties) and argmax with it; a NaN
// becomes the maximum, as xp.maximum propagates it, without moving argmax.
extern "C" __global__ void minidl_max_pool2d_forward(
        const real_t* __restrict__ x, real_t* __restrict__ y, index_t* __restrict__ argmax,
        const long long n_size, const long long c_size, const long long h_size, const long long w_size,
        const long long kh_size, const long long kw_size, const long long oh_size, const long long ow_size,
        const long long sh, const long long sw, const long long top, const long long left,
        const real_t pad_value) {
    const long long total = n_size * c_size * oh_size * ow_size;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const long long ow = i % ow_size;
        const long long oh = (i / ow_size) % oh_size;
        const long long plane = i / (ow_size * oh_size);  // n * C + c
        const real_t* image = x + plane * h_size * w_size;
        const long long row0 = oh * sh - top, column0 = ow * sw - left;
        real_t best = pad_value;
        long long best_k = 0;
        for (long long kh = 0; kh < kh_size; ++kh) {
            const long long row = row0 + kh;
            const bool row_inside = row >= 0 && row < h_size;
            for (long long kw = 0; kw < kw_size; ++kw) {
                const long long column = column0 + kw;
                const real_t v = row_inside && column >= 0 && column < w_size ? image[row * w_size + column]
                                                                              : pad_value;
                const long long k = kh * kw_size + kw;
                if (k == 0) {
                    best = v;
                } else if (v > best) {
                    best = v;
                    best_k = k;
                } else if (v != v) {  // NaN
                    best = v;
                }
            }
        }
        y[i] = best;
        argmax[i] = (index_t)best_k;
    }
}
"""

_MAX_POOL_BACKWARD = _WINDOW_RANGE + r"""
// Max pooling backward: gy, argmax (N,C,OH,OW) -> gx (N,C,H,W), one thread per input
// pixel, summing gy over the windows that cover it and chose it (argmax == its offset).
extern "C" __global__ void minidl_max_pool2d_backward(
        const real_t* __restrict__ gy, const index_t* __restrict__ argmax, real_t* __restrict__ gx,
        const long long n_size, const long long c_size, const long long h_size, const long long w_size,
        const long long kh_size, const long long kw_size, const long long oh_size, const long long ow_size,
        const long long sh, const long long sw, const long long top, const long long left) {
    const long long total = n_size * c_size * h_size * w_size;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const long long column = i % w_size;
        const long long row = (i / w_size) % h_size;
        const long long plane = i / (w_size * h_size);  // n * C + c
        const long long base = plane * oh_size * ow_size;
        const long long p = row + top, q = column + left;  // in the padded image
        long long oh_first, oh_last, ow_first, ow_last;
        minidl_window_range(p, kh_size, sh, oh_size, &oh_first, &oh_last);
        minidl_window_range(q, kw_size, sw, ow_size, &ow_first, &ow_last);
        real_t sum = 0;
        for (long long oh = oh_last; oh >= oh_first; --oh) {
            const long long kh = p - oh * sh;
            for (long long ow = ow_last; ow >= ow_first; --ow) {
                const long long kw = q - ow * sw;
                const long long o = base + oh * ow_size + ow;
                if ((long long)argmax[o] == kh * kw_size + kw) {
                    sum += gy[o];
                }
            }
        }
        gx[i] = sum;
    }
}
"""

# Batch norm's per-row affine maps, the twins of the reference's centred affine map. They
# take the centre as an argument and subtract it first, so a channel whose mean is
# large next to its spread loses nothing: x * scale + (shift - mean * scale) would
# cancel catastrophically there. Per-row values (R,) give row r = i / inner its own
# centre, scale and shift (the caller tiles per-channel values over the images).
_CENTERED_AFFINE = r"""
// Batch norm forward / inference: x (R, inner) rows -> y = (x - center[r]) * scale[r] + shift[r],
// same shape; center, scale, shift (R,). Rounded step by step, as the xp twin's in-place passes.
extern "C" __global__ void minidl_centered_affine(
        const real_t* __restrict__ x, const real_t* __restrict__ center, const real_t* __restrict__ scale,
        const real_t* __restrict__ shift, real_t* __restrict__ y,
        const long long total, const long long inner) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const long long r = i / inner;
        y[i] = (x[i] - center[r]) * scale[r] + shift[r];
    }
}
"""

_CENTERED_AFFINE_ADD = r"""
// Batch norm backward: x, other (R, inner) rows ->
//   y = (other + ((x - center[r]) * scale[r] + shift[r])) * other_scale[r],
// same shape; center, scale, shift, other_scale (R,). The xp twin's order of operations.
extern "C" __global__ void minidl_centered_affine_add(
        const real_t* __restrict__ x, const real_t* __restrict__ center, const real_t* __restrict__ scale,
        const real_t* __restrict__ shift, const real_t* __restrict__ other,
        const real_t* __restrict__ other_scale, real_t* __restrict__ y,
        const long long total, const long long inner) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const long long r = i / inner;
        const real_t affine = (x[i] - center[r]) * scale[r] + shift[r];
        y[i] = (affine + other[i]) * other_scale[r];
    }
}
"""

_RESIZE_BILINEAR = r"""
// Bilinear resize: x (P,H,W) planes (P = N*C) -> y (P,OH,OW), one thread per output pixel.
// Taps come from the host (data/transforms.py's _linear_taps): output row r blends input
// rows row_lo[r], row_hi[r] with weight row_w[r] on the second, columns likewise. Along W
// first, then H, each blend as lo + (hi - lo) * w: the xp twin's arithmetic, step for step.
extern "C" __global__ void minidl_resize_bilinear(
        const real_t* __restrict__ x, real_t* __restrict__ y,
        const long long* __restrict__ row_lo, const long long* __restrict__ row_hi,
        const real_t* __restrict__ row_w,
        const long long* __restrict__ col_lo, const long long* __restrict__ col_hi,
        const real_t* __restrict__ col_w,
        const long long planes, const long long h_size, const long long w_size,
        const long long oh_size, const long long ow_size) {
    const long long total = planes * oh_size * ow_size;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const long long j = i % ow_size;
        const long long r = (i / ow_size) % oh_size;
        const long long plane = i / (ow_size * oh_size);
        const real_t* upper = x + (plane * h_size + row_lo[r]) * w_size;
        const real_t* lower = x + (plane * h_size + row_hi[r]) * w_size;
        const long long c0 = col_lo[j], c1 = col_hi[j];
        const real_t top = upper[c0] + (upper[c1] - upper[c0]) * col_w[j];
        const real_t bottom = lower[c0] + (lower[c1] - lower[c0]) * col_w[j];
        y[i] = top + (bottom - top) * row_w[r];
    }
}
"""

KERNELS = {
    "minidl_im2col": KernelSource(_IM2COL, False),
    "minidl_col2im": KernelSource(_COL2IM, False),
    "minidl_max_pool2d_forward": KernelSource(_MAX_POOL_FORWARD, True),
    "minidl_max_pool2d_backward": KernelSource(_MAX_POOL_BACKWARD, True),
    "minidl_centered_affine": KernelSource(_CENTERED_AFFINE, False),
    "minidl_centered_affine_add": KernelSource(_CENTERED_AFFINE_ADD, False),
    "minidl_resize_bilinear": KernelSource(_RESIZE_BILINEAR, False),
}


@functools.lru_cache(maxsize=None)
def cuda_source(name: str, real_dtype, index_dtype=None) -> str:
    """The complete source of kernel ``name`` for one element type (and argmax type).

    Args:
        name: a key of ``KERNELS``.
        real_dtype: float32 or float64 (anything ``np.dtype`` accepts).
        index_dtype: int8, int16, int32 or int64, for kernels that use ``index_t``.
    Returns:
        the typedefs followed by the kernel text (cached: the same string object each
        time, so the compiled-kernel cache hashes it once).
    Raises:
        ValueError for an unknown kernel or an unsupported dtype.
    """
    if name not in KERNELS:
        raise ValueError(f"cuda_source: unknown kernel {name!r}; expected one of {sorted(KERNELS)}")
    real = REAL_TYPES.get(np.dtype(real_dtype))
    if real is None:
        raise ValueError(f"cuda_source: {name} is built for float32 or float64, got {np.dtype(real_dtype)}")
    header = f"typedef {real} real_t;\n"
    if KERNELS[name].uses_index:
        index = INDEX_TYPES.get(np.dtype(index_dtype)) if index_dtype is not None else None
        if index is None:
            raise ValueError(f"cuda_source: {name} needs an int8/16/32/64 index dtype, got {index_dtype!r}")
        header += f"typedef {index} index_t;\n"
    return header + KERNELS[name].body
