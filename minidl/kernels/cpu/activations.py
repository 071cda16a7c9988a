"""ReLU, sigmoid, leaky ReLU and GELU on the CPU: one pass over cache-sized chunks, on the worker threads.

The references (``minidl.functional.activation``) are whole-array expressions: each
step (an exp, an add, a ``where``) streams the whole activation through memory and
leaves a temporary as large. Here each chunk of ELEMENTWISE_CHUNK_BYTES goes through
all the steps while it sits in cache, written into the output's chunk, and the chunks
are shared by the worker threads (``elementwise.chunked``). The formulas are also
branch-free where the references pick with ``where`` (a masked select over random
signs costs more than the arithmetic it saves on a CPU):

    ReLU         y = max(x, 0); backward gx = gy * (y > 0), keeping only y
    sigmoid      y = 1 / (1 + exp(-x)); exp overflows to inf for x << 0 and y is then 0,
                 the correctly rounded value, so the overflow is silenced, not avoided
    leaky ReLU   y = max(x, slope * x) for slope <= 1, min(x, slope * x) above;
                 backward gx = gy * (slope + (1 - slope) * (kept > 0))
    GELU         y = x Phi(x), and the slope d = Phi(x) + x phi(x) written in the same pass
                 when a backward will follow; backward gx = gy * d, keeping only d; in
                 float32 with a cheaper erfc than the reference's (below)

GELU's reference computes Phi(x) = erfc(-x / sqrt(2)) / 2 with Cody's erfc
(``minidl.special``), accurate to float64's last digits at the price of three rational
functions per element. A float32 result cannot use those digits, so float32 chunks take
Press et al.'s one-formula fit instead (Numerical Recipes, section 6.2: relative error
below 1.2e-7 for every z >= 0):

    erfc(z) = t exp(-z^2 + P(t)),   t = 1 / (1 + z / 2),   P a polynomial of degree 9

with exp(-z^2) = exp(-x^2 / 2) computed from x split as a + b, a a multiple of 1/16, so
that a^2 is exact and the tail keeps its relative accuracy (z^2 rounded to float32 would
cost up to 4e-6 of it near x = -12); phi(x) reuses exp(-x^2 / 2).

Outputs keep the input's layout (NCHW or channels-last); a gradient in another layout
than the kept array runs the reference's expression instead. (Tanh has no fast path:
NumPy's tanh is vectorised already, and chunking it measured slower.)
"""
from __future__ import annotations

import numpy as np

from ...special import erfc
from .elementwise import chunked, same_flat_layout

_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327
_SQRT_2_OVER_PI = 0.7978845608028654
_GELU_CUBIC = 0.044715
# Press et al.'s erfc fit: the coefficients of P(t), highest power first
_ERFC_FIT = (0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418,
             0.37409196, 1.00002368, -1.26551223)


def _map(work, *arrays):
    """A new array laid out as arrays[0], filled chunk by chunk by work(out chunk, *chunks)."""
    out = np.empty_like(arrays[0])
    chunked(work, out, *arrays)
    return out


class ChunkedReLU:
    # x (any shape) -> y = max(x, 0) in x's layout; backward gx = gy * (y > 0), keeping only y.
    algorithm = "chunked"   # what minidl.viz shows for the call

    def forward(self, x):
        y = np.empty_like(x)   # x's memory layout (channels-last stays channels-last)
        chunked(lambda y_c, x_c: np.maximum(x_c, 0, out=y_c), y, x)
        self.y = y
        return y

    def backward(self, gy, needs):
        y = self.y
        if not same_flat_layout(y, gy):
            return (gy * (y > 0),)

        def mask_times_gy(gx_c, y_c, gy_c):
            np.greater(y_c, 0, out=gx_c)   # 1.0 where y > 0, else 0.0
            gx_c *= gy_c

        gx = np.empty_like(y)
        chunked(mask_times_gy, gx, y, gy)
        return (gx,)


class ChunkedSigmoid:
    # x (any shape) -> y = 1 / (1 + exp(-x)) in x's layout; backward gx = gy * y * (1 - y), keeping y.
    algorithm = "chunked"

    def forward(self, x):
        def work(y_c, x_c):
            with np.errstate(over="ignore"):   # exp(-x) = inf for x << 0 gives y = 0, as it should
                np.negative(x_c, out=y_c)
                np.exp(y_c, out=y_c)
            y_c += 1
            np.reciprocal(y_c, out=y_c)
        self.y = _map(work, x)
        return self.y

    def backward(self, gy, needs):
        y = self.y
        if not same_flat_layout(y, gy):
            return (gy * y * (1 - y),)

        def work(gx_c, y_c, gy_c):
            np.subtract(1, y_c, out=gx_c)
            gx_c *= y_c
            gx_c *= gy_c
        return (_map(work, y, gy),)


class ChunkedLeakyReLU:
    # x (any shape) -> y = x where x > 0, slope * x elsewhere, in x's layout. Backward keeps
    # y for a slope >= 0 (then y > 0 exactly where x > 0), else x, as the reference does.
    algorithm = "chunked"

    def __init__(self, negative_slope: float):
        self.slope = negative_slope

    def forward(self, x):
        slope = self.slope
        pick = np.maximum if slope <= 1 else np.minimum   # the branch-free form of "x > 0 ? x : slope * x"

        def work(y_c, x_c):
            np.multiply(x_c, slope, out=y_c)
            pick(x_c, y_c, out=y_c)
        y = _map(work, x)
        self.kept = y if slope >= 0 else x
        return y

    def backward(self, gy, needs):
        kept, slope = self.kept, self.slope
        if not same_flat_layout(kept, gy):
            return (np.where(kept > 0, gy, gy * slope),)

        def work(gx_c, kept_c, gy_c):
            np.greater(kept_c, 0, out=gx_c)   # 1 where x > 0, else 0
            gx_c *= 1 - slope
            gx_c += slope
            gx_c *= gy_c
        return (_map(work, kept, gy),)


def _normal_cdf_float32(x):
    """(Phi(x), exp(-x^2 / 2)) of a float32 chunk, Phi through Press et al.'s erfc fit (module doc)."""
    y = np.abs(x)
    a = np.floor(y * 16)
    a /= 16                                        # y = a + b: a*a is exact in float32
    gauss = np.exp(a * a * -0.5)
    b_term = (y - a) * (y + a)
    b_term *= -0.5
    gauss *= np.exp(b_term)                        # exp(-x^2 / 2) = exp(-z^2), z = |x| / sqrt(2)
    t = y * (0.5 * _SQRT_HALF)
    t += 1
    np.reciprocal(t, out=t)                        # t = 1 / (1 + z / 2)
    poly = np.full_like(t, _ERFC_FIT[0])
    for c in _ERFC_FIT[1:]:
        poly *= t
        poly += c
    np.exp(poly, out=poly)
    poly *= t
    poly *= gauss
    poly *= 0.5                                    # erfc(z) / 2 = Phi(-|x|)
    # Phi(x) = Phi(-|x|) for x < 0, 1 - Phi(-|x|) for x >= 0, blended by arithmetic (no branch)
    cdf = (x >= 0).astype(np.float32)
    cdf *= 1 - 2 * poly
    cdf += poly
    return cdf, gauss


class ChunkedGELU:
    # x (any shape) -> y = x * Phi(x) (or its tanh approximation) in x's layout. The exact
    # form also writes the slope d = Phi(x) + x phi(x) while Phi is at hand (when a backward
    # will follow) and keeps d instead of x: backward is then gx = gy * d, one pass, where
    # computing Phi again would cost as much as the forward. The tanh form keeps x.
    algorithm = "chunked"
    keep_for_backward = True   # FastPath sets it False under no_grad: no slope is made then

    def __init__(self, approximate: str):
        self.approximate = approximate

    def _inner_tanh(self, x_c, out):
        """out = tanh(sqrt(2/pi) * (x + 0.044715 x^3)) for one chunk."""
        np.multiply(x_c, x_c, out=out)
        out *= _GELU_CUBIC
        out += 1
        out *= x_c
        out *= _SQRT_2_OVER_PI
        np.tanh(out, out=out)
        return out

    @staticmethod
    def _cdf_and_gauss(x_c, need_gauss: bool):
        """(Phi(x), exp(-x^2 / 2)) of a chunk: the float32 fit (which makes both), or Cody's erfc in
        float64 (the exp only when ``need_gauss``: inference has no slope to write)."""
        if x_c.dtype == np.float32:
            return _normal_cdf_float32(x_c)
        return 0.5 * erfc(x_c * -_SQRT_HALF), (np.exp(x_c * x_c * -0.5) if need_gauss else None)

    def forward(self, x):
        if self.approximate == "tanh":
            self.x = x

            def work(y_c, x_c):
                self._inner_tanh(x_c, y_c)
                y_c += 1
                y_c *= x_c
                y_c *= 0.5
            return _map(work, x)

        def work(y_c, x_c, *slope_c):
            cdf, gauss = self._cdf_and_gauss(x_c, bool(slope_c))
            np.multiply(cdf, x_c, out=y_c)
            if slope_c:                                     # d = Phi(x) + x phi(x)
                d = slope_c[0]
                np.multiply(gauss, _INV_SQRT_2PI, out=d)
                d *= x_c
                d += cdf
        y = np.empty_like(x)
        self.slope = np.empty_like(x) if self.keep_for_backward else None
        chunked(work, y, x, *([] if self.slope is None else [self.slope]))
        return y

    def backward(self, gy, needs):
        if self.approximate != "tanh":
            slope = self.slope
            if not same_flat_layout(slope, gy):
                return (gy * slope,)
            return (_map(lambda gx_c, d_c, gy_c: np.multiply(d_c, gy_c, out=gx_c), slope, gy),)
        x = self.x

        def work(gx_c, x_c, gy_c):
            t = self._inner_tanh(x_c, np.empty_like(x_c))
            # 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
            np.multiply(x_c, x_c, out=gx_c)
            gx_c *= 3 * _GELU_CUBIC
            gx_c += 1
            gx_c *= x_c
            gx_c *= 0.5 * _SQRT_2_OVER_PI
            gx_c *= 1 - t * t
            t += 1
            t *= 0.5
            gx_c += t
            gx_c *= gy_c
        if not same_flat_layout(x, gy):   # a gradient in another layout: copy it into x's
            gy_in_layout = np.empty_like(x)
            gy_in_layout[...] = gy
            gy = gy_in_layout
        return (_map(work, x, gy),)
