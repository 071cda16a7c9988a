"""Inference's fused ops against the two ops they fuse: conv2d + relu, relu + max_pool2d."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.kernels
from minidl.functional import fused
from minidl.functional.fast_path import FastPath
from minidl.gradcheck import check_gradients

from support.arrays import channels_last


@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("channels,kernel,stride,padding,groups", [
    (3, 3, 1, 1, 1), (32, 3, 1, "same", 2), (16, 5, 1, 2, 1), (4, 2, 2, 0, 2), (20, 3, 2, "same", 1)])
def test_conv2d_relu_equals_relu_of_conv2d(kernel_mode, last, channels, kernel, stride, padding, groups):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, channels, 9, 8)).astype(np.float32)
    w = rng.standard_normal((8, channels // groups, kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    xt = minidl.tensor(channels_last(x) if last else x)
    with minidl.no_grad():
        got = fused.conv2d_relu(xt, minidl.tensor(w), minidl.tensor(b), stride, padding, groups)
        want = F.relu(F.conv2d(xt, minidl.tensor(w), minidl.tensor(b), stride, padding, groups))
    np.testing.assert_array_equal(got.numpy(), want.numpy())   # the same ops, the ReLU moved into the pass


def test_the_fused_fast_path_runs_for_inference_and_the_composition_for_training():
    rng = np.random.default_rng(1)
    x = minidl.tensor(rng.standard_normal((2, 16, 6, 6)), requires_grad=True)
    w = minidl.tensor(rng.standard_normal((4, 16, 3, 3)), requires_grad=True)
    with minidl.kernels.use("fast"):
        y = fused.conv2d_relu(x, w, None, 1, 1)
        assert y.creator.label == "ReLU [chunked]"           # a gradient is wanted: conv2d, then relu
        check_gradients(lambda x, w: fused.conv2d_relu(x, w, None, 1, 1), [x, w])
        check_gradients(lambda x: fused.relu_max_pool2d(x, 3, 2, 1), [x])
        calls = []
        original = FastPath.forward
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(FastPath, "forward", lambda self, *a: calls.append(self.label) or original(self, *a))
            with minidl.no_grad():
                fused.conv2d_relu(x, w, None, 1, 1)
                fused.relu_max_pool2d(x, 3, 2, 1)
        assert calls == ["Conv2dReLU [winograd F(2x2, 3x3)]", "ReLUMaxPool2d [batch slices]"]   # 6x6: the 2x2 tile


@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("kernel,stride,padding,ceil_mode", [(3, 2, 1, False), (2, 2, 0, False), (3, 2, 0, True),
                                                             ((3, 2), (2, 1), ((1, 0), (0, 1)), False),
                                                             (1, 2, 0, False), (2, 3, 1, True), (5, 2, 2, True),
                                                             ((3, 1), (1, 3), ((1, 1), (0, 0)), False),
                                                             (4, 1, 2, False)])
def test_relu_max_pool2d_equals_max_pool2d_of_relu(kernel_mode, last, kernel, stride, padding, ceil_mode):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5, 9, 7))
    x[0, 0] = -1.0 - rng.random((9, 7))      # a channel with no positive value: its windows give 0
    xt = minidl.tensor(channels_last(x) if last else x)
    with minidl.no_grad():
        got = fused.relu_max_pool2d(xt, kernel, stride, padding, ceil_mode)
        want = F.max_pool2d(F.relu(xt), kernel, stride, padding, ceil_mode=ceil_mode)
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert (got.numpy()[0, 0] == 0).all()


@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("residual_last", [False, True])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("channels,stride", [(16, 1), (3, 1), (8, 2)])   # Winograd, im2col, im2col strided
def test_conv2d_with_a_residual_equals_the_composed_ops(last, residual_last, relu, channels, stride):
    from minidl.nn.fuse import PreparedWeights
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, channels, 9, 8)).astype(np.float32)
    w = rng.standard_normal((8, channels, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    oh, ow = -(-9 // stride), -(-8 // stride)
    r = rng.standard_normal((3, 8, oh, ow)).astype(np.float32)
    xt, rt = minidl.tensor(channels_last(x) if last else x), minidl.tensor(channels_last(r) if residual_last else r)
    args = (xt, minidl.tensor(w), minidl.tensor(b), stride, 1)
    calls, original = [], FastPath.forward
    with minidl.kernels.use("fast"), minidl.no_grad(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(FastPath, "forward", lambda self, *a: calls.append(self.label) or original(self, *a))
        got = fused.conv2d_inference(*args, relu=relu, residual=rt, prepared=PreparedWeights())
        assert calls[0].startswith("Conv2dAddReLU [" if relu else "Conv2dAdd [")
        y = F.conv2d(*args) + rt
        want = F.relu(y) if relu else y
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_conv2d_residual_checks_and_falls_back():
    x, w = minidl.tensor(np.ones((2, 16, 6, 6), np.float32)), minidl.tensor(np.ones((4, 16, 3, 3), np.float32))
    with minidl.no_grad():
        with pytest.raises(ValueError, match=r"conv2d_inference: residual must have the output's shape \(2, 4, 6, 6\)"):
            fused.conv2d_inference(x, w, None, 1, 1, residual=minidl.tensor(np.ones((2, 4, 5, 6), np.float32)))
        r64 = minidl.tensor(np.full((2, 4, 6, 6), 0.5))   # another dtype: the composed ops, NumPy's promotion
        assert fused.conv2d_inference(x, w, None, 1, 1, residual=r64).dtype == np.float64
    r = minidl.tensor(np.ones((2, 4, 6, 6), np.float32), requires_grad=True)   # a gradient wanted: composed
    y = fused.conv2d_inference(x, w, None, 1, 1, residual=r, relu=True)
    y.sum().backward()
    np.testing.assert_array_equal(r.grad.numpy(), np.ones((2, 4, 6, 6), np.float32))
