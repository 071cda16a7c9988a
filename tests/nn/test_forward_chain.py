"""nn.forward_chain: layers in order, a training batch norm and its ReLU as one call, the same numbers."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl import models
from minidl.functional.fast_path import FastPath
from minidl.nn import chain


@pytest.fixture
def labels(monkeypatch):
    """The labels of the fast paths that run, in order."""
    seen, original = [], FastPath.forward
    monkeypatch.setattr(FastPath, "forward", lambda self, *a: seen.append(self.label) or original(self, *a))
    return seen


def _step(model, x, fuse, monkeypatch):
    """Logits, every parameter's gradient and every buffer after one forward and backward."""
    with monkeypatch.context() as patch:
        if not fuse:
            patch.setattr(chain, "_fusable", lambda layer, following: False)
        model.zero_grad()
        y = model(minidl.tensor(x))
        (y * y).sum().backward()
    return [y.numpy()] + [p.grad.numpy() for p in model.parameters()] + [b.copy() for _, b in model.named_buffers()]


def _conv_bn_relu(seed=0):
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, rng=rng), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 5, rng=rng))


def test_sequential_fuses_in_training_only(labels):
    net, x = _conv_bn_relu(), minidl.tensor(np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32))
    with minidl.kernels.use("fast"):
        net(x)
        assert "BatchNormReLU [fused passes]" in labels and not any(lb.startswith("ReLU") for lb in labels)
        labels.clear()
        net.eval()
        net(x)
        assert "BatchNorm [fused passes]" in labels and "BatchNormReLU [fused passes]" not in labels


@pytest.mark.parametrize("hooked", [1, 2])
def test_a_hook_on_either_layer_keeps_the_pair_apart(labels, hooked):
    net = _conv_bn_relu()
    calls = []
    net[hooked].register_forward_hook(lambda module, args, output: calls.append(type(module).__name__))
    with minidl.kernels.use("fast"):
        net(minidl.tensor(np.ones((2, 3, 8, 8), np.float32)))
    assert calls == [type(net[hooked]).__name__] and "BatchNormReLU [fused passes]" not in labels


def test_only_a_plain_relu_after_a_batch_norm_is_fused(labels):
    class MyReLU(nn.ReLU):   # a subclass may do anything in forward
        pass
    net = nn.Sequential(nn.BatchNorm2d(3), MyReLU(), nn.BatchNorm2d(3), nn.LeakyReLU(), nn.ReLU(), nn.BatchNorm2d(3))
    with minidl.kernels.use("fast"):
        net(minidl.tensor(np.random.default_rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32)))
    assert "BatchNormReLU [fused passes]" not in labels
    assert nn.forward_chain([], "anything") == "anything"


@pytest.mark.parametrize("build,shape", [
    (lambda: models.AlexNet(variant="cifar"), (4, 3, 32, 32)),
    (lambda: models.resnet20(), (4, 3, 32, 32)),
])
def test_models_train_the_same_fused_or_not(monkeypatch, labels, build, shape):
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    with minidl.kernels.use("fast"):
        unfused = _step(build(), x, False, monkeypatch)
        assert "BatchNormReLU [fused passes]" not in labels
        fused = _step(build(), x, True, monkeypatch)
        assert "BatchNormReLU [fused passes]" in labels
    assert len(fused) == len(unfused)
    for got, want in zip(fused, unfused):
        np.testing.assert_array_equal(got, want)
