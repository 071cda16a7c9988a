"""Dense layer: y = x @ W.T + b against explicit sums, gradients, shape errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minidl
import minidl.functional as F
from minidl.gradcheck import check_gradients


def leaf(values, device="cpu", requires_grad=True):
    return minidl.tensor(values, requires_grad=requires_grad, device=device)


def linear_reference(x, w, b=None):
    """y[n, o] = sum_i x[n, i] * w[o, i] + b[o], summed explicitly."""
    y = np.zeros((x.shape[0], w.shape[0]))
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            y[n, o] = sum(x[n, i] * w[o, i] for i in range(x.shape[1])) + (0.0 if b is None else b[o])
    return y


@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_and_gradients(device, rng, with_bias):
    x, w, b = (leaf(rng.standard_normal(s), device) for s in ((4, 3), (5, 3), (5,)))
    args = [x, w, b] if with_bias else [x, w]
    y = F.linear(*args)
    assert y.shape == (4, 5)
    np.testing.assert_allclose(y.numpy(), linear_reference(*[t.numpy() for t in args]), rtol=1e-12)
    check_gradients(F.linear, args)


def test_gradients_when_only_some_inputs_require_grad(device, rng):
    x = leaf(rng.standard_normal((3, 2)), device, requires_grad=False)
    w = leaf(rng.standard_normal((4, 2)), device)
    b = leaf(rng.standard_normal(4), device, requires_grad=False)
    check_gradients(F.linear, [x, w, b])
    x.requires_grad, w.requires_grad, w.grad = True, False, None
    check_gradients(F.linear, [x, w, b])


def test_bias_gradient_is_the_batch_sum(rng):
    x, w, b = leaf(rng.standard_normal((6, 3))), leaf(rng.standard_normal((2, 3))), leaf(np.zeros(2))
    gy = rng.standard_normal((6, 2))
    F.linear(x, w, b).backward(gy)
    np.testing.assert_allclose(b.grad.numpy(), gy.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), gy.T @ x.numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), gy @ w.numpy(), rtol=1e-12)


def test_keeps_float32(rng):
    x = minidl.tensor(rng.standard_normal((2, 3)).astype(np.float32))
    w = minidl.tensor(rng.standard_normal((4, 3)).astype(np.float32))
    b = minidl.tensor(np.ones(4, np.float32))
    assert F.linear(x, w, b).dtype == np.float32


@given(n=st.integers(1, 4), fin=st.integers(1, 4), fout=st.integers(1, 4), with_bias=st.booleans(),
       seed=st.integers(0, 2 ** 16))
@settings(max_examples=20, deadline=None)
def test_any_shape(n, fin, fout, with_bias, seed):
    rng = np.random.default_rng(seed)
    args = [leaf(rng.standard_normal(s)) for s in ((n, fin), (fout, fin), (fout,))][:3 if with_bias else 2]
    np.testing.assert_allclose(F.linear(*args).numpy(), linear_reference(*[t.numpy() for t in args]),
                               rtol=1e-12, atol=1e-14)
    check_gradients(F.linear, args)


@pytest.mark.parametrize("x_shape, w_shape, b_shape", [
    ((), (2, 3), None),            # x 0-d
    ((2, 3, 1), (2, 3), None),     # x 3-D, features mismatch
    ((2, 3), (1, 2, 3), None),     # weight 3-D
    ((2, 3), (3,), (1,)),          # 1-D weight: bias must be 0-d
    ((2, 3), (4, 2), None),        # feature mismatch
    ((2, 3), (4, 3), (3,)),        # bias of the wrong length
    ((2, 3), (4, 3), (4, 1)),      # bias of the wrong rank
])
def test_rejects_bad_shapes(x_shape, w_shape, b_shape):
    bias = None if b_shape is None else leaf(np.ones(b_shape))
    with pytest.raises(ValueError, match="linear"):
        F.linear(leaf(np.ones(x_shape)), leaf(np.ones(w_shape)), bias)


def test_mixed_dtypes_are_refused_as_conv2d_and_pytorch_do():
    w = minidl.tensor(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"linear: x, weight and bias must share one dtype, got x float64, "
                                         r"weight float32"):
        F.linear(minidl.tensor(np.ones((4, 3))), w)
    with pytest.raises(ValueError, match=r"bias float64"):
        F.linear(minidl.tensor(np.ones((4, 3), np.float32)), w, minidl.tensor(np.zeros(2)))
