"""The CPU's chunked sigmoid, leaky ReLU and GELU: many chunks, any layout of x and gy,
the reference's values, and the dispatch's choices."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.kernels
from minidl.kernels.cpu import elementwise

from support.arrays import channels_last

CALLS = {
    "sigmoid": F.sigmoid,
    "leaky_relu": lambda t: F.leaky_relu(t, 0.1), "leaky_relu_negative": lambda t: F.leaky_relu(t, -0.4),
    "leaky_relu_steep": lambda t: F.leaky_relu(t, 3.0),
    "gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
}


def _run(fn, x, gy):
    t = minidl.from_numpy(x).requires_grad_()   # x's memory as it is (minidl.tensor would copy it compact)
    y = fn(t)
    label = getattr(y.creator, "label", type(y.creator).__name__)
    y.backward(gy)
    return y, t.grad, label


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("x_last,gy_last", [(False, False), (True, True), (True, False), (False, True)])
def test_chunks_in_any_layout_give_the_references_values(monkeypatch, name, x_last, gy_last):
    monkeypatch.setattr(elementwise, "ELEMENTWISE_CHUNK_BYTES", 7 * 8)   # many chunks, one ending mid-pixel
    rng = np.random.default_rng(5)
    x = rng.choice([-1.0, 1.0], (2, 3, 4, 5)) * rng.uniform(0.05, 5.0, (2, 3, 4, 5))
    gy = rng.standard_normal(x.shape)
    lay = lambda a, last: channels_last(a) if last else a   # noqa: E731
    y, gx, label = _run(CALLS[name], lay(x, x_last), lay(gy, gy_last))
    assert label.endswith("[chunked]")
    assert y.data.strides == lay(x, x_last).strides   # the output keeps x's layout
    with minidl.kernels.use("reference"):
        y_ref, gx_ref, ref_label = _run(CALLS[name], x, gy)
    assert "[" not in ref_label
    np.testing.assert_allclose(y.numpy(), y_ref.numpy(), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(gx.numpy(), gx_ref.numpy(), rtol=1e-13, atol=1e-15)


def test_a_strided_view_and_tanh_run_the_reference():
    x = np.random.default_rng(6).standard_normal((4, 6))[:, ::2]   # neither C order nor channels-last
    for fn in CALLS.values():
        y, _, label = _run(fn, x, np.ones(x.shape))
        assert "[" not in label
    assert _run(F.tanh, np.ones((2, 3)), np.ones((2, 3)))[2] == "Tanh"   # NumPy's tanh is fast already
