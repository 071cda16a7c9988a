"""The CPU's average pooling: batch slices and layouts change nothing (the results are the
reference's to the last bit), the tiled backward, the global average, and which kernel runs."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.kernels
from minidl.kernels.cpu import average_pooling as cpu_average_pooling

from support.arrays import channels_last, is_channels_last


def _run(x, gy, fn):
    """fn's output, the input's gradient, and what ran (read before backward frees the graph)."""
    xt = minidl.tensor(x, requires_grad=True)
    y = fn(xt)
    ran = getattr(y.creator, "label", type(y.creator).__name__)
    y.backward(gy)
    return y, xt.grad, ran


@pytest.mark.parametrize("args,kwargs", [((3, 2, 1), {"ceil_mode": True}), ((2,), {}),
                                         (((2, 3), (1, 2), ((1, 0), (0, 1))), {"count_include_pad": False}),
                                         ((3, 3), {"divisor_override": 5, "ceil_mode": True})])
def test_equals_the_reference_bit_for_bit_in_slices(monkeypatch, args, kwargs):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 2, 9, 8))
    fn = lambda t: F.avg_pool2d(t, *args, **kwargs)   # noqa: E731
    with minidl.kernels.use("reference"):
        y_ref = fn(minidl.tensor(x))
    gy = rng.standard_normal(y_ref.shape)
    with minidl.kernels.use("reference"):
        _, gx_ref, _ = _run(x, gy, fn)
    monkeypatch.setattr(cpu_average_pooling, "POOLING_BYTES", 1)   # one image per slice
    for data in (x, channels_last(x)):
        y, gx, ran = _run(data, gy, fn)
        # Channels-last input runs the slices; on NCHW input the reference is as fast.
        assert ran == ("AvgPool2d [batch slices]" if is_channels_last(data) else "AvgPool2d")
        assert is_channels_last(y.data) == is_channels_last(gx.data) == is_channels_last(data)
        np.testing.assert_array_equal(y.numpy(), y_ref.numpy())
        np.testing.assert_array_equal(gx.numpy(), gx_ref.numpy())


def test_windows_that_tile_the_input_write_the_gradient_directly():
    # kernel = stride, no padding, nothing left over: each cell gets exactly its window's share.
    rng = np.random.default_rng(9)
    x = channels_last(rng.standard_normal((2, 3, 6, 4)))
    gy = rng.standard_normal((2, 3, 3, 2))
    _, gx, _ = _run(x, gy, lambda t: F.avg_pool2d(t, 2))
    np.testing.assert_array_equal(gx.numpy(), np.repeat(np.repeat(gy / 4, 2, axis=2), 2, axis=3))
    # 7 rows: the last row belongs to no window and gets zero.
    x = channels_last(rng.standard_normal((2, 3, 7, 4)))
    _, gx, _ = _run(x, gy, lambda t: F.avg_pool2d(t, 2))
    assert (gx.numpy()[:, :, 6] == 0).all()


@pytest.mark.parametrize("last", [False, True])
def test_global_average_keeps_the_layout_and_keeps_no_copy_of_x(last):
    # ResNet's head on the CPU: y and gx in x's layout, and backward needs only x's shape.
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 16, 8, 8)).astype(np.float32)
    xt = minidl.tensor(channels_last(x) if last else x, requires_grad=True)
    y = F.adaptive_avg_pool2d(xt, 1)
    assert y.creator.label == "AdaptiveAvgPool2d [global]"
    assert not any(isinstance(v, np.ndarray) for v in vars(y.creator.impl).values())
    gy = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(gy)
    np.testing.assert_allclose(y.numpy(), x.mean(axis=(2, 3), keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(xt.grad.numpy(), np.broadcast_to(gy / 64, x.shape), rtol=1e-6)
    assert is_channels_last(xt.grad.data) == last


@pytest.mark.parametrize("output_size,label", [(1, "AdaptiveAvgPool2d [global]"),
                                               ((3, 2), "AdaptiveAvgPool2d [batch slices]"),
                                               ((4, 3), "AdaptiveAvgPool2d")])
def test_adaptive_average_runs_a_fast_path_when_the_windows_are_plain(output_size, label):
    # 6 x 4 -> 3 x 2 is 2 x 2 pooling; 6 x 4 -> 4 x 3 has windows of different sizes: the reference.
    rng = np.random.default_rng(10)
    x = channels_last(rng.standard_normal((2, 3, 6, 4)))
    y, gx, ran = _run(x, np.ones((2, 3) + ((1, 1) if output_size == 1 else output_size)),
                      lambda t: F.adaptive_avg_pool2d(t, output_size))
    assert ran == label
    with minidl.kernels.use("reference"):
        y_ref, gx_ref, _ = _run(x, np.ones(y.shape), lambda t: F.adaptive_avg_pool2d(t, output_size))
    np.testing.assert_allclose(y.numpy(), y_ref.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gx.numpy(), gx_ref.numpy(), rtol=1e-12)
