"""The CPU's chunked ReLU: any layout in, the same layout out, the same values as the reference."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
from minidl.kernels.cpu import elementwise


@pytest.mark.parametrize("x_last,gy_last", [(False, False), (True, True), (True, False)])
def test_relu_in_chunks_any_layout(monkeypatch, x_last, gy_last):
    # On the CPU, ReLU runs in chunks on the workers when x and gy share a layout, and as
    # one whole-array expression when they do not; the values are the same either way,
    # and the output keeps x's layout.
    monkeypatch.setattr(elementwise, "ELEMENTWISE_CHUNK_BYTES", 7 * 8)   # many chunks, one ending mid-pixel
    rng = np.random.default_rng(3)

    def layout(a, last):
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) if last else a
    x = rng.standard_normal((2, 3, 4, 5))
    gy = rng.standard_normal(x.shape)
    xt = minidl.tensor(layout(x, x_last), requires_grad=True)
    y = F.relu(xt)
    assert y.creator.label == "ReLU [chunked]" and y.data.strides == xt.data.strides
    y.backward(layout(gy, gy_last))
    np.testing.assert_array_equal(y.numpy(), np.maximum(x, 0))
    np.testing.assert_array_equal(xt.grad.numpy(), gy * (x > 0))
