"""minidl.onnx.export of the pooling and activation layers beyond AlexNet's: onnxruntime gives
minidl's outputs on a small nn.Sequential using them all, and on every AvgPool2d option (ceil-mode
overhangs, count_include_pad, divisor_override); what cannot export says why."""
import itertools

import numpy as np
import pytest

import minidl
from minidl import nn

onnx = pytest.importorskip("onnx", reason="needs the onnx extra")
ort = pytest.importorskip("onnxruntime", reason="needs the onnx extra")
import minidl.onnx  # noqa: E402


def _run(model, path, x):
    """(onnxruntime's output, minidl's output, the graph's operators)."""
    minidl.onnx.export(model, path, x.shape[1:])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [theirs] = session.run(None, {"input": x})
    with minidl.no_grad():
        ours = model(minidl.tensor(x)).numpy()
    return theirs, ours, [node.op_type for node in onnx.load(str(path)).graph.node]


def test_sequential_of_the_new_layers_matches_onnxruntime(tmp_path):
    rng = np.random.default_rng(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, rng=rng), nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        nn.LeakyReLU(0.1), nn.GELU(), nn.AdaptiveMaxPool2d((4, None)), nn.Tanh(), nn.Identity(),
        nn.GELU("tanh"), nn.AdaptiveAvgPool2d((2, 2)), nn.Sigmoid(), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(4, 3, rng=rng)).eval()
    x = rng.normal(0, 2, (2, 3, 15, 10)).astype(np.float32)
    theirs, ours, ops = _run(net, tmp_path / "net.onnx", x)
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)
    assert ops == ["Conv", "Pad", "AveragePool", "Mul", "LeakyRelu", "Div", "Erf", "Mul", "Add", "Mul", "MaxPool",
                   "Tanh", "Mul", "Mul", "Mul", "Add", "Mul", "Tanh", "Mul", "Add", "Mul", "AveragePool", "Sigmoid",
                   "AveragePool", "GlobalAveragePool", "Flatten", "Gemm"]


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1), ((3, 2), (2, 3), (1, 0))])
def test_every_avg_pool_option_matches_onnxruntime(tmp_path, kernel, stride, padding):
    x = np.random.default_rng(1).standard_normal((1, 2, 8, 9)).astype(np.float32)
    for ceil_mode, count_include_pad, divisor in itertools.product([False, True], [False, True], [None, 5]):
        net = nn.Sequential(nn.AvgPool2d(kernel, stride, padding, ceil_mode, count_include_pad, divisor))
        theirs, ours, _ = _run(net, tmp_path / "pool.onnx", x)
        assert theirs.shape == ours.shape
        np.testing.assert_allclose(theirs, ours, rtol=1e-6, atol=1e-6,
                                   err_msg=f"ceil_mode={ceil_mode}, count_include_pad={count_include_pad}, "
                                           f"divisor_override={divisor}")


@pytest.mark.parametrize("pool", [nn.MaxPool2d(3, 2, ceil_mode=True), nn.MaxPool2d(3, 2, 1, dilation=2),
                                  nn.MaxPool2d((3, 2), 2, (1, 0), dilation=(1, 2), ceil_mode=True)])
def test_max_pool_options_and_dilated_convolutions_match_onnxruntime(tmp_path, pool):
    rng = np.random.default_rng(2)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=2, dilation=2, rng=rng), pool).eval()
    x = rng.standard_normal((1, 2, 10, 9)).astype(np.float32)
    theirs, ours, ops = _run(net, tmp_path / "pool.onnx", x)
    assert ops == ["Conv", "MaxPool"] and theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer,match", [
    (nn.MaxPool2d(2, return_indices=True), r"returns indices; only the pooled values export"),
    (nn.AdaptiveAvgPool2d((3, 3)), r"pools 8x8 to 3x3, whose windows differ in size"),
    (nn.AdaptiveMaxPool2d(2, return_indices=True), r"returns indices; only the pooled values export"),
])
def test_what_cannot_be_exported(tmp_path, layer, match):
    with pytest.raises(ValueError, match=r"minidl.onnx.export: 0 " + match):
        minidl.onnx.export(nn.Sequential(layer), tmp_path / "x.onnx", (2, 8, 8))


def test_the_relu_family_matches_onnxruntime(tmp_path):
    rng = np.random.default_rng(5)
    layers = [nn.Hardtanh(-2.0, 2.5), nn.ReLU6(), nn.Hardsigmoid(), nn.Hardswish(), nn.SiLU(), nn.Mish(),
              nn.ELU(0.7), nn.SELU(), nn.Softplus(), nn.Softplus(beta=2.0, threshold=3.0)]
    x = rng.uniform(-8, 8, (2, 3, 5, 6)).astype(np.float32)
    x[0, 0, 0, :] = [-3.0, 3.0, 0.0, 6.0, 1.5, 1.49]   # kinks, and Softplus(beta=2)'s switch at x = 1.5
    for layer in layers:
        theirs, ours, ops = _run(nn.Sequential(layer), tmp_path / "act.onnx", x)
        np.testing.assert_allclose(theirs, ours, rtol=2e-6, atol=2e-6, err_msg=repr(layer))
    assert _run(nn.Sequential(nn.ReLU6()), tmp_path / "a.onnx", x)[2] == ["Clip"]
    assert _run(nn.Sequential(nn.Mish()), tmp_path / "a.onnx", x)[2] == ["Softplus", "Tanh", "Mul"]


def test_layer_norm_group_norm_and_upsample_match_onnxruntime(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.normal(1, 2, (2, 4, 5, 6)).astype(np.float32)
    layers = [nn.GroupNorm(2, 4), nn.GroupNorm(4, 4, affine=False), nn.GroupNorm(1, 4, bias=False),
              nn.LayerNorm((5, 6)), nn.LayerNorm(6, elementwise_affine=False),
              nn.Upsample(scale_factor=2), nn.Upsample(size=(7, 13)), nn.Upsample(scale_factor=1.5, mode="nearest-exact"),
              nn.Upsample(size=(9, 4), mode="nearest-exact"), nn.Upsample(size=(11, 3), mode="bilinear"),
              nn.Upsample(scale_factor=2.5, mode="bilinear"), nn.Upsample(size=(1, 3), mode="bilinear"),
              nn.UpsamplingBilinear2d(size=(8, 9)), nn.Upsample(scale_factor=0.5, mode="bilinear", align_corners=True)]
    for layer in layers:
        for name, p in layer.named_parameters():   # not the initial ones and zeros
            p.data[...] = rng.standard_normal(p.shape)
        theirs, ours, _ = _run(nn.Sequential(layer), tmp_path / "layer.onnx", x)
        assert theirs.shape == ours.shape, repr(layer)
        np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5, err_msg=repr(layer))
    with pytest.raises(ValueError, match="Upsample\\(mode='area'\\); export it as AdaptiveAvgPool2d"):
        minidl.onnx.export(nn.Sequential(nn.Upsample(size=2, mode="area")), tmp_path / "a.onnx", (4, 5, 6))
