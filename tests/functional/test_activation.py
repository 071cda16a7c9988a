"""ReLU, softmax and log-softmax: forward vs direct formulas, backward via check_gradients,
and finite results for logits of +-1000."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minidl
import minidl.functional as F
from minidl.gradcheck import check_gradients


def leaf(values, device="cpu"):
    return minidl.tensor(values, requires_grad=True, device=device)


def off_zero(rng, shape):
    """Values with |x| >= 0.1: central differences never straddle ReLU's kink."""
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 2.0, shape)


def softmax_reference(x, axis):
    """exp(x) / sum(exp(x)) with no shift (fine for the moderate values used here)."""
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def test_relu_forward_and_backward(kernel_mode, device, rng):
    x = off_zero(rng, (4, 5))
    t = leaf(x, device)
    y = F.relu(t)
    np.testing.assert_array_equal(y.numpy(), np.where(x > 0, x, 0.0))
    gy = rng.standard_normal(x.shape)
    y.backward(gy)
    np.testing.assert_array_equal(t.grad.numpy(), np.where(x > 0, gy, 0.0))
    t.grad = None
    check_gradients(F.relu, [t])


def test_relu_keeps_dtype_and_shape(rng):
    x = off_zero(rng, (2, 3, 4)).astype(np.float32)
    y = F.relu(minidl.tensor(x))
    assert y.dtype == np.float32 and y.shape == (2, 3, 4)


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
def test_softmax_and_log_softmax_match_direct_formula(device, rng, axis):
    x = rng.standard_normal((3, 4, 5)) * 3
    y = F.softmax(leaf(x, device), axis=axis).numpy()
    np.testing.assert_allclose(y, softmax_reference(x, axis), rtol=1e-12)
    np.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=1e-12)
    log_y = F.log_softmax(leaf(x, device), axis=axis).numpy()
    np.testing.assert_allclose(log_y, np.log(softmax_reference(x, axis)), rtol=1e-12, atol=1e-12)


def test_softmax_default_axis_is_last(rng):
    x = rng.standard_normal((2, 3))
    np.testing.assert_allclose(F.softmax(leaf(x)).numpy(), softmax_reference(x, -1), rtol=1e-12)
    np.testing.assert_allclose(F.log_softmax(leaf(x)).numpy(), np.log(softmax_reference(x, -1)), rtol=1e-12)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_and_log_softmax_gradients(device, rng, axis):
    x = leaf(rng.standard_normal((3, 4)), device)
    check_gradients(lambda t: F.softmax(t, axis=axis), [x])
    x.grad = None
    check_gradients(lambda t: F.log_softmax(t, axis=axis), [x])


def test_huge_logits_stay_finite(device):
    x = np.array([[1000.0, -1000.0, 0.0], [1000.0, 999.0, -1000.0], [-1000.0, -1000.0, -1000.0]])
    t = leaf(x, device)
    y = F.softmax(t)
    log1pe = math.log1p(math.exp(-1.0))
    expected = np.array([[1.0, 0.0, 0.0], [1 / (1 + math.exp(-1)), 1 / (1 + math.e), 0.0], [1 / 3] * 3])
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-300)
    log_y = F.log_softmax(t)
    expected_log = np.array([[0.0, -2000.0, -1000.0], [-log1pe, -1.0 - log1pe, -2000.0 - log1pe],
                             [-math.log(3)] * 3])
    np.testing.assert_allclose(log_y.numpy(), expected_log, rtol=1e-12, atol=1e-12)
    gy = np.arange(9.0).reshape(3, 3)
    log_y.backward(gy)
    assert np.all(np.isfinite(t.grad.numpy()))
    t.grad = None
    y.backward(gy)
    assert np.all(np.isfinite(t.grad.numpy()))
    for fn in (F.softmax, F.log_softmax):  # float32 too
        assert np.all(np.isfinite(fn(minidl.tensor(x.astype(np.float32), device=device)).numpy()))


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), data=st.data())
@settings(max_examples=25, deadline=None)
def test_softmax_any_shape_and_axis(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = np.random.default_rng(len(shape) + axis).standard_normal(shape) * 4
    t = leaf(x)
    np.testing.assert_allclose(F.softmax(t, axis).numpy(), softmax_reference(x, axis), rtol=1e-12)
    np.testing.assert_allclose(F.log_softmax(t, axis).numpy(), np.log(softmax_reference(x, axis)),
                               rtol=1e-10, atol=1e-12)
    check_gradients(lambda t: F.log_softmax(t, axis), [t])
    t.grad = None
    check_gradients(lambda t: F.softmax(t, axis), [t])
