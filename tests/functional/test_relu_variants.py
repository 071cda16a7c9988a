"""The ReLU family (hardtanh, relu6, hardsigmoid, hardswish, silu, mish, elu, selu, softplus):
against PyTorch forward and backward (kinks and tails included), finite differences, dtypes,
large inputs, the layers, and clear errors."""
import warnings

import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.nn as nn
from minidl.gradcheck import check_gradients

from support.devices import DEVICES

CASES = [
    ("hardtanh", {}),
    ("hardtanh", {"min_val": -0.5, "max_val": 2.0}),
    ("relu6", {}),
    ("hardsigmoid", {}),
    ("hardswish", {}),
    ("silu", {}),
    ("mish", {}),
    ("elu", {}),
    ("elu", {"alpha": 0.3}),
    ("selu", {}),
    ("softplus", {}),
    ("softplus", {"beta": 2.0, "threshold": 5.0}),
]
IDS = [f"{name}-{kwargs}" for name, kwargs in CASES]
KINKS = np.array([-3.0, -1.0, -0.5, 0.0, 1.0, 2.0, 2.5, 3.0, 6.0])   # every bound, switch and kink above


def off_kinks(rng, shape, scale=8.0):
    """Values at least 0.05 from every kink: finite differences never straddle one."""
    x = rng.uniform(-scale, scale, shape)
    near = np.abs(x[..., None] - KINKS).min(axis=-1) < 0.05
    return np.where(near, x + 0.1, x)


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_matches_pytorch_forward_and_backward(name, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.uniform(-9, 9, (3, 4, 5))
    x[0, 0, :] = [-40.0, -6.0, 40.0, 6.0, 20.0]         # the tails, relu6's bound, softplus' switch
    x[0, 1, :] = [-3.0, 3.0, 0.0, -1.0, 1.0]            # the kinks themselves
    x[0, 2, :] = [2.5, 2.0, -0.5, 10.0, 10.1]           # hardtanh's custom bounds, beta*x around 20
    gy = rng.standard_normal(x.shape)
    tx = torch.tensor(x, requires_grad=True)
    ty = getattr(torch.nn.functional, name)(tx, **kwargs)
    ty.backward(torch.tensor(gy))
    mx = minidl.tensor(x, requires_grad=True)
    my = getattr(F, name)(mx, **kwargs)
    my.backward(gy)
    np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    # hardsigmoid: PyTorch's float64 slope is 1/6 rounded to float32 (see relu_variants.py)
    rtol = 1e-7 if name == "hardsigmoid" else 1e-12
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=rtol, atol=1e-14)


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
@pytest.mark.parametrize("device", DEVICES)
def test_gradients_match_finite_differences(device, name, kwargs):
    x = minidl.tensor(off_kinks(np.random.default_rng(2), (3, 4)), requires_grad=True, device=device)
    check_gradients(lambda t: getattr(F, name)(t, **kwargs), [x])


def test_known_values():
    x = minidl.tensor(np.array([-4.0, -3.0, -1.5, 0.0, 1.5, 3.0, 7.0]))
    np.testing.assert_allclose(F.relu6(x).numpy(), [0, 0, 0, 0, 1.5, 3, 6])
    np.testing.assert_allclose(F.hardsigmoid(x).numpy(), [0, 0, 0.25, 0.5, 0.75, 1, 1])
    np.testing.assert_allclose(F.hardswish(x).numpy(), [0, 0, -0.375, 0, 1.125, 3, 7])
    np.testing.assert_allclose(F.silu(x).numpy()[3:5], [0, 1.5 / (1 + np.exp(-1.5))])
    np.testing.assert_allclose(F.elu(x, alpha=2.0).numpy()[:2], 2 * np.expm1([-4.0, -3.0]))
    np.testing.assert_allclose(F.softplus(x).numpy()[3], np.log(2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_kept_and_large_inputs_finite_without_warnings(dtype):
    x = np.array([-1e4, -800.0, -100.0, -30.0, 0.0, 30.0, 100.0, 800.0, 1e4], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # an overflow in exp would be a RuntimeWarning
        for name, kwargs in CASES:
            t = minidl.tensor(x, requires_grad=True)
            y = getattr(F, name)(t, **kwargs)
            y.backward(np.ones_like(x))
            assert y.dtype == dtype and t.grad.dtype == dtype, name
            assert np.isfinite(y.numpy()).all() and np.isfinite(t.grad.numpy()).all(), name
    np.testing.assert_array_equal(F.softplus(minidl.tensor(x)).numpy()[-3:], x[-3:])   # linear past the threshold
    np.testing.assert_array_equal(F.silu(minidl.tensor(x)).numpy()[[0, -1]], [0.0, 1e4])


def test_empty_and_0d_inputs():
    for name, kwargs in CASES:
        assert getattr(F, name)(minidl.tensor(np.zeros((0, 3))), **kwargs).shape == (0, 3)
        assert getattr(F, name)(minidl.tensor(np.float64(0.5)), **kwargs).shape == ()


@pytest.mark.parametrize("call, match", [
    (lambda x: F.silu(minidl.tensor(np.arange(3))), "silu: expected a floating-point input"),
    (lambda x: F.hardtanh(x, 2.0, 1.0), "hardtanh: min_val must not exceed max_val"),
    (lambda x: F.hardtanh(x, float("nan")), "hardtanh: min_val must be a finite real number"),
    (lambda x: F.softplus(x, beta=0), "softplus: beta must be positive"),
    (lambda x: F.softplus(x, beta="2"), "softplus: beta must be a finite real number"),
    (lambda x: F.elu(x, alpha=None), "elu: alpha must be a finite real number"),
    (lambda x: nn.Hardtanh(1.0, -1.0), "Hardtanh: min_val must not exceed max_val"),
    (lambda x: nn.Softplus(beta=-1), "Softplus: beta must be positive"),
])
def test_bad_arguments_raise_value_error_naming_the_function(call, match):
    with pytest.raises(ValueError, match=match):
        call(minidl.tensor(np.zeros(3)))


LAYERS = [
    (nn.ReLU6(), "relu6", {}),
    (nn.Hardtanh(-2.0, 0.5), "hardtanh", {"min_val": -2.0, "max_val": 0.5}),
    (nn.Hardsigmoid(), "hardsigmoid", {}),
    (nn.Hardswish(inplace=True), "hardswish", {}),
    (nn.SiLU(), "silu", {}),
    (nn.Mish(), "mish", {}),
    (nn.ELU(alpha=0.5, inplace=True), "elu", {"alpha": 0.5}),
    (nn.SELU(), "selu", {}),
    (nn.Softplus(beta=3.0, threshold=4.0), "softplus", {"beta": 3.0, "threshold": 4.0}),
]


@pytest.mark.parametrize("layer, name, kwargs", LAYERS, ids=[type(layer).__name__ for layer, _, _ in LAYERS])
def test_layers_apply_their_function_leave_the_input_alone_and_hold_no_state(layer, name, kwargs):
    values = np.random.default_rng(3).uniform(-5, 5, (2, 3, 4, 4))
    x = minidl.tensor(values.copy())
    np.testing.assert_array_equal(layer(x).numpy(), getattr(F, name)(x, **kwargs).numpy())
    np.testing.assert_array_equal(x.numpy(), values)      # inplace=True too: minidl never overwrites
    assert layer.state_dict() == {} and list(layer.parameters()) == []
    assert layer.shape_info((2, 3, 4, 4))[0] == (2, 3, 4, 4)


def test_layers_repr_and_signatures_match_pytorch():
    torch = pytest.importorskip("torch")
    pairs = [(nn.ReLU6(inplace=True), torch.nn.ReLU6(inplace=True)), (nn.Hardtanh(-2.0, 2.0), torch.nn.Hardtanh(-2.0, 2.0)),
             (nn.ELU(0.5), torch.nn.ELU(0.5)), (nn.Softplus(2.0, 10.0), torch.nn.Softplus(2.0, 10.0)),
             (nn.SiLU(), torch.nn.SiLU()), (nn.Hardswish(), torch.nn.Hardswish())]
    for mine, theirs in pairs:
        assert repr(mine) == repr(theirs)
