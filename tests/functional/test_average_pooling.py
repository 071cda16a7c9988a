"""avg_pool2d: PyTorch's semantics (ceil_mode, count_include_pad, divisor_override), checked by hand
and against PyTorch forward and backward, finite differences in both kernel modes and layouts,
unbatched and empty inputs, and clear errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidl
import minidl.functional as F
import minidl.kernels
from minidl.gradcheck import check_gradients

from support.arrays import channels_last, is_channels_last
from support.devices import DEVICES


def test_divisors_by_hand(kernel_mode):
    # 1 x 1 x 3 x 3 of ones, kernel 2, stride 2, padding 1, ceil_mode: OH = ceil((3 + 2 - 2) / 2) + 1 = 3,
    # but the third window would start at 4 - 1 = 3 (past the input): dropped, so 2 x 2.
    x = minidl.tensor(np.ones((1, 1, 3, 3)))
    y = F.avg_pool2d(x, 2, 2, 1, ceil_mode=True)
    assert y.shape == (1, 1, 2, 2)
    # Window (0, 0) covers one input cell and three padding cells.
    np.testing.assert_allclose(y.numpy()[0, 0], [[0.25, 0.5], [0.5, 1.0]])
    np.testing.assert_allclose(F.avg_pool2d(x, 2, 2, 1, True, count_include_pad=False).numpy(), np.ones((1, 1, 2, 2)))
    np.testing.assert_allclose(F.avg_pool2d(x, 2, 2, 1, True, divisor_override=3).numpy()[0, 0], [[1 / 3, 2 / 3],
                                                                                                   [2 / 3, 4 / 3]])


def test_ceil_mode_overhang_never_counts(kernel_mode):
    # A row 0 1 2 3 4, windows of 2 with stride 2 in ceil mode: [0, 2), [2, 4), [4, 6). The last
    # hangs one cell past the input; with no padding to count, its divisor is 1.
    x = minidl.tensor(np.arange(5.0).reshape(1, 1, 1, 5))
    y = F.avg_pool2d(x, (1, 2), ceil_mode=True, count_include_pad=True)
    np.testing.assert_allclose(y.numpy().ravel(), [0.5, 2.5, 4.0])
    # With padding 1 a fourth window would start at 5, in the after-padding: dropped.
    y = F.avg_pool2d(x, (1, 2), padding=(0, 1), ceil_mode=True)
    np.testing.assert_allclose(y.numpy().ravel(), [0.0, 1.5, 3.5])
    # 0 1 2 3 4 5, windows of 3, stride 3, padding 1: the last, [5, 8), holds cell 5, one padding
    # cell (counted) and one cell of overhang (not counted): 5 / 2.
    x = minidl.tensor(np.arange(6.0).reshape(1, 1, 1, 6))
    y = F.avg_pool2d(x, (1, 3), stride=(1, 3), padding=(0, 1), ceil_mode=True)
    np.testing.assert_allclose(y.numpy().ravel(), [1 / 3, 3.0, 2.5])


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _compare_with_torch(torch, x, gy_seed, *args, **kwargs):
    """Forward and backward of minidl and PyTorch on x (minidl in x's own layout)."""
    tx = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    ty = torch.nn.functional.avg_pool2d(tx, *args, **kwargs)
    gy = np.random.default_rng(gy_seed).standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(gy))
    mx = minidl.tensor(x, requires_grad=True)
    my = F.avg_pool2d(mx, *args, **kwargs)
    my.backward(gy)
    assert my.shape == tuple(ty.shape)
    np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    return my


@pytest.mark.parametrize("args,kwargs", [
    ((2,), {}),
    ((3, 2, 1), {}),
    ((3, 2, 1), {"ceil_mode": True}),
    ((3, 2, 1), {"ceil_mode": True, "count_include_pad": False}),
    ((2, 2, 1), {"ceil_mode": True}),                         # a window would start in the padding: dropped
    (((3, 2), (2, 3), (1, 0)), {"ceil_mode": True, "divisor_override": 4}),
    ((4, 3, 2), {"count_include_pad": False}),
    ((3, 1, 1), {"divisor_override": -2}),
])
@pytest.mark.parametrize("last", [False, True])
def test_matches_pytorch(torch, kernel_mode, args, kwargs, last):
    x = np.random.default_rng(5).standard_normal((2, 3, 9, 8))
    y = _compare_with_torch(torch, channels_last(x) if last else x, 6, *args, **kwargs)
    assert is_channels_last(y.data) == (last and kernel_mode == "fast")   # the fast path keeps the layout


@settings(max_examples=60, deadline=None)
@given(k=st.tuples(st.integers(1, 4), st.integers(1, 4)), s=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       data=st.data(), ceil_mode=st.booleans(), count_include_pad=st.booleans(),
       divisor=st.sampled_from([None, None, 1, 7]), mode=st.sampled_from(minidl.kernels.MODES), last=st.booleans())
def test_random_cases_match_pytorch(k, s, data, ceil_mode, count_include_pad, divisor, mode, last):
    torch = pytest.importorskip("torch")
    p = (data.draw(st.integers(0, k[0] // 2)), data.draw(st.integers(0, k[1] // 2)))
    h, w = data.draw(st.integers(k[0], 10)), data.draw(st.integers(k[1], 10))
    x = np.random.default_rng(h * w).standard_normal((2, 2, h, w))
    with minidl.kernels.use(mode):
        _compare_with_torch(torch, channels_last(x) if last else x, 1, k, s, p, ceil_mode, count_include_pad,
                            divisor)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("args,kwargs", [((3, 2, 1), {"ceil_mode": True}), ((2, 1), {}),
                                         ((3, 2, 1), {"count_include_pad": False, "ceil_mode": True}),
                                         ((2,), {"divisor_override": 3})])
@pytest.mark.parametrize("last", [False, True])
def test_gradients_match_finite_differences(kernel_mode, device, args, kwargs, last):
    x = np.random.default_rng(2).standard_normal((2, 2, 6, 5))
    x = minidl.tensor(channels_last(x) if last else x, requires_grad=True, device=device)
    check_gradients(lambda t: F.avg_pool2d(t, *args, **kwargs), [x])


def test_unbatched_and_empty_inputs(kernel_mode):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 7, 6))
    xt = minidl.tensor(x, requires_grad=True)
    y = F.avg_pool2d(xt, 3, 2, 1, ceil_mode=True)
    batched = F.avg_pool2d(minidl.tensor(x[None]), 3, 2, 1, ceil_mode=True)
    assert y.shape == batched.shape[1:] == (3, 4, 4)
    np.testing.assert_array_equal(y.numpy(), batched.numpy()[0])
    y.backward(np.ones(y.shape))
    assert xt.grad.shape == (3, 7, 6)
    empty = minidl.tensor(np.zeros((0, 3, 7, 6), np.float32), requires_grad=True)
    y = F.avg_pool2d(empty, 2)
    assert y.shape == (0, 3, 3, 3) and y.dtype == np.float32
    y.backward(np.zeros(y.shape, np.float32))
    assert empty.grad.shape == (0, 3, 7, 6)


def test_keeps_float32(kernel_mode):
    x = minidl.tensor(np.ones((1, 2, 4, 4), np.float32))
    assert F.avg_pool2d(x, 2).dtype == np.float32


@pytest.mark.parametrize("shape,args,kwargs,match", [
    ((8, 8), (2,), {}, r"avg_pool2d: expected input \(N, C, H, W\) or \(C, H, W\), got shape \(8, 8\)"),
    ((1, 1, 4, 4), (0,), {}, r"avg_pool2d: kernel_size must be a positive int"),
    ((1, 1, 4, 4), (2, 0), {}, r"avg_pool2d: stride must be a positive int"),
    ((1, 1, 4, 4), (2, 2, 2), {}, r"avg_pool2d: padding .* must be at most half the kernel \(2, 2\)"),
    ((1, 1, 4, 4), (5,), {}, r"avg_pool2d: kernel \(5, 5\) is larger than the padded input"),
    ((1, 1, 4, 4), (2,), {"divisor_override": 0}, r"avg_pool2d: divisor_override must be None or a nonzero int"),
    ((1, 1, 4, 4), (2,), {"divisor_override": 1.5}, r"avg_pool2d: divisor_override must be None or a nonzero int"),
    ((1, 1, 4, 4), (2,), {"ceil_mode": "yes"}, r"avg_pool2d: ceil_mode must be True or False"),
])
def test_bad_input_raises_value_error(shape, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        F.avg_pool2d(minidl.tensor(np.zeros(shape)), *args, **kwargs)


def test_integer_input_is_refused():
    with pytest.raises(ValueError, match=r"avg_pool2d: expected a floating-point input, got dtype int64"):
        F.avg_pool2d(minidl.tensor(np.zeros((1, 1, 4, 4), np.int64)), 2)
