"""sigmoid, tanh, leaky_relu and gelu: against PyTorch forward and backward in both kernel modes and
layouts, finite differences, stability for large |x|, what backward keeps, and clear errors."""
import math
import warnings

import numpy as np
import pytest

import minidl
import minidl.functional as F
from minidl.gradcheck import check_gradients

from support.arrays import channels_last
from support.devices import DEVICES

CASES = [
    ("sigmoid", {}, lambda tf, t: tf.sigmoid(t)),
    ("tanh", {}, lambda tf, t: tf.tanh(t)),
    ("leaky_relu", {}, lambda tf, t: tf.leaky_relu(t)),
    ("leaky_relu", {"negative_slope": 0.2}, lambda tf, t: tf.leaky_relu(t, 0.2)),
    ("leaky_relu", {"negative_slope": -0.5}, lambda tf, t: tf.leaky_relu(t, -0.5)),
    ("leaky_relu", {"negative_slope": 1.5}, lambda tf, t: tf.leaky_relu(t, 1.5)),
    ("gelu", {}, lambda tf, t: tf.gelu(t)),
    ("gelu", {"approximate": "tanh"}, lambda tf, t: tf.gelu(t, approximate="tanh")),
]
IDS = [f"{name}-{kwargs}" for name, kwargs, _ in CASES]


def off_zero(rng, shape, scale=3.0):
    """Values with |x| >= 0.05: finite differences never straddle leaky ReLU's kink."""
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.05, scale, shape)


@pytest.mark.parametrize("name,kwargs,theirs", CASES, ids=IDS)
@pytest.mark.parametrize("last", [False, True])
def test_matches_pytorch(kernel_mode, name, kwargs, theirs, last):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = off_zero(rng, (2, 3, 4, 5), scale=6.0)
    x[0, 0, 0, :] = [-40.0, -12.0, 0.0, 12.0, 40.0]   # the tails and the kink itself
    gy = rng.standard_normal(x.shape)
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(torch.nn.functional, tx)
    ty.backward(torch.tensor(gy))
    mx = minidl.tensor(channels_last(x) if last else x, requires_grad=True)
    my = getattr(F, name)(mx, **kwargs)
    my.backward(channels_last(gy) if last else gy)
    np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-14)
    assert my.data.strides == mx.data.strides or kernel_mode == "reference"   # the fast path keeps the layout


@pytest.mark.parametrize("name,kwargs,theirs", CASES, ids=IDS)
@pytest.mark.parametrize("device", DEVICES)
def test_gradients_match_finite_differences(kernel_mode, device, name, kwargs, theirs):
    x = minidl.tensor(off_zero(np.random.default_rng(2), (3, 4)), requires_grad=True, device=device)
    check_gradients(lambda t: getattr(F, name)(t, **kwargs), [x])
    x4 = minidl.tensor(channels_last(off_zero(np.random.default_rng(3), (2, 3, 2, 2))), requires_grad=True)
    check_gradients(lambda t: getattr(F, name)(t, **kwargs), [x4])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_inputs_stay_finite_without_warnings(kernel_mode, dtype):
    x = np.array([-1e4, -800.0, -100.0, -30.0, 0.0, 30.0, 100.0, 800.0, 1e4], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # an overflow in exp would be a RuntimeWarning
        for name, kwargs, _ in CASES:
            t = minidl.tensor(x, requires_grad=True)
            y = getattr(F, name)(t, **kwargs)
            y.backward(np.ones_like(x))
            assert y.dtype == dtype and np.isfinite(y.numpy()).all() and np.isfinite(t.grad.numpy()).all(), name
    y = F.sigmoid(minidl.tensor(x)).numpy()
    np.testing.assert_array_equal(y[[0, 1, -2, -1]], [0.0, 0.0, 1.0, 1.0])
    assert y[4] == 0.5
    assert math.isclose(float(y[3]), 1 / (1 + math.exp(30)), rel_tol=1e-6)   # relative accuracy in the tail


def test_sigmoid_tanh_keep_only_their_output(kernel_mode):
    x = minidl.tensor(np.linspace(-2, 2, 12).reshape(3, 4), requires_grad=True)
    for fn in (F.sigmoid, F.tanh):
        y = fn(x)
        kept = [v for v in vars(getattr(y.creator, "impl", y.creator)).values() if isinstance(v, np.ndarray)]
        kept += list(getattr(y.creator, "saved_arrays", ()))
        assert len(kept) == 1 and kept[0] is y.data


@pytest.mark.parametrize("slope,keeps", [(0.01, "y"), (0.0, "y"), (-0.3, "x")])
def test_leaky_relu_keeps_the_output_unless_the_slope_is_negative(kernel_mode, slope, keeps):
    x = minidl.tensor(np.linspace(-2, 2, 12).reshape(3, 4), requires_grad=True)
    y = F.leaky_relu(x, slope)
    kept = [v for v in vars(getattr(y.creator, "impl", y.creator)).values() if isinstance(v, np.ndarray)]
    kept += list(getattr(y.creator, "saved_arrays", ()))
    assert len(kept) == 1 and kept[0] is (y.data if keeps == "y" else x.data)


def test_leaky_relu_zero_slope_is_relu_and_inplace_is_accepted(kernel_mode):
    rng = np.random.default_rng(4)
    x = off_zero(rng, (4, 5))
    np.testing.assert_array_equal(F.leaky_relu(minidl.tensor(x), 0.0).numpy(), np.maximum(x, 0))
    t = minidl.tensor(x.copy())
    F.leaky_relu(t, 0.1, inplace=True)
    np.testing.assert_array_equal(t.numpy(), x)   # minidl never writes into its input


@pytest.mark.parametrize("call,match", [
    (lambda x: F.gelu(x, approximate="erf"), r"gelu: approximate must be 'none' or 'tanh', got 'erf'"),
    (lambda x: F.leaky_relu(x, "0.1"), r"leaky_relu: negative_slope must be a real number, got '0.1'"),
    (lambda x: F.sigmoid(x.astype(np.int64)), r"sigmoid: expected a floating-point input, got dtype int64"),
    (lambda x: F.tanh(x.astype(np.int32)), r"tanh: expected a floating-point input, got dtype int32"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call(minidl.tensor(np.zeros((2, 2))))


def test_empty_and_scalar_shapes(kernel_mode):
    for name, kwargs, _ in CASES:
        for shape in [(0, 3, 4, 4), (), (5,)]:
            t = minidl.tensor(np.full(shape, 0.5, np.float32), requires_grad=True)
            y = getattr(F, name)(t, **kwargs)
            assert y.shape == shape and y.dtype == np.float32
            y.backward(np.ones(shape, np.float32))
            assert t.grad.shape == shape
