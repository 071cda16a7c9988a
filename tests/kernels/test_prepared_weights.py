"""PreparedWeights: a frozen layer's transformed weight is computed once, and again only for a new weight."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.kernels.cpu.winograd import WinogradConv2d
from minidl.kernels.prepared_weights import PreparedWeights


def test_prepared_once_per_weight_array_and_key():
    prepared, calls = PreparedWeights(), []

    def prepare(w):
        calls.append(w)
        return w * 2

    w = np.arange(4.0)
    first = prepared.get(w, "twice", lambda: prepare(w))
    assert prepared.get(w, "twice", lambda: prepare(w)) is first and len(calls) == 1
    other = w.copy()          # equal values, another array: prepared again
    assert prepared.get(other, "twice", lambda: prepare(other)) is not first and len(calls) == 2
    prepared.get(other, "thrice", lambda: prepare(other))   # another form of the same weight
    assert len(calls) == 3 and len(prepared) == 2
    prepared.clear()
    assert len(prepared) == 0


def test_winograd_with_prepared_weights_computes_the_same_and_transforms_once(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
    plain = WinogradConv2d(4, 3, ((1, 1), (1, 1)), 1).forward(x, w)
    transforms = []
    original = WinogradConv2d._transform_weight
    monkeypatch.setattr(WinogradConv2d, "_transform_weight",
                        lambda self, weight: transforms.append(1) or original(self, weight))
    prepared = PreparedWeights()
    for _ in range(3):
        kernel = WinogradConv2d(4, 3, ((1, 1), (1, 1)), 1, prepared=prepared)
        kernel.keep_for_backward = False
        np.testing.assert_array_equal(kernel.forward(x, w), plain)
    assert len(transforms) == 1
    WinogradConv2d(2, 3, ((1, 1), (1, 1)), 1, prepared=prepared).forward(x, w)   # another tile: its own U
    assert len(transforms) == 2


def test_fused_convolution_keeps_its_transform_and_its_weight_read_only():
    rng = np.random.default_rng(1)
    model = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
    fused = nn.fuse_for_inference(model)
    conv = fused[0]
    x = minidl.tensor(rng.standard_normal((2, 16, 12, 12)).astype(np.float32))
    with minidl.no_grad():
        first = fused(x).numpy()
        assert len(conv.prepared) == 1          # the 16-channel 3x3 convolution ran Winograd
        np.testing.assert_array_equal(fused(x).numpy(), first)
        np.testing.assert_allclose(first, model.eval()(x).numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="read-only"):
        conv.weight.data[...] = 0.0              # a stale transform can never be read
    replaced = np.ascontiguousarray(conv.weight.data * 2)   # a new array is prepared again
    conv.weight.data = replaced
    conv.bias.data = np.zeros_like(conv.bias.data)
    with minidl.no_grad():
        again = fused(x).numpy()
    want = np.maximum(minidl.functional.conv2d(x, minidl.tensor(replaced), None, padding=1).numpy(), 0)
    np.testing.assert_allclose(again, want, rtol=1e-5, atol=1e-5)
