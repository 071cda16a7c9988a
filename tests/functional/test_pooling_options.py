"""max_pool2d with PyTorch's options: ceil_mode (windows hanging off the edge), dilation,
return_indices (flat per-plane indices), unbatched (C, H, W) and integer inputs, strides
larger than the kernel; against PyTorch (forward, indices, backward) and by finite
differences, in both kernel modes and memory layouts."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import minidl
import minidl.functional as F
import minidl.kernels
from minidl.functional.fast_path import FastPath
from minidl.gradcheck import check_gradients
from minidl.kernels import dispatch

from support.arrays import channels_last, shuffled_linspace

torch = pytest.importorskip("torch")
tf = torch.nn.functional


def padding_only_window(n, k, s, p, d, ceil_mode):
    """Whether some window along an axis of n pixels has every tap on padding (possible with dilation)."""
    span = d * (k - 1) + 1
    out = (n + 2 * p - span) // s + 1
    if ceil_mode:
        out = -(-(n + 2 * p - span) // s) + 1
        if (out - 1) * s >= n + p:   # PyTorch's rule: no window starts in the trailing padding
            out -= 1
    return any(not any(0 <= o * s + j * d - p < n for j in range(k)) for o in range(out))


def compare_with_torch(x, kernel, stride, padding, dilation, ceil_mode, rng, last=False):
    """y, the indices and the input gradient of minidl's max_pool2d against torch's."""
    tx = torch.tensor(x, requires_grad=True)
    ty, ti = tf.max_pool2d(tx, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    gy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(gy))
    mx = minidl.tensor(channels_last(x) if last else x, requires_grad=True)
    my, mi = F.max_pool2d(mx, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    assert my.shape == tuple(ty.shape) and mi.shape == tuple(ti.shape) and mi.dtype == np.int64
    assert not mi.requires_grad
    my.backward(gy)
    np.testing.assert_array_equal(my.numpy(), ty.detach().numpy())
    np.testing.assert_array_equal(mi.numpy(), ti.numpy())
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-12)


@st.composite
def pool_case(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    stride = draw(st.one_of(st.none(), st.integers(1, 5), st.tuples(st.integers(1, 5), st.integers(1, 5))))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))   # torch's limit
    h = draw(st.integers(max(1, span_h - 2 * padding[0]), 10))
    w = draw(st.integers(max(1, span_w - 2 * padding[1]), 10))
    n = draw(st.sampled_from([None, 0, 1, 2]))   # None: one (C, H, W) image
    shape = (2, h, w) if n is None else (n, 2, h, w)
    ceil_mode = draw(st.booleans())
    sh, sw = (kh, kw) if stride is None else ((stride, stride) if isinstance(stride, int) else stride)
    # PyTorch's CPU kernel writes outside its buffers when a window holds padding only
    # (it corrupts the heap): such windows are tested on their own below.
    assume(not padding_only_window(h, kh, sh, padding[0], dh, ceil_mode))
    assume(not padding_only_window(w, kw, sw, padding[1], dw, ceil_mode))
    return shape, (kh, kw), stride, padding, (dh, dw), ceil_mode


@settings(max_examples=60, deadline=None)
@given(case=pool_case(), seed=st.integers(0, 2**16), mode=st.sampled_from(minidl.kernels.MODES), last=st.booleans())
def test_matches_pytorch_on_random_geometries(case, seed, mode, last):
    shape, kernel, stride, padding, dilation, ceil_mode = case
    rng = np.random.default_rng(seed)
    with minidl.kernels.use(mode):
        compare_with_torch(shuffled_linspace(shape, rng), kernel, stride, padding, dilation, ceil_mode, rng,
                           last=last and len(shape) == 4)


@pytest.mark.parametrize("h, kernel, stride, padding, floor_out, ceil_out", [
    (8, 3, 2, 0, 3, 4),     # the last window starts at 6 and hangs one pixel off the edge
    (5, 2, 2, 1, 3, 3),     # a window starting in the trailing padding is not counted (PyTorch's rule)
    (6, 4, 3, 0, 1, 2),
    (7, 1, 4, 0, 2, 2),     # stride larger than the kernel: the windows skip pixels
    (7, 2, 3, 0, 2, 3),     # stride larger than the kernel, and the last window hangs off
    (9, 2, 5, 1, 2, 2),     # ... and here it would start in the trailing padding: not counted
])
def test_ceil_mode_windows_hang_off_the_edge(kernel_mode, h, kernel, stride, padding, floor_out, ceil_out):
    rng = np.random.default_rng(3)
    x = -1.0 - np.abs(shuffled_linspace((2, 3, h, h + 1), rng))    # all negative: padding must never win
    assert F.max_pool2d(minidl.tensor(x), kernel, stride, padding).shape[2] == floor_out
    y = F.max_pool2d(minidl.tensor(x), kernel, stride, padding, ceil_mode=True)
    assert y.shape[2] == ceil_out and np.isfinite(y.numpy()).all()
    compare_with_torch(x, kernel, stride, padding, 1, True, rng)


@pytest.mark.parametrize("kwargs", [
    {"kernel_size": 3, "stride": 2, "ceil_mode": True},
    {"kernel_size": (2, 3), "stride": (3, 2), "padding": 1, "ceil_mode": True},
    {"kernel_size": 3, "stride": 1, "padding": 2, "dilation": 2},
    {"kernel_size": (2, 2), "stride": 3, "dilation": (1, 3), "ceil_mode": True},
])
@pytest.mark.parametrize("unbatched", [False, True])
def test_gradients_match_finite_differences(kernel_mode, kwargs, unbatched):
    rng = np.random.default_rng(6)
    x = minidl.tensor(shuffled_linspace((3, 8, 9) if unbatched else (2, 2, 8, 9), rng), requires_grad=True)
    check_gradients(lambda x: F.max_pool2d(x, **kwargs), [x])


def test_a_window_of_padding_only(kernel_mode):
    """With dilation every tap of a window can fall on padding: -inf, as in PyTorch, and no gradient."""
    x = minidl.tensor(np.full((1, 1, 1, 1), 5.0), requires_grad=True)
    y, indices = F.max_pool2d(x, 2, 1, 1, dilation=2, return_indices=True)   # taps at -1 and 1 of one pixel
    np.testing.assert_array_equal(y.numpy(), np.full((1, 1, 1, 1), -np.inf))
    assert not 0 <= indices.item() < 1                                        # no pixel of the plane
    y.backward(np.ones(y.shape))
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((1, 1, 1, 1)))


def test_ceil_mode_keeps_the_fast_paths_and_their_results(rng):
    x = shuffled_linspace((2, 3, 8, 9), rng)
    for last in (False, True):
        results = {}
        for mode in minidl.kernels.MODES:
            with minidl.kernels.use(mode):
                xt = minidl.tensor(channels_last(x) if last else x, requires_grad=True)
                y = F.max_pool2d(xt, 3, 2, 1, ceil_mode=True)
                assert isinstance(y.creator, FastPath) == (mode == "fast")
                y.backward(np.arange(y.size, dtype=float).reshape(y.shape))
                results[mode] = (y.numpy(), xt.grad.numpy())
        for fast, reference in zip(results["fast"], results["reference"]):
            np.testing.assert_array_equal(fast, reference)


def test_dilation_indices_and_integers_run_the_reference(rng):
    x = minidl.tensor(shuffled_linspace((1, 2, 7, 7), rng), requires_grad=True)
    with minidl.kernels.use("fast"):
        assert isinstance(F.max_pool2d(x, 2).creator, FastPath)
        assert not isinstance(F.max_pool2d(x, 2, dilation=2).creator, FastPath)
        no_pads = ((0, 0), (0, 0))
        assert dispatch.max_pool2d(np.ones((1, 1, 4, 4)), (2, 2), (2, 2), no_pads) is not None
        assert dispatch.max_pool2d(np.ones((1, 1, 4, 4), np.int32), (2, 2), (2, 2), no_pads) is None
        y, indices = F.max_pool2d(x, 2, return_indices=True)
    assert not isinstance(y.creator, FastPath) and indices.creator is None


def test_integer_input_matches_pytorch():
    x = np.random.default_rng(0).integers(-50, 50, size=(2, 3, 7, 6))
    ty, ti = tf.max_pool2d(torch.tensor(x), 3, 2, 1, ceil_mode=True, return_indices=True)
    my, mi = F.max_pool2d(minidl.tensor(x), 3, 2, 1, ceil_mode=True, return_indices=True)
    assert my.dtype == x.dtype
    np.testing.assert_array_equal(my.numpy(), ty.numpy())
    np.testing.assert_array_equal(F.max_pool2d(minidl.tensor(x), 3).numpy(), tf.max_pool2d(torch.tensor(x), 3).numpy())
    # Ties (few distinct integers) take the first maximum in window order, as PyTorch's CPU kernel.
    np.testing.assert_array_equal(mi.numpy(), ti.numpy())


def test_unbatched_indices_and_an_empty_stride():
    x = shuffled_linspace((3, 6, 7), np.random.default_rng(1))
    y, indices = F.max_pool2d(minidl.tensor(x), 2, (), return_indices=True)   # PyTorch: [] means kernel_size
    ty, ti = tf.max_pool2d(torch.tensor(x), 2, [], return_indices=True)
    assert y.shape == indices.shape == (3, 3, 3)
    np.testing.assert_array_equal(y.numpy(), ty.numpy())
    np.testing.assert_array_equal(indices.numpy(), ti.numpy())


@pytest.mark.parametrize("kwargs, match", [
    ({"kernel_size": 2, "dilation": 0}, r"max_pool2d: dilation must be a positive int.*got 0"),
    ({"kernel_size": 2, "padding": 3, "dilation": 2},
     r"max_pool2d: padding .* smaller than the dilated kernel's span \(3, 3\)"),
    ({"kernel_size": 3, "dilation": 4},
     r"max_pool2d: kernel \(3, 3\) \(dilation \(4, 4\): it spans \(9, 9\)\) is larger"),
])
def test_bad_options_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        F.max_pool2d(minidl.tensor(np.zeros((1, 1, 8, 8))), **kwargs)


def test_booleans_are_refused():
    with pytest.raises(ValueError, match=r"max_pool2d: expected float or integer values, got dtype bool"):
        F.max_pool2d(minidl.tensor(np.zeros((1, 1, 4, 4), bool)), 2)
