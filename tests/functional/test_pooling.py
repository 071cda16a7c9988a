"""max_pool2d: forward and backward against a naive loop reference, finite
differences, overlap accumulation, one-gradient-per-window, -inf padding, bad
inputs, and (when installed) PyTorch."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidl
import minidl.functional as F
import minidl.kernels
from minidl.gradcheck import check_gradients

from support.arrays import channels_last, shuffled_linspace
from support.devices import DEVICES


def explicit_pads(padding, hw, kernel, stride):
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        pads = []
        for n, k, s in zip(hw, kernel, stride):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    if isinstance(padding, int):
        return (padding, padding), (padding, padding)
    if isinstance(padding[0], int):
        return (padding[0], padding[0]), (padding[1], padding[1])
    return tuple(padding[0]), tuple(padding[1])


def naive_max_pool(x, gy, kernel, stride, padding):
    """Forward and backward, loop by loop; the gradient goes to the first maximum
    of each window in row-major window order."""
    n, c, h, w = x.shape
    kh, kw = kernel
    sh, sw = stride
    (pt, pb), (pl, pr) = explicit_pads(padding, (h, w), kernel, stride)
    xpad = np.full((n, c, h + pt + pb, w + pl + pr), -np.inf)
    xpad[:, :, pt:pt + h, pl:pl + w] = x
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    y = np.zeros((n, c, oh, ow))
    gxpad = np.zeros_like(xpad)
    for i in range(n):
        for j in range(c):
            for p in range(oh):
                for q in range(ow):
                    patch = xpad[i, j, p * sh:p * sh + kh, q * sw:q * sw + kw]
                    a, b = np.unravel_index(np.argmax(patch), patch.shape)  # first maximum
                    y[i, j, p, q] = patch[a, b]
                    if gy is not None:
                        gxpad[i, j, p * sh + a, q * sw + b] += gy[i, j, p, q]
    return y, gxpad[:, :, pt:pt + h, pl:pl + w]


@st.composite
def pool_case(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = draw(st.one_of(
        st.just("valid"), st.just("same"),
        st.tuples(st.integers(0, kh - 1), st.integers(0, kw - 1)),
        st.tuples(st.tuples(st.integers(0, kh - 1), st.integers(0, kh - 1)),
                  st.tuples(st.integers(0, kw - 1), st.integers(0, kw - 1)))))
    h, w = draw(st.integers(kh, 9)), draw(st.integers(kw, 9))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w), (kh, kw), stride, padding


@settings(max_examples=40, deadline=None)
@given(case=pool_case(), seed=st.integers(0, 2**16), last=st.booleans(), mode=st.sampled_from(minidl.kernels.MODES))
def test_forward_and_backward_match_naive_reference(case, seed, last, mode):
    shape, kernel, stride, padding = case
    rng = np.random.default_rng(seed)
    x = shuffled_linspace(shape, rng)
    xt = minidl.tensor(channels_last(x) if last else x, requires_grad=True)
    with minidl.kernels.use(mode):
        y = F.max_pool2d(xt, kernel, stride, padding)
    keeps_layout = last and mode == "fast"   # the CPU fast path keeps the input's layout, the reference is NCHW
    assert (y.data.transpose(0, 2, 3, 1) if keeps_layout else y.data).flags.c_contiguous
    sh_sw = kernel if stride is None else ((stride, stride) if isinstance(stride, int) else stride)
    gy = rng.standard_normal(y.shape)
    y.backward(gy)
    y_ref, gx_ref = naive_max_pool(x, gy, kernel, sh_sw, padding)
    np.testing.assert_array_equal(y.numpy(), y_ref)
    np.testing.assert_allclose(xt.grad.numpy(), gx_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel,stride,padding", [
    (3, 2, 0), ((2, 3), (1, 2), ((1, 0), (0, 2))), (3, 2, "same"), (2, None, 1)])
@pytest.mark.parametrize("last", [False, True])
def test_gradients_match_finite_differences(kernel_mode, device, kernel, stride, padding, last):
    rng = np.random.default_rng(2)
    x = shuffled_linspace((2, 2, 6, 5), rng)
    x = minidl.tensor(channels_last(x) if last else x, requires_grad=True, device=device)
    check_gradients(lambda x: F.max_pool2d(x, kernel, stride, padding), [x])


@pytest.mark.parametrize("device", DEVICES)
def test_overlapping_windows_accumulate_gradient(kernel_mode, device):
    # 3x3 windows, stride 1, on 4x4: the global maximum at (1, 2) lies in all four windows.
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4) / 100
    x[0, 0, 1, 2] = 10.0
    xt = minidl.tensor(x, requires_grad=True, device=device)
    y = F.max_pool2d(xt, 3, 1)
    assert y.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(y.numpy(), np.full((1, 1, 2, 2), 10.0))
    y.backward(np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2))
    expected = np.zeros((1, 1, 4, 4))
    expected[0, 0, 1, 2] = 10.0  # 1 + 2 + 3 + 4
    np.testing.assert_array_equal(xt.grad.numpy(), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_each_window_sends_its_gradient_to_exactly_one_element(kernel_mode, device):
    # A constant image ties every element: each window still picks one (its first).
    x = minidl.tensor(np.full((2, 3, 7, 7), 0.5), requires_grad=True, device=device)
    y = F.max_pool2d(x, 3, 2)
    y.backward(np.ones(y.shape))
    gx = x.grad.numpy()
    assert gx.sum() == y.size  # one unit per window, nothing lost or duplicated
    # First element of each window: rows/cols 0, 2, 4 get exactly one window each.
    expected = np.zeros((7, 7))
    expected[0:5:2, 0:5:2] = 1.0
    np.testing.assert_array_equal(gx[1, 2], expected)


@pytest.mark.parametrize("device", DEVICES)
def test_padding_is_minus_infinity_not_zero(kernel_mode, device):
    x = -1.0 - np.arange(2 * 4 * 4, dtype=np.float64).reshape(1, 2, 4, 4)  # all negative
    y = F.max_pool2d(minidl.tensor(x, device=device), 2, 2, padding=1)
    assert y.shape == (1, 2, 3, 3)
    assert (y.numpy() < 0).all()  # a zero pad would have won every border window
    np.testing.assert_array_equal(y.numpy(), naive_max_pool(x, None, (2, 2), (2, 2), 1)[0])


@pytest.mark.parametrize("device", DEVICES)
def test_float32_and_large_kernels(kernel_mode, device):
    # 12x12 = 144 window positions: more than int8 can number.
    rng = np.random.default_rng(4)
    x = shuffled_linspace((1, 2, 14, 13), rng)
    xt = minidl.tensor(x, requires_grad=True, device=device, dtype=np.float32)
    y = F.max_pool2d(xt, 12, 1)
    gy = rng.standard_normal(y.shape)
    y.backward(gy)
    y_ref, gx_ref = naive_max_pool(x, gy, (12, 12), (1, 1), 0)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=1e-6)
    np.testing.assert_allclose(xt.grad.numpy(), gx_ref, rtol=1e-5, atol=1e-5)


def test_alexnet_pooling_shapes():
    x = minidl.tensor(np.zeros((1, 2, 56, 56), np.float32))
    assert F.max_pool2d(x, 3, 2).shape == (1, 2, 27, 27)
    assert F.max_pool2d(x, 3, 2, "same").shape == (1, 2, 28, 28)
    assert F.max_pool2d(minidl.tensor(np.zeros((1, 2, 13, 13))), 3, 2).shape == (1, 2, 6, 6)


@pytest.mark.parametrize("shape,args,match", [
    ((8, 8), (2,), r"max_pool2d: expected x \(N, C, H, W\) or \(C, H, W\), got shape \(8, 8\)"),
    ((1, 3, 8, 8), (0,), r"max_pool2d: kernel_size must be a positive int.*got 0"),
    ((1, 3, 8, 8), ((2, -1),), r"max_pool2d: kernel_size .*\(2, -1\)"),
    ((1, 3, 8, 8), (2, 0), r"max_pool2d: stride must be a positive int.*got 0"),
    ((1, 3, 8, 8), (2, 2, -1), r"max_pool2d: padding must be non-negative, got -1"),
    ((1, 3, 8, 8), (2, 2, "full"), r"max_pool2d: padding string must be 'valid' or 'same'"),
    ((1, 3, 8, 8), (2, 2, 2), r"max_pool2d: padding \(\(2, 2\), \(2, 2\)\) must be smaller than the kernel \(2, 2\)"),
    ((1, 3, 4, 4), (5,), r"max_pool2d: kernel \(5, 5\) is larger than the padded input \(4, 4\)"),
])
def test_bad_input_raises_value_error(shape, args, match):
    with pytest.raises(ValueError, match=match):
        F.max_pool2d(minidl.tensor(np.zeros(shape)), *args)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 2, "same"), ((3, 2), (2, 1), ((1, 2), (0, 1))), (2, None, 0)])
def test_matches_pytorch(kernel_mode, kernel, stride, padding):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    rng = np.random.default_rng(9)
    x = shuffled_linspace((2, 3, 11, 10), rng)
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    s = k if stride is None else ((stride, stride) if isinstance(stride, int) else stride)
    (pt, pb), (pl, pr) = explicit_pads(padding, x.shape[2:], k, s)
    tx = torch.tensor(x, requires_grad=True)
    ty = tf.max_pool2d(tf.pad(tx, (pl, pr, pt, pb), value=-math.inf), k, s)
    gy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(gy))
    mx = minidl.tensor(x, requires_grad=True)
    my = F.max_pool2d(mx, kernel, stride, padding)
    my.backward(gy)
    np.testing.assert_array_equal(my.numpy(), ty.detach().numpy())
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
