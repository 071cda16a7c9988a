"""GELU's float32 fast path: Press et al.'s erfc fit keeps Phi's relative error near float32's own."""
import math

import numpy as np

import minidl
import minidl.functional as F
from minidl.kernels.cpu.activations import _normal_cdf_float32
from minidl.special import erfc


def test_normal_cdf_relative_error_stays_below_a_microunit_into_the_tail():
    x = np.concatenate([np.linspace(-13.0, 9.0, 100_001), [-40.0, -1e4, 0.0, 1e4]]).astype(np.float32)
    cdf, gauss = _normal_cdf_float32(x)
    want = 0.5 * erfc(-x.astype(np.float64) / math.sqrt(2.0))
    normal = want > 1e-37                   # below, float32 is denormal or underflows
    assert (np.abs(cdf[normal] - want[normal]) <= 1e-6 * want[normal]).all()
    assert cdf[-3] == 0.0 and cdf[-1] == 1.0 and cdf[-2] == 0.5
    want_gauss = np.exp(-x.astype(np.float64) ** 2 / 2)
    normal = want_gauss > 1e-37
    assert (np.abs(gauss[normal] - want_gauss[normal]) <= 1e-6 * want_gauss[normal]).all()


def test_float32_gelu_and_its_gradient_agree_with_float64_relatively():
    x32 = np.linspace(-9.0, 9.0, 4001).astype(np.float32)
    x = x32.astype(np.float64)             # the same inputs: far out, Phi is sensitive to x's rounding
    t = minidl.tensor(x32, requires_grad=True)
    y = F.gelu(t)
    y.backward(np.ones(x.shape, np.float32))
    assert type(y.creator).__name__ == "FastPath"
    cdf = 0.5 * erfc(-x / math.sqrt(2.0))
    want_y, want_g = x * cdf, cdf + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(y.numpy(), want_y, rtol=2e-6, atol=1e-30)
    np.testing.assert_allclose(t.grad.numpy(), want_g, rtol=2e-6, atol=2e-7)


def test_gelu_keeps_only_its_slope_and_none_for_inference():
    from minidl.kernels.cpu.activations import ChunkedGELU
    x = np.random.default_rng(0).standard_normal((3, 50)).astype(np.float32) * 3
    gy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    inferring = ChunkedGELU("none")
    inferring.keep_for_backward = False
    y = inferring.forward(x)
    assert inferring.slope is None and not hasattr(inferring, "x")
    training = ChunkedGELU("none")
    np.testing.assert_array_equal(training.forward(x), y)
    assert not hasattr(training, "x")            # backward needs only the slope
    x64 = x.astype(np.float64)
    cdf = 0.5 * erfc(-x64 / math.sqrt(2.0))
    want = gy * (cdf + x64 * np.exp(-x64 * x64 / 2) / math.sqrt(2 * math.pi))
    np.testing.assert_allclose(training.backward(gy, (True,))[0], want, rtol=2e-6, atol=1e-7)
