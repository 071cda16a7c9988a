"""AlexNet variants: layer shapes, parameter counts, state_dict keys, summary, init, input checks."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.nn as nn
from minidl import viz
from minidl.models import AlexNet


@pytest.fixture(scope="module")
def seed_model():
    return AlexNet(num_classes=10, variant="seed")


def counts(model):
    trainable = sum(p.size for p in model.parameters() if p.requires_grad)
    frozen = sum(int(b.size) for b in model.buffers())
    return trainable, frozen


def run_layers(model, x):
    """Run the model layer by layer, checking each output against the arithmetic shape_info."""
    shape = x.shape[1:]
    outputs = {}
    for name, layer in model.named_children():
        x = layer(x)
        shape, _ = layer.shape_info(shape)
        assert x.shape == (x.shape[0],) + shape, name
        outputs[name] = x
    return outputs


def test_seed_parameter_counts_exact(seed_model):
    assert counts(seed_model) == (56_909_898, 704)
    assert sum(counts(seed_model)) == 56_910_602
    text = seed_model.summary((3, 224, 224), print_fn=None)
    assert "Total params: 56,910,602" in text
    assert "Trainable params: 56,909,898" in text and "Non-trainable params: 704" in text


def test_seed_layers_and_state_dict_keys(seed_model):
    shapes = {k: v.shape for k, v in seed_model.state_dict().items()}
    assert list(shapes) == [
        "conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
        "conv2.weight", "conv2.bias", "bn2.weight", "bn2.bias", "bn2.running_mean", "bn2.running_var",
        "conv3.weight", "conv3.bias", "conv4.weight", "conv4.bias", "conv5.weight", "conv5.bias",
        "fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias", "fc8.weight", "fc8.bias"]
    assert shapes["conv1.weight"] == (96, 3, 11, 11)
    assert shapes["conv2.weight"] == (256, 48, 5, 5)     # two streams: each filter sees 48 channels
    assert shapes["conv3.weight"] == (384, 256, 3, 3)    # both streams
    assert shapes["conv4.weight"] == (384, 192, 3, 3)
    assert shapes["conv5.weight"] == (256, 192, 3, 3)
    assert shapes["fc6.weight"] == (4096, 9216) and shapes["fc8.weight"] == (10, 4096)
    assert (seed_model.bn1.eps, seed_model.bn1.momentum) == (1e-3, 0.01)
    assert seed_model.conv2.groups == 2 and seed_model.conv3.groups == 1


def test_summary_shows_shapes_and_formulas(seed_model, capsys):
    text = seed_model.summary((3, 224, 224))
    assert capsys.readouterr().out.strip() == text.strip()
    conv1_line = next(line for line in text.splitlines() if line.startswith("conv1"))
    assert "(None, 96, 56, 56)" in conv1_line and "34,944" in conv1_line
    assert "(224 + 7 - 11) / 4 + 1 = 56" in conv1_line
    assert "floor((56 + 0 - 3) / 2) + 1 = 27" in text
    pool5_line = next(line for line in text.splitlines() if line.startswith("pool5"))
    assert "(None, 256, 6, 6)" in pool5_line
    assert "bn1 (BatchNorm2d)" in text and "384" in next(l for l in text.splitlines() if l.startswith("bn1"))


def test_seed_forward_batch_one(seed_model):
    seed_model.eval()
    x = minidl.tensor(np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32))
    with minidl.no_grad():
        outputs = run_layers(seed_model, x)
    assert outputs["fc8"].shape == (1, 10)
    # Flatten keeps the (C, H, W) order of each sample.
    np.testing.assert_array_equal(outputs["flatten"].numpy(), outputs["pool5"].numpy().reshape(1, -1))


def test_seed_init_is_he_normal_convs_and_default_uniform_dense(seed_model):
    w = seed_model.conv2.weight.numpy()
    assert w.std() == pytest.approx(np.sqrt(2 / (48 * 25)), rel=0.02)
    assert all(np.all(getattr(seed_model, n).bias.numpy() == 0) for n in ("conv1", "conv3", "conv5"))
    # dense layers: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std = bound / sqrt(3), biases too
    bound = 1 / np.sqrt(4096)
    fc7 = seed_model.fc7.weight.numpy()[:512]
    assert fc7.std() == pytest.approx(bound / np.sqrt(3), rel=0.02) and np.abs(fc7).max() <= bound
    assert np.abs(seed_model.fc8.bias.numpy()).max() <= bound and seed_model.fc8.bias.numpy().std() > 0


def test_wrong_input_size_names_the_expected_size(seed_model):
    with pytest.raises(ValueError) as info:
        seed_model(minidl.tensor(np.zeros((2, 3, 32, 32), np.float32)))
    assert str(info.value) == "AlexNet(variant='seed') expects input (N, 3, 224, 224), got (2, 3, 32, 32)"
    with pytest.raises(ValueError, match=r"variant='cifar'\) expects input \(N, 3, 32, 32\)"):
        AlexNet(variant="cifar").summary((3, 224, 224), print_fn=None)


def test_paper_variant_shapes_and_init():
    model = AlexNet(variant="paper")
    assert model.num_classes == 1000
    assert counts(model) == (60_965_224, 0)  # the paper's ~60 M parameters
    assert isinstance(model.lrn1, nn.LocalResponseNorm) and (model.lrn1.size, model.lrn1.k) == (5, 2.0)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        layer = getattr(model, name)
        if layer.weight.size > 100_000:
            assert layer.weight.numpy().std() == pytest.approx(0.01, rel=0.02), name
        expected_bias = 0.0 if name in ("conv1", "conv3") else 1.0
        assert np.all(layer.bias.numpy() == expected_bias), name
    text = model.summary(print_fn=None)
    assert "(227 + 0 - 11) / 4 + 1 = 55" in text
    model.eval()
    with minidl.no_grad():
        out = run_layers(model, minidl.tensor(np.random.default_rng(0).normal(size=(1, 3, 227, 227))
                                              .astype(np.float32)))
    assert out["conv1"].shape == (1, 96, 55, 55) and out["fc8"].shape == (1, 1000)


def test_paper_variant_he_init_keeps_the_layers_and_changes_only_the_start():
    paper, he = AlexNet(variant="paper", num_classes=10), AlexNet(variant="paper", num_classes=10, init="he")
    assert [(n, p.shape) for n, p in paper.named_parameters()] == [(n, p.shape) for n, p in he.named_parameters()]
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        layer = getattr(he, name)
        fan_in = layer.weight[0].size  # in_channels / groups * KH * KW
        assert layer.weight.numpy().std() == pytest.approx(np.sqrt(2.0 / fan_in), rel=0.1), name
        assert np.all(layer.bias.numpy() == 0.0), name
    for name in ("fc6", "fc7", "fc8"):  # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        layer, bound = getattr(he, name), 1.0 / np.sqrt(getattr(he, name).in_features) * (1 + 1e-6)  # float32
        assert np.abs(layer.weight.numpy()).max() <= bound and np.abs(layer.bias.numpy()).max() <= bound, name
        assert layer.weight.numpy().std() == pytest.approx(bound / np.sqrt(3.0), rel=0.05), name
    for variant, init in (("seed", "he"), ("cifar", "paper"), ("paper", "glorot")):
        with pytest.raises(ValueError, match="init applies to variant='paper' only"):
            AlexNet(variant=variant, init=init)


def test_cifar_variant_trains_one_step_and_widths_are_configurable():
    model = AlexNet(variant="cifar", widths=(8, 16, 24, 16, 16, 32, 32), kernel_sizes=(3, 3, 3, 3, 3), seed=1)
    assert model.conv1.out_channels == 8 and model.fc6.in_features == 16 * 4 * 4
    x = minidl.tensor(np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32))
    outputs = run_layers(model, x)
    loss = F.softmax_cross_entropy(outputs["fc8"], minidl.tensor(np.array([0, 1, 2, 3])))
    assert 1.0 < loss.item() < 5.0  # a sane start near log(10)
    loss.backward()
    assert all(p.grad is not None and np.any(p.grad.numpy() != 0) for p in model.parameters())
    default = AlexNet(variant="cifar")
    assert default(x).shape == (4, 10)
    with pytest.raises(ValueError, match="7 even ints"):
        AlexNet(variant="cifar", widths=(8, 16, 24, 16, 15, 32, 32))
    with pytest.raises(ValueError, match="cifar' only"):
        AlexNet(variant="seed", widths=(8, 16, 24, 16, 16, 32, 32))
    with pytest.raises(ValueError, match="variant must be one of"):
        AlexNet(variant="vgg")


def test_seed_controls_weights_and_dropout():
    a, b, c = (AlexNet(variant="cifar", seed=s, widths=(8, 8, 8, 8, 8, 8, 8)) for s in (3, 3, 4))
    for (ka, va), (_, vb), (_, vc) in zip(a.state_dict().items(), b.state_dict().items(), c.state_dict().items()):
        np.testing.assert_array_equal(va, vb)
    assert not np.array_equal(a.conv1.weight.numpy(), c.conv1.weight.numpy())
    assert a.drop6.rng.bit_generator.state == b.drop6.rng.bit_generator.state
    assert a.drop6.rng.bit_generator.state != a.drop7.rng.bit_generator.state


def test_tiny_cifar_model_gradients_match_finite_differences():
    from minidl.gradcheck import check_gradients
    model = AlexNet(variant="cifar", widths=(2, 4, 4, 4, 4, 6, 6), kernel_sizes=(3, 3, 3, 3, 3), dropout=0.0)
    model.to(dtype=np.float64)
    x = minidl.tensor(np.random.default_rng(0).normal(size=(3, 3, 32, 32)))
    # A sample of parameters from every kind of layer, so the wiring between layers is checked.
    checked = [model.conv1.bias, model.conv2.weight, model.bn3.weight, model.bn4.bias, model.conv5.bias,
               model.fc6.bias, model.fc7.weight, model.fc8.bias]
    assert check_gradients(lambda *_: model(x), checked)


def test_torchvision_variant_layers_keys_and_counts():
    model = AlexNet(variant="torchvision")
    assert model.num_classes == 1000 and model.input_size == 224
    assert counts(model) == (61_100_840, 0)   # torchvision's alexnet
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert list(shapes) == [f"features.{i}.{kind}" for i in (0, 3, 6, 8, 10) for kind in ("weight", "bias")] + \
        [f"classifier.{i}.{kind}" for i in (1, 4, 6) for kind in ("weight", "bias")]
    assert shapes["features.0.weight"] == (64, 3, 11, 11) and shapes["features.3.weight"] == (192, 64, 5, 5)
    assert shapes["classifier.1.weight"] == (4096, 9216) and shapes["classifier.6.weight"] == (1000, 4096)
    assert [name for name, _ in model.named_children()] == ["features", "avgpool", "flatten", "classifier"]
    assert isinstance(model.classifier[0], nn.Dropout) and isinstance(model.classifier[3], nn.Dropout)
    assert model.classifier[0].rng is not model.classifier[3].rng
    text = model.summary(print_fn=None)
    assert "features.0 (Conv2d)" in text and "floor((224 + 4 - 11) / 4) + 1 = 55" in text
    assert "features.12 (MaxPool2d)" in text and "(None, 256, 6, 6)" in text and "adaptive 6x6 -> 6x6" in text
    assert "classifier.6 (Linear)" in text and "Total params: 61,100,840" in text
    rows = viz.layer_rows(model)   # one stream: no groups
    assert [row["name"] for row in rows][1:3] == ["features.0", "features.1"] and rows[-1]["shape"] == (1000,)
    assert {row["streams"] for row in rows} == {1} and sum(row["params"] for row in rows) == 61_100_840
    # the other variants keep their layers and keys
    assert list(AlexNet(variant="cifar").state_dict())[:2] == ["conv1.weight", "conv1.bias"]


def test_torchvision_variant_sizes_and_errors():
    model = AlexNet(variant="torchvision", num_classes=10).eval()
    with minidl.no_grad():
        for size in ((63, 63), (100, 80), (224, 224)):
            assert model(minidl.tensor(np.zeros((2, 3) + size, np.float32))).shape == (2, 10)
    assert "(None, 256, 1, 1)" in model.summary((3, 63, 63), print_fn=None)
    with pytest.raises(ValueError, match=r"H, W >= 63 \(ImageNet's 224\), got \(1, 3, 62, 224\)"):
        model(minidl.tensor(np.zeros((1, 3, 62, 224), np.float32)))
    with pytest.raises(ValueError, match="widths and kernel_sizes apply to variant='cifar' only"):
        AlexNet(variant="torchvision", widths=(8,) * 7)
    # training mode: both dropouts act, every parameter gets a gradient
    model.train()
    x = minidl.tensor(np.random.default_rng(0).normal(size=(2, 3, 67, 67)).astype(np.float32))
    loss = F.softmax_cross_entropy(model(x), minidl.tensor(np.array([1, 2])))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
