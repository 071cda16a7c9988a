"""Winograd convolution: the transform matrices, agreement with im2col, gradients, and float32
error against a float64 reference. (conv2d's rule for choosing it: tests/kernels/test_dispatch.py.)"""
import numpy as np
import pytest

import minidl
import minidl.functional as F
from minidl.gradcheck import check_gradients
from minidl.kernels.cpu import winograd_transforms as transforms
from minidl.kernels.cpu.winograd import WinogradConv2d

from support.arrays import channels_last, is_channels_last
from support.devices import DEVICES

TILES = ["winograd_2x2", "winograd_4x4"]          # the 3x3 kernels' tiles
TILES_5X5 = ["winograd_2x2", "winograd_4x4"]


@pytest.mark.parametrize("m,r", [(2, 3), (4, 3), (2, 5), (4, 5), (3, 2), (3, 5)])
def test_transform_matrices_compute_a_correlation(m, r):
    # y = AT [(G g) * (BT d)] must equal y_i = sum_k g_k d_(i+k) for every d and g: check
    # the bilinear identity on the basis, i.e. AT[i, j] G[j, k] BT[j, l] summed over j is [l == i + k].
    # Sizes without default points take the first n - 1 of 0, 1, -1, 2, -1/2, 1/2, -2.
    n = m + r - 1
    points = None if (m, r) in transforms.POINTS else (0, 1, -1, 2, -0.5, 0.5, -2)[:n - 1]
    at, g, bt = transforms.transform_matrices(m, r, points)
    assert at.shape == (m, n) and g.shape == (n, r) and bt.shape == (n, n)
    identity = np.einsum("ij,jk,jl->ikl", at, g, bt)
    expected = np.zeros((m, r, n))
    for i in range(m):
        for k in range(r):
            expected[i, k, i + k] = 1.0
    np.testing.assert_allclose(identity, expected, atol=1e-12)


def test_transform_matrices_of_f_2_5_are_exact_in_binary():
    # The chosen F(2, 5) points (0, 1, -1, 2, -1/2): AT and BT hold small dyadic numbers.
    at, g, bt = transforms.transform_matrices(2, 5)
    assert transforms.POINTS[(2, 5)] == (0, 1, -1, 2, -0.5)
    np.testing.assert_array_equal(at, [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -0.5, 1]])
    assert np.all(bt * 4 == np.round(bt * 4)) and np.abs(bt).max() == 2.5
    assert np.abs(g).max() <= 16 / 15 + 1e-15
    with pytest.raises(ValueError, match=r"no default points for F\(3, 5\)"):
        transforms.transform_matrices(3, 5)
    assert transforms.POINTS[(4, 5)] == (0, 1, -1, 2, -2, 0.5, -0.5)


def _per_point(at, g, bt):
    """AT's column j, G's row j and BT's row j multiplied out for every point j: what the
    algorithm depends on (a sign or scale moved between them changes nothing)."""
    return np.einsum("ij,jk,jl->jikl", at, g, bt)


def test_transform_matrices_are_lavin_and_grays():
    lavin_at = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])
    lavin_g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    lavin_bt = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
    np.testing.assert_allclose(_per_point(*transforms.transform_matrices(2)), _per_point(lavin_at, lavin_g, lavin_bt),
                               atol=1e-15)
    # Their F(4x4) points (minidl's last point is -1/2, see _winograd's doc).
    at4, g4, bt4 = transforms.transform_matrices(4, points=(0, 1, -1, 2, -2))
    np.testing.assert_array_equal(at4[3], [0, 1, -1, 8, -8, 1])
    np.testing.assert_array_equal(bt4[0], [4, 0, -5, 0, 1, 0])
    np.testing.assert_allclose(g4[0], [1 / 4, 0, 0])
    with pytest.raises(ValueError, match="needs 5 distinct points"):
        transforms.transform_matrices(4, points=(0, 1, 1, 2, -2))


CASES = [  # x shape, weight shape, padding, groups
    ((2, 4, 8, 8), (6, 2, 3, 3), "same", 2),
    ((3, 3, 7, 5), (4, 3, 3, 3), 1, 1),          # tiles overhang the output: cropped
    ((2, 2, 6, 9), (2, 2, 3, 3), ((0, 2), (1, 0)), 1),
    ((1, 4, 13, 13), (8, 2, 3, 3), "same", 2),   # the seed's 13x13 maps
    ((2, 3, 3, 4), (2, 3, 3, 3), "valid", 1),    # one output row
]
CASES_5X5 = [  # x shape, weight shape, padding, groups
    ((2, 4, 7, 7), (6, 2, 5, 5), "same", 2),     # odd 7x7 output: the last tiles overhang
    ((1, 4, 9, 6), (4, 2, 5, 5), "same", 2),     # the seed's conv2 padding, odd by even
    ((2, 3, 8, 7), (4, 3, 5, 5), ((0, 3), (2, 1)), 1),   # asymmetric: 7x6 output
    ((2, 2, 5, 6), (3, 2, 5, 5), "valid", 1),    # one output row
    ((1, 2, 6, 6), (2, 2, 5, 5), ((1, 0), (4, 4)), 1),   # padding of 4 on one side: 3x10 output
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("xs,ws,padding,groups,algorithm",
                         [case + (alg,) for case in CASES for alg in TILES]
                         + [case + (alg,) for case in CASES_5X5 for alg in TILES_5X5])
def test_matches_im2col_and_gradients_check(device, algorithm, xs, ws, padding, groups):
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    gy = None
    results = {}
    for alg in ("im2col", algorithm):
        ts = [minidl.tensor(a, requires_grad=True, device=device) for a in (x, w, b)]
        y = F.conv2d(*ts, padding=padding, groups=groups, algorithm=alg)
        gy = rng.standard_normal(y.shape) if gy is None else gy
        y.backward(minidl.tensor(gy, device=device))
        results[alg] = [y.numpy()] + [t.grad.numpy() for t in ts]
    for got, ref in zip(results[algorithm], results["im2col"]):
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)
    inputs = [minidl.tensor(a, requires_grad=True, device=device) for a in (x, w, b)]
    check_gradients(lambda x, w, b: F.conv2d(x, w, b, padding=padding, groups=groups, algorithm=algorithm),
                    inputs)


@pytest.mark.parametrize("algorithm", TILES)
def test_channels_last_input_and_output(algorithm):
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 6, 5, 7)), rng.standard_normal((4, 6, 3, 3))
    y_ref = F.conv2d(minidl.tensor(x), minidl.tensor(w), padding=1, algorithm="im2col")
    xt = minidl.tensor(channels_last(x), requires_grad=True)
    y = F.conv2d(xt, minidl.tensor(w), padding=1, algorithm=algorithm)
    assert is_channels_last(y.data)  # the CPU's layout, whatever the input's
    np.testing.assert_allclose(y.numpy(), y_ref.numpy(), rtol=1e-10, atol=1e-10)
    check_gradients(lambda x: F.conv2d(x, minidl.tensor(w), padding=1, algorithm=algorithm), [xt])


@pytest.mark.parametrize("r,algorithm", [(3, "winograd_4x4"), (5, "winograd_2x2")])
def test_gradient_check_catches_a_wrong_tile_scatter(monkeypatch, r, algorithm):
    # The input gradient adds overlapping tiles back; dropping the r-1 pixel overlap (an
    # easy mistake) must fail the check on input 0 only.
    rng = np.random.default_rng(0)
    x = minidl.tensor(rng.standard_normal((1, 2, 8, 8)), requires_grad=True)
    w = minidl.tensor(rng.standard_normal((2, 2, r, r)), requires_grad=True)
    padding = r // 2

    def scatter_without_overlap(self, gd, x_shape):
        m = self.m
        gd = gd.copy()
        gd[m:] = 0
        gd[:, m:] = 0
        return original(self, gd, x_shape)

    original = WinogradConv2d._scatter_tiles
    check_gradients(lambda x, w: F.conv2d(x, w, padding=padding, algorithm=algorithm), [x, w])
    x.grad = w.grad = None
    monkeypatch.setattr(WinogradConv2d, "_scatter_tiles", scatter_without_overlap)
    with pytest.raises(AssertionError, match="input 0"):
        check_gradients(lambda x, w: F.conv2d(x, w, padding=padding, algorithm=algorithm), [x, w])


def _direct_float64(x, w, pad, groups=1):
    """The convolution summed directly in float64 (the reference for rounding errors)."""
    n, c, h, wd = x.shape
    r = w.shape[2]
    xpad = np.zeros((n, c, h + 2 * pad, wd + 2 * pad))
    xpad[:, :, pad:pad + h, pad:pad + wd] = x
    xg = xpad.reshape(n, groups, c // groups, h + 2 * pad, wd + 2 * pad)
    wg = w.reshape(groups, w.shape[0] // groups, c // groups, r, r)
    y = np.zeros((n, groups, w.shape[0] // groups, h + 2 * pad - r + 1, wd + 2 * pad - r + 1))
    for kh in range(r):
        for kw in range(r):
            y += np.einsum("ngchw,goc->ngohw", xg[..., kh:kh + y.shape[3], kw:kw + y.shape[4]], wg[..., kh, kw])
    return y.reshape(n, w.shape[0], y.shape[3], y.shape[4])


def test_float32_error_stays_within_a_small_factor_of_im2col():
    # AlexNet-like statistics (cifar conv4's shape at batch 4): the relative error of
    # each algorithm in float32 against the float64 sum, mean |error| / mean |y|.
    # Measured here: im2col 2.2e-7, F(2x2) 3.1e-7 (1.4x), F(4x4) 1.2e-6 (5.4x; 6.8x with
    # Lavin & Gray's point -2); allowed: 2x and 8x im2col's.
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal((4, 128, 8, 8)), 0)          # post-ReLU inputs
    w = rng.standard_normal((128, 128, 3, 3)) * np.sqrt(2 / (128 * 9))
    ref = _direct_float64(x, w, 1)
    errors = {}
    for alg in ["im2col"] + TILES:
        y = F.conv2d(minidl.tensor(x, dtype=np.float32), minidl.tensor(w, dtype=np.float32), padding=1,
                     algorithm=alg).numpy()
        errors[alg] = np.abs(y - ref).mean() / np.abs(ref).mean()
    assert errors["winograd_2x2"] < 2 * errors["im2col"], errors
    assert errors["winograd_4x4"] < 8 * errors["im2col"], errors


def test_float32_error_of_5x5_stays_within_a_small_factor_of_im2col():
    # The seed's conv2 statistics (48 channels per group, groups=2) on 14x14 maps at
    # batch 2. Measured here: im2col 2.3e-7, F(2x2, 5x5) 9.3e-7 (4.1x), F(4x4, 5x5) 2.0e-6
    # (9.0x). The points' choice (docs/performance.md): for F(2x2), 0, 1, -1, 2, -2
    # gave 5.4x, 0, 1, -1, 1/2, -1/2 5.7x. Allowed: 6x and 12x im2col's.
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal((2, 96, 14, 14)), 0)
    w = rng.standard_normal((128, 48, 5, 5)) * np.sqrt(2 / (48 * 25))
    ref = _direct_float64(x, w, 2, groups=2)
    errors = {}
    for alg in ["im2col"] + TILES_5X5:
        y = F.conv2d(minidl.tensor(x, dtype=np.float32), minidl.tensor(w, dtype=np.float32), padding=2, groups=2,
                     algorithm=alg).numpy()
        errors[alg] = np.abs(y - ref).mean() / np.abs(ref).mean()
    assert errors["winograd_2x2"] < 6 * errors["im2col"], errors
    assert errors["winograd_4x4"] < 12 * errors["im2col"], errors


def test_empty_batch():
    w = minidl.tensor(np.ones((4, 2, 3, 3)), requires_grad=True)
    x = minidl.tensor(np.zeros((0, 2, 8, 8)), requires_grad=True)
    y = F.conv2d(x, w, padding=1, algorithm="winograd_4x4")
    assert y.shape == (0, 4, 8, 8)
    y.backward(np.zeros(y.shape))
    np.testing.assert_array_equal(w.grad.numpy(), 0)


def _kept_bytes(kernel) -> int:
    """Bytes of the arrays a kernel holds for backward (in attributes, lists and tuples)."""
    total, stack = 0, list(vars(kernel).values())
    while stack:
        value = stack.pop()
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return total


def test_backward_keeps_the_input_not_its_transformed_tiles():
    # V is 36/16 of the input for F(4x4, 3x3); backward transforms each slice again
    # instead, so what the kernel keeps is the input (a view) and the filters' U.
    rng = np.random.default_rng(0)
    x = channels_last(rng.standard_normal((2, 8, 12, 12)).astype(np.float32))
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    kernel = WinogradConv2d(4, 3, ((1, 1), (1, 1)), 1)
    y = kernel.forward(x, w)
    u_bytes = 36 * 8 * 8 * 4
    assert _kept_bytes(kernel) <= x.nbytes + u_bytes
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw = kernel.backward(gy, needs=(True, True))
    ref = minidl.tensor(x.astype(np.float64), requires_grad=True)
    wt = minidl.tensor(w.astype(np.float64), requires_grad=True)
    (F.conv2d(ref, wt, padding=1, algorithm="im2col") * minidl.tensor(gy.astype(np.float64))).sum().backward()
    np.testing.assert_allclose(gx, ref.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-4, atol=1e-3)
