"""Winograd's minimal filtering in one dimension: the transform matrices of F(m, r).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016).

F(m, r) computes m outputs of an r-tap correlation, y_i = sum_k g_k d_(i+k), from
n = m + r - 1 inputs with n multiplications instead of r*m:

    y = AT [ (G g) * (BT d) ]        (* elementwise; AT (m, n), G (n, r), BT (n, n))

The matrices come from polynomial arithmetic (Toom-Cook). Linear convolution is
polynomial multiplication: evaluate both factors at n points, multiply the values,
and interpolate the product back (Lagrange). Correlation is the transpose of that
recipe, so the evaluation matrix of the m-tap factor becomes AT and the
interpolation matrix, transposed, becomes BT. With finite points p_j and one point
at infinity (which picks the leading coefficient):
    AT[i, j] = p_j ** i                          (the last column: 1 in the last row)
    G[j, k]  = p_j ** k / prod_(l != j) (p_j - p_l)   (the last row: 1 in the last column)
    BT[j]    = coefficients of prod_(l != j) (x - p_l)  (the last row: of prod_l (x - p_l))

Any n - 1 distinct points give an exact algorithm; they differ in rounding. Large
points put large powers into AT and BT, small ones (1/2) large reciprocals into G,
and float32 then loses digits where transformed values of very different sizes
are added. The points below were chosen by measuring the float32 error against a
float64 reference on post-ReLU data, as a ratio to im2col's error on the same data,
among the small dyadic candidates (docs/performance.md lists them with their errors).
Dyadic points (0, +-1, +-2, +-1/2) keep AT and BT exact in binary; only G has
entries that round.
The tests check the identity y = AT [(G g) * (BT d)] for every d and g.
"""
from __future__ import annotations

import functools

import numpy as np

from ... import backend

# Interpolation points (besides infinity) of each supported F(m, r), keyed by (m, r).
POINTS = {
    (2, 3): (0, 1, -1),
    (4, 3): (0, 1, -1, 2, -0.5),
    (2, 5): (0, 1, -1, 2, -0.5),
    (4, 5): (0, 1, -1, 2, -2, 0.5, -0.5),
}


def transform_matrices(m: int, r: int = 3, points=None) -> tuple:
    """AT (m, n), G (n, r), BT (n, n) of F(m, r), n = m + r - 1, in float64.

    Args:
        m: outputs per tile along one axis.
        r: filter taps.
        points: the n - 1 finite interpolation points (infinity is the last);
            default ``POINTS[(m, r)]``.
    Raises:
        ValueError if the points are not n - 1 distinct numbers, or no default exists.
    """
    n = m + r - 1
    if points is None:
        if (m, r) not in POINTS:
            raise ValueError(f"transform_matrices: no default points for F({m}, {r}); "
                             f"defaults exist for {sorted(POINTS)}")
        points = POINTS[(m, r)]
    points = np.asarray(points, dtype=np.float64)
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
def _host_matrices(m: int, r: int, dtype_name: str) -> tuple:
    return tuple(a.astype(dtype_name) for a in transform_matrices(m, r))


def matrices(m: int, r: int, like) -> tuple:
    """AT, G, BT of F(m, r) in ``like``'s dtype, on its device."""
    device = backend.device_of(like)
    return tuple(backend.to_device(a, device) for a in _host_matrices(m, r, like.dtype.name))


def sandwich(mat, a):
    """out[i, j, ...] = sum_(k, l) mat[i, k] mat[j, l] a[k, l, ...]: mat a mat^T on the two leading axes.

    Two matrix products: first over the leading axis, then over the second for each i.
    Shapes: mat (P, Q), a (Q, Q, ...) contiguous -> (P, P, R) with R = the rest, flattened.
    """
    xp = backend.get_array_module(a)
    p, q = mat.shape
    first = xp.matmul(mat, a.reshape(q, -1))                # (P, Q*R): rows transformed
    return xp.matmul(mat, first.reshape(p, q, -1))          # (P, P, R): columns, per row
