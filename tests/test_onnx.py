"""minidl.onnx.export: the exported file, run by onnxruntime, gives minidl's eval logits.

Every AlexNet variant with random weights and random batch-norm statistics (so
that eval mode is really tested), plus a small Sequential with the padding forms
AlexNet does not use. Tolerance: relative error below 1e-4 in float32, measured
against the largest logit.
"""
import sys

import numpy as np
import pytest

import minidl
from minidl import nn
from minidl.models import AlexNet

onnx = pytest.importorskip("onnx", reason="needs the onnx extra")
ort = pytest.importorskip("onnxruntime", reason="needs the onnx extra")
import minidl.onnx  # noqa: E402


def _randomise(model, rng):
    """Random biases and batch-norm scale, shift and running statistics (weights keep their init)."""
    for module in model.modules():
        if getattr(module, "bias", None) is not None:
            module.bias.data[...] = rng.normal(0, 0.1, module.bias.shape)
        if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            c = module.num_features
            module.weight.data[...] = rng.uniform(0.5, 1.5, c)
            module.running_mean[...] = rng.normal(0, 0.5, c)
            module.running_var[...] = rng.uniform(0.5, 2.0, c)
    return model


def _compare(model, path, x, **export_args):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [theirs] = session.run(None, {"input": x})
    with minidl.no_grad():
        ours = model(minidl.Tensor(x)).numpy()
    assert theirs.shape == ours.shape
    return float(np.abs(theirs - ours).max() / np.abs(ours).max())


@pytest.mark.parametrize("variant", ["seed", "paper", "cifar"])
def test_alexnet_logits_match_onnxruntime(variant, tmp_path):
    rng = np.random.default_rng(0)
    model = _randomise(AlexNet(variant=variant), rng)
    before = model.state_dict()
    s = model.input_size
    path = minidl.onnx.export(model, tmp_path / f"{variant}.onnx", (3, s, s))
    assert model.training  # export reads the model in eval mode but leaves its mode alone
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    x = rng.normal(size=(2, 3, s, s)).astype(np.float32)
    assert _compare(model, path, x) < 1e-4


def test_sequential_padding_forms_and_fixed_batch(tmp_path):
    rng = np.random.default_rng(1)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=((0, 1), (2, 0)), rng=rng), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(3, 2, padding="same"), nn.Conv2d(4, 6, (2, 3), stride=(2, 1), padding="same", groups=2, rng=rng),
        nn.LocalResponseNorm(3, alpha=0.1, beta=0.6, k=1.5), nn.MaxPool2d(2, padding=1),
        nn.Sequential(nn.Flatten(), nn.Dropout(0.5)), nn.Linear(6 * 2 * 3, 5, rng=rng), nn.BatchNorm1d(5))
    _randomise(net, rng).eval()
    path = minidl.onnx.export(net, tmp_path / "net.onnx", (3, 3, 11, 9))
    proto = onnx.load(str(path))
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [3, 3, 11, 9]
    assert [node.op_type for node in proto.graph.node] == [
        "Conv", "BatchNormalization", "Relu", "MaxPool", "Conv", "LRN", "MaxPool", "Flatten", "Gemm",
        "BatchNormalization"]
    conv1 = proto.graph.node[0]
    assert [a.ints for a in conv1.attribute if a.name == "pads"] == [[0, 2, 1, 0]]  # top, left, bottom, right
    x = rng.normal(size=(3, 3, 11, 9)).astype(np.float32)
    assert _compare(net, path, x) < 1e-4


def test_dynamic_batch_size(tmp_path):
    model = _randomise(AlexNet(variant="cifar", widths=(4, 4, 4, 4, 4, 8, 8)), np.random.default_rng(2)).eval()
    path = minidl.onnx.export(model, tmp_path / "m.onnx", (3, 32, 32))
    for n in (1, 5):
        x = np.random.default_rng(n).normal(size=(n, 3, 32, 32)).astype(np.float32)
        assert _compare(model, path, x) < 1e-4


def test_what_cannot_be_exported(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"AlexNet\(variant='cifar'\) expects input \(N, 3, 32, 32\)"):
        minidl.onnx.export(AlexNet(variant="cifar"), tmp_path / "m.onnx", (3, 64, 64))
    with pytest.raises(ValueError, match="even size 4"):
        minidl.onnx.export(nn.Sequential(nn.LocalResponseNorm(4)), tmp_path / "m.onnx", (8, 5, 5))
    with pytest.raises(ValueError, match="no ONNX translation for layer '1'"):
        minidl.onnx.export(nn.Sequential(nn.ReLU(), nn.Module()), tmp_path / "m.onnx", (2, 3, 3))
    with pytest.raises(ValueError, match="expected an AlexNet, a ResNet, airbench94 or an nn.Sequential"):
        minidl.onnx.export(nn.ReLU(), tmp_path / "m.onnx", (2, 3, 3))
    with pytest.raises(ValueError, match="does not accept per-sample shape"):
        minidl.onnx.export(nn.Sequential(nn.Linear(4, 2)), tmp_path / "m.onnx", (2, 3, 3))
    assert not (tmp_path / "m.onnx").exists()
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"minidl\[onnx\]"):
        minidl.onnx.export(nn.Sequential(nn.ReLU()), tmp_path / "m.onnx", (2, 3, 3))


def test_airbench94_matches_onnxruntime(tmp_path):
    from minidl.models import airbench94
    model = airbench94().eval()
    rng = np.random.default_rng(0)
    for module in model.modules():   # running statistics that are not the identity, so they are tested
        if getattr(module, "running_mean", None) is not None:
            module.running_mean[...] = rng.normal(0, 0.1, module.running_mean.shape)
            module.running_var[...] = rng.uniform(0.5, 2.0, module.running_var.shape)
    minidl.onnx.export(model, tmp_path / "airbench94.onnx", (3, 32, 32))
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "airbench94.onnx"), providers=["CPUExecutionProvider"])
    [theirs] = session.run(None, {"input": x})
    with minidl.no_grad():
        ours = model(minidl.tensor(x)).numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4 * np.abs(ours).max())
    assert [n.op_type for n in onnx.load(str(tmp_path / "airbench94.onnx")).graph.node][-1] == "Mul"   # its Scale
