"""Activations: ReLU, softmax and log-softmax."""
from __future__ import annotations

from .. import backend
from .._cpu_threads import map_pieces
from ..autograd import Function, Tensor
from ._layout import is_channels_last, nhwc


# Elements per chunk on the CPU (256 KB of float32): a chunk's inputs and output stay
# in cache, and the chunks are shared over minidl's worker threads.
_CHUNK = 2**16


def _flat(a):
    """The contiguous memory behind ``a`` as a 1-D view (C order or channels-last), else None."""
    if a.flags.c_contiguous:
        return a.reshape(-1)
    if is_channels_last(a):
        return nhwc(a).reshape(-1)
    return None


def _chunked(work, out, *arrays) -> bool:
    """work(out chunk, *chunks) over cache-sized chunks on the CPU workers; False if it cannot.

    It can when every array lies in the same contiguous layout as ``out`` (an
    activation and its gradient usually do); otherwise the caller does it whole.
    """
    flats = [_flat(a) for a in (out,) + arrays]
    same = all(f is not None for f in flats) and all(a.strides == out.strides for a in arrays)
    if not same or backend.device_of(out).type != "cpu":
        return False
    size = flats[0].size
    parts = [slice(i, min(i + _CHUNK, size)) for i in range(0, size, _CHUNK)]
    map_pieces(out, lambda part: work(*(f[part] for f in flats)), parts, nbytes=out.nbytes)
    return True


class ReLU(Function):
    # x (any shape) -> y = max(x, 0), same shape and memory layout. Backward needs only
    # where y > 0, so it keeps the output (which it shares with the next layer) instead
    # of x. On the CPU both run in chunks on the worker threads, one pass each.
    def forward(self, x):
        xp = backend.get_array_module(x)
        y = xp.empty_like(x)   # x's memory layout (channels-last stays channels-last)
        if not _chunked(lambda y_c, x_c: xp.maximum(x_c, 0, out=y_c), y, x):
            xp.maximum(x, 0, out=y)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved_arrays
        xp = backend.get_array_module(gy)

        def mask_times_gy(gx_c, y_c, gy_c):
            xp.greater(y_c, 0, out=gx_c)   # 1.0 where y > 0, else 0.0
            gx_c *= gy_c

        gx = xp.empty_like(y)
        if not _chunked(mask_times_gy, gx, y, gy):
            gx = gy * (y > 0)
        assert gx.shape == y.shape
        return gx


class Softmax(Function):
    # x (..., K) -> y (..., K), each slice along `axis` sums to 1.
    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        xp = backend.get_array_module(x)
        z = xp.exp(x - x.max(axis=self.axis, keepdims=True))  # shift: exp never overflows
        y = z / z.sum(axis=self.axis, keepdims=True)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved_arrays
        # dx = y * (gy - <gy, y>) along the axis: the softmax Jacobian applied to gy.
        gx = y * (gy - (gy * y).sum(axis=self.axis, keepdims=True))
        assert gx.shape == y.shape
        return gx


def log_softmax_array(x, axis):
    """log(softmax(x)) computed stably as x - max - log(sum(exp(x - max)))."""
    xp = backend.get_array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


class LogSoftmax(Function):
    # x (..., K) -> y = log softmax(x), same shape.
    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        y = log_softmax_array(x, self.axis)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved_arrays
        xp = backend.get_array_module(y)
        gx = gy - xp.exp(y) * gy.sum(axis=self.axis, keepdims=True)
        assert gx.shape == y.shape
        return gx


def relu(x: Tensor) -> Tensor:
    """max(x, 0) elementwise. Shapes: any -> same."""
    return ReLU()(x)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """exp(x) / sum(exp(x)) along ``axis``, computed stably. Shapes: any -> same."""
    return Softmax(axis)(x)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """log(softmax(x)) along ``axis``, without overflow for large logits. Shapes: any -> same."""
    return LogSoftmax(axis)(x)
