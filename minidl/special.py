"""Special functions on arrays, written once against ``xp``: the complementary error function.

GELU needs the normal distribution's CDF, Phi(x) = erfc(-x / sqrt(2)) / 2. NumPy has no
erf (SciPy does, but minidl depends on NumPy alone), so this module computes erfc with
W. J. Cody's rational approximations ("Rational Chebyshev approximations for the error
function", Math. Comp. 23, 1969; the coefficients of his CALERF, as in netlib's SPECFUN),
accurate to about one unit in the last place of a float64 on each of three intervals:

    |x| <= 0.46875        erf(x) = x P1(x^2) / Q1(x^2),             erfc = 1 - erf
    0.46875 < |x| <= 4    erfc(x) = exp(-x^2) P2(x) / Q2(x)
    |x| > 4               erfc(x) = exp(-x^2) / x (1/sqrt(pi) - z P3(z) / Q3(z)),   z = 1 / x^2

and erfc(-x) = 2 - erfc(x). Every interval's formula runs on the whole array (each on
inputs clipped to its interval, so none overflows), and each element keeps its
interval's value: three times the arithmetic of a scalar loop, but vectorised, and the
same on a GPU.

It sits on the lowest floor, beside ``backend`` and ``window``, so that both the
references (``minidl.functional``) and the fast paths (``minidl.kernels``) may use it.
"""
from __future__ import annotations

from . import backend

_SMALL, _MEDIUM, _LARGE = 0.46875, 4.0, 30.0   # beyond 30, erfc underflows to 0 even in float64
_RSQRTPI = 0.56418958354775628695   # 1 / sqrt(pi)

# Highest power first (Horner's order); each denominator's leading coefficient is 1.
_P1 = (1.85777706184603153e-1, 3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
       3.20937758913846947e03)
_Q1 = (1.0, 2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03)
_P2 = (2.15311535474403846e-8, 5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
       2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03, 2.05107837782607147e03,
       1.23033935479799725e03)
_Q2 = (1.0, 1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02, 1.62138957456669019e03,
       3.29079923573345963e03, 4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03)
_P3 = (1.63153871373020978e-2, 3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
       1.60837851487422766e-2, 6.58749161529837803e-4)
_Q3 = (1.0, 2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1, 6.05183413124413191e-2,
       2.33520497626869185e-3)


def _horner(coefficients, t):
    """The polynomial with ``coefficients`` (highest power first, at least two) at ``t``."""
    value = coefficients[0] * t + coefficients[1]
    for c in coefficients[2:]:
        value = value * t + c
    return value


def _exp_minus_square(xp, y):
    """exp(-y^2) without the rounding error of y*y: y = a + b with a a multiple of 1/16, so a*a is exact."""
    a = xp.floor(y * 16) / 16
    return xp.exp(-a * a) * xp.exp(-(y - a) * (y + a))


def erfc(x):
    """The complementary error function 1 - erf(x), elementwise, in ``x``'s dtype.

    Accurate to a few units in the last place in float64 (relative error, so also far out
    in the tail, where 1 - erf(x) would cancel to 0); NaN stays NaN.

    Shapes: any -> same.
    """
    xp = backend.get_array_module(x)
    y = xp.abs(x)
    s = xp.minimum(y, _SMALL)
    small = 1 - s * _horner(_P1, s * s) / _horner(_Q1, s * s)
    t = xp.clip(y, _SMALL, _MEDIUM)
    medium = _horner(_P2, t) / _horner(_Q2, t)
    t = xp.clip(y, _MEDIUM, _LARGE)
    z = 1 / (t * t)
    large = (_RSQRTPI - z * _horner(_P3, z) / _horner(_Q3, z)) / t
    # Pick each element's interval by arithmetic, a + (condition) * (b - a), rather than
    # ``where``: every candidate is finite, and on a CPU the blend is several times faster.
    tail = _exp_minus_square(xp, xp.minimum(y, _LARGE)) * (large + (y <= _MEDIUM) * (medium - large))
    value = tail + (y <= _SMALL) * (small - tail)
    return value + (x < 0) * (2 - 2 * value)   # erfc(-y) = 2 - erfc(y)
