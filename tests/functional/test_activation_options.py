"""PyTorch's arguments on relu, softmax, log_softmax, dropout and linear: dim= beside axis=, dtype=,
inplace=, empty and 0-d inputs, p = 1, (*, in_features) inputs; against PyTorch where it applies."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
from minidl.gradcheck import check_gradients

torch = pytest.importorskip("torch")
tf = torch.nn.functional


def leaf(values):
    return minidl.tensor(values, requires_grad=True)


@pytest.mark.parametrize("shape, dim", [((3, 4), 1), ((2, 3, 4), 0), ((2, 3, 4), -2), ((5,), 0), ((), 0), ((), -1),
                                        ((0, 4), 1), ((4, 0), 1), ((2, 0, 3), 2)])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_dim_matches_pytorch(kernel_mode, rng, shape, dim, name):
    x = rng.standard_normal(shape) * 3
    tx = torch.tensor(x, requires_grad=True)
    ty = getattr(tf, name)(tx, dim=dim)
    gy = rng.standard_normal(shape)
    ty.backward(torch.tensor(gy))
    mx = leaf(x)
    my = getattr(F, name)(mx, dim=dim)
    assert my.shape == shape
    my.backward(gy)
    np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(getattr(F, name)(minidl.tensor(x), dim).numpy(), my.numpy())   # positional


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_dtype_casts_first_and_gradients_flow_back(rng, name):
    x = leaf(rng.standard_normal((3, 4)).astype(np.float32))
    y = getattr(F, name)(x, dim=1, dtype=np.float64)
    assert y.dtype == np.float64
    expected = getattr(tf, name)(torch.tensor(x.numpy()), dim=1, dtype=torch.float64).numpy()
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12)
    y.backward(np.ones(y.shape))
    assert x.grad.dtype == np.float32
    x64 = leaf(rng.standard_normal((2, 3)))
    check_gradients(lambda t: getattr(F, name)(t, dim=0, dtype=np.float64), [x64])


@pytest.mark.parametrize("kwargs, match", [
    ({"axis": 0, "dim": 1}, r"softmax: give axis or dim \(PyTorch's name for it\), not both"),
    ({"dim": 2}, r"softmax: axis must be an int in \[-2, 2\) for x of shape \(3, 4\), got 2"),
    ({"axis": 1.0}, r"softmax: axis must be an int"),
])
def test_bad_axes_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        F.softmax(minidl.tensor(np.zeros((3, 4))), **kwargs)


def test_axis_and_dim_may_agree():
    x = minidl.tensor(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(F.log_softmax(x, axis=0, dim=0).numpy(), F.log_softmax(x, axis=0).numpy())


@pytest.mark.parametrize("inplace", [False, True])
def test_relu_and_dropout_accept_inplace_and_leave_x_alone(kernel_mode, rng, inplace):
    values = rng.standard_normal((3, 4))
    x = leaf(values.copy())
    y = F.relu(x, inplace=inplace)
    np.testing.assert_array_equal(y.numpy(), np.maximum(values, 0))
    np.testing.assert_array_equal(x.numpy(), values)   # documented: minidl never writes into x
    d = F.dropout(x, 0.5, True, np.random.default_rng(0), inplace=inplace)
    assert d is not x
    np.testing.assert_array_equal(x.numpy(), values)


def test_relu_of_0d_and_integers(kernel_mode):
    np.testing.assert_array_equal(F.relu(minidl.tensor(np.array(-2.0))).numpy(), 0.0)
    np.testing.assert_array_equal(F.relu(minidl.tensor(np.array([-3, 4]))).numpy(),
                                  tf.relu(torch.tensor([-3, 4])).numpy())


def test_dropout_with_p_one_zeros_everything_as_pytorch(kernel_mode):
    x = leaf(np.arange(1.0, 7.0).reshape(2, 3))
    y = F.dropout(x, 1.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(y.numpy(), tf.dropout(torch.tensor(x.numpy()), 1.0).numpy())
    y.backward(np.ones(y.shape))
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((2, 3)))


@pytest.mark.parametrize("x_shape, w_shape, with_bias", [
    ((2, 3, 4), (5, 4), True), ((4,), (5, 4), True), ((2, 1, 3, 4), (2, 4), False), ((3, 4), (4,), False),
    ((4,), (4,), False), ((0, 2, 4), (3, 4), True), ((2, 0), (3, 0), True),
])
def test_linear_on_any_leading_axes_matches_pytorch(kernel_mode, rng, x_shape, w_shape, with_bias):
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[:-1]) if with_bias else None
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    ty = tf.linear(tx, tw, tb)
    gy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(gy))
    args = [leaf(a) for a in ((x, w) if b is None else (x, w, b))]
    y = F.linear(*args)
    assert y.shape == tuple(ty.shape)
    y.backward(gy)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    for m, t in zip(args, (tx, tw, tb)):
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_linear_gradients_on_3d_input(kernel_mode, rng):
    args = [leaf(rng.standard_normal(s)) for s in ((2, 3, 4), (5, 4), (5,))]
    check_gradients(F.linear, args)
