"""conv_transpose2d and nn.ConvTranspose2d: against PyTorch forward and backward (stride, padding,
output_padding, dilation, groups), finite differences, the adjoint of conv2d, the layer's init,
repr and shapes, ONNX Runtime, and clear errors."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.nn as nn
from minidl.gradcheck import check_gradients

from support.devices import DEVICES

CASES = [
    ((2, 4, 5, 6), (4, 3, 3, 3), dict()),
    ((2, 4, 5, 6), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ((1, 6, 4, 3), (6, 2, 2, 3), dict(stride=(2, 3), groups=3)),
    ((2, 4, 5, 5), (4, 2, 3, 3), dict(stride=2, dilation=2, padding=2, output_padding=(1, 0))),
    ((2, 2, 3, 3), (2, 5, 4, 4), dict(stride=2, padding=1)),                 # DCGAN's upsampling by 2
    ((1, 4, 3, 3), (4, 1, 3, 3), dict(groups=4, stride=3, output_padding=2)),
    ((0, 2, 3, 3), (2, 3, 2, 2), dict(stride=2)),                            # an empty batch
]


@pytest.mark.parametrize("x_shape, w_shape, kwargs", CASES, ids=[str(c[2]) for c in CASES])
def test_matches_pytorch_forward_and_backward(x_shape, w_shape, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    arrays = (rng.standard_normal(x_shape), rng.standard_normal(w_shape),
              rng.standard_normal(w_shape[1] * kwargs.get("groups", 1)))
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    ty = torch.nn.functional.conv_transpose2d(*theirs, **kwargs)
    gy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(gy))
    ours = [minidl.tensor(a, requires_grad=True) for a in arrays]
    my = F.conv_transpose2d(*ours, **kwargs)
    my.backward(gy)
    assert my.shape == tuple(ty.shape)
    np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    for mine, their in zip(ours, theirs):
        np.testing.assert_allclose(mine.grad.numpy(), their.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_match_finite_differences(device):
    rng = np.random.default_rng(1)
    x, w, b = (minidl.tensor(rng.standard_normal(s), requires_grad=True, device=device)
               for s in ((2, 4, 3, 2), (4, 1, 3, 2), (2,)))
    check_gradients(lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1, groups=2),
                    [x, w, b])


def test_it_is_the_adjoint_of_conv2d():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((5, 3, 3, 3))                 # conv2d: 3 -> 5 channels; transposed: 5 -> 3
    a = rng.standard_normal((2, 3, 9, 8))
    b = rng.standard_normal((2, 5, 5, 4))                 # conv2d(a) is (2, 5, 5, 4) with stride 2, padding 1
    conv = F.conv2d(minidl.tensor(a), minidl.tensor(w), stride=2, padding=1).numpy()
    back = F.conv_transpose2d(minidl.tensor(b), minidl.tensor(w), stride=2, padding=1, output_padding=(0, 1)).numpy()
    assert back.shape == a.shape
    np.testing.assert_allclose(np.sum(conv * b), np.sum(a * back), rtol=1e-12)


def test_layer_init_repr_shapes_and_state_dict_follow_pytorch():
    torch = pytest.importorskip("torch")
    layer = nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1, rng=np.random.default_rng(3))
    twin = torch.nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1)
    assert repr(layer) == repr(twin) and list(layer.state_dict()) == list(twin.state_dict())
    assert layer.weight.shape == tuple(twin.weight.shape) == (8, 6, 4, 4)
    bound = 1 / np.sqrt(6 * 16)                            # fan_in = out_channels / groups * KH * KW, as PyTorch's
    assert 0.9 * bound < np.abs(layer.weight.numpy()).max() <= bound
    assert np.abs(twin.weight.detach().numpy()).max() <= bound
    twin.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    x = np.random.default_rng(4).standard_normal((2, 8, 5, 7)).astype(np.float32)
    y = layer(minidl.tensor(x))
    np.testing.assert_allclose(y.numpy(), twin(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-5)
    assert layer.shape_info((8, 5, 7))[0] == y.shape[1:] == (6, 10, 14)


def test_onnx_export_matches_onnxruntime(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import minidl.onnx
    rng = np.random.default_rng(5)
    net = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, rng=rng),
                        nn.ReLU(), nn.ConvTranspose2d(6, 2, 2, stride=2, dilation=1, bias=False, rng=rng))
    x = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
    minidl.onnx.export(net, tmp_path / "up.onnx", x.shape[1:])
    [theirs] = ort.InferenceSession(str(tmp_path / "up.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    np.testing.assert_allclose(theirs, net(minidl.tensor(x)).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call, match", [
    (lambda x, w: F.conv_transpose2d(x[0], w), r"expected input \(N, C_in, H, W\)"),
    (lambda x, w: F.conv_transpose2d(x, w[:2]), "input has 4 channels, weight"),
    (lambda x, w: F.conv_transpose2d(x, w, groups=3), "which groups=3 must divide"),
    (lambda x, w: F.conv_transpose2d(x, w, bias=minidl.tensor(np.ones(4))), r"bias must have shape \(3,\)"),
    (lambda x, w: F.conv_transpose2d(x, w, stride=2, output_padding=2), "output_padding must be smaller than the stride"),
    (lambda x, w: F.conv_transpose2d(x, w, padding=-1), "padding must be an int >= 0"),
    (lambda x, w: F.conv_transpose2d(x, w, padding=5), "too much padding"),
    (lambda x, w: nn.ConvTranspose2d(4, 6, 3, groups=4), "the channels divisible by groups"),
    (lambda x, w: nn.ConvTranspose2d(4, 6, 3, padding_mode="reflect"), "padding_mode 'reflect' is not supported"),
])
def test_bad_settings_are_refused_by_name(call, match):
    with pytest.raises(ValueError, match=match):
        call(minidl.tensor(np.ones((1, 4, 3, 3))), minidl.tensor(np.ones((4, 3, 3, 3))))
