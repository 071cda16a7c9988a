"""ResNets: parameter counts, torchvision's keys, the option-A shortcut, init, training, summary, pictures.

The comparisons with PyTorch (logits, .pth and safetensors files, ONNX) are in
test_model_files.py.
"""
import numpy as np
import pytest

import minidl
import minidl.functional as F
from minidl import nn, viz
from minidl.gradcheck import check_gradients
from minidl.optim import SGD
from minidl.models import (BasicBlock, ResNet, ZeroPadShortcut, cifar_resnet, resnet18, resnet20, resnet32, resnet34,
                           resnet44, resnet56, resnet110)
from minidl.nn.structure import trace


def trainable(model):
    return sum(p.size for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("build, expected", [
    (resnet20, 269_722), (resnet32, 464_154), (resnet44, 658_586), (resnet56, 853_018), (resnet110, 1_727_962),
    (resnet18, 11_689_512), (resnet34, 21_797_672)])
def test_parameter_counts(build, expected):
    model = build()
    assert trainable(model) == expected
    running = sum(int(b.size) for b in model.buffers())
    text = model.summary(print_fn=None)
    assert f"Trainable params: {expected:,}" in text and f"Non-trainable params: {running:,}" in text
    assert f"Total params: {expected + running:,}" in text


def test_cifar_layout_and_keys():
    model = resnet20()
    keys = list(model.state_dict())
    assert keys[:6] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                        "layer1.0.conv1.weight"]
    assert keys[-2:] == ["fc.weight", "fc.bias"]
    assert [name for name, _ in model.named_children()] == ["conv1", "bn1", "relu", "layer1", "layer2", "layer3",
                                                           "avgpool", "flatten", "fc"]
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [3, 3, 3]
    assert [len(getattr(resnet110(), f"layer{i}")) for i in (1, 2, 3)] == [18, 18, 18]
    assert model.layer1[0].downsample is None
    shortcut = model.layer2[0].downsample
    assert isinstance(shortcut, ZeroPadShortcut) and (shortcut.pad_before, shortcut.pad_after) == (8, 8)
    assert model.layer2[0].conv1.stride == (2, 2) and model.layer3[0].conv1.stride == (2, 2)
    assert not any("downsample" in key for key in keys)   # option A holds no parameters
    assert all(conv.bias is None for conv in model.modules() if isinstance(conv, nn.Conv2d))
    assert model.fc.weight.shape == (10, 64) and model.input_size == 32


def test_imagenet_layout_and_keys():
    model = resnet18(num_classes=7)
    state = model.state_dict()
    assert state["conv1.weight"].shape == (64, 3, 7, 7) and state["fc.weight"].shape == (7, 512)
    assert state["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert state["layer4.1.bn2.running_var"].shape == (512,)
    assert "layer1.0.downsample.0.weight" not in state and "layer2.1.downsample.0.weight" not in state
    assert [key for key in state if "downsample" in key][:2] == ["layer2.0.downsample.0.weight",
                                                                  "layer2.0.downsample.1.weight"]
    assert (model.maxpool.kernel_size, model.maxpool.stride) == ((3, 3), (2, 2))
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d) and model.avgpool.output_size == (1, 1)
    assert [len(getattr(resnet34(), f"layer{i}")) for i in (1, 2, 3, 4)] == [3, 4, 6, 3]


def test_zero_pad_shortcut_values_gradients_and_odd_sizes(rng):
    x = rng.normal(size=(2, 4, 7, 5))
    layer = ZeroPadShortcut(4, 10, stride=2)
    y = layer(minidl.tensor(x)).numpy()
    assert y.shape == (2, 10, 4, 3) == (2,) + layer.shape_info((4, 7, 5))[0]
    np.testing.assert_array_equal(y[:, 3:7], x[:, :, ::2, ::2])
    assert not y[:, :3].any() and not y[:, 7:].any()
    t = minidl.tensor(x, requires_grad=True)
    assert check_gradients(lambda v: layer(v), [t])
    assert ZeroPadShortcut(4, 4, stride=1)(minidl.tensor(x)).numpy().shape == x.shape
    with pytest.raises(ValueError, match="in_channels <= out_channels"):
        ZeroPadShortcut(8, 4)


def test_init_is_he_normal_fan_out_and_seeded():
    model = resnet56()
    w = model.layer3[4].conv1.weight.numpy()          # (64, 64, 3, 3): fan_out = 64 * 9
    assert w.std() == pytest.approx(np.sqrt(2 / (64 * 9)), rel=0.03) and abs(w.mean()) < 0.01
    stem = model.conv1.weight.numpy()                 # (16, 3, 3, 3): fan_out = 16 * 9, fan_in 27
    assert stem.std() == pytest.approx(np.sqrt(2 / (16 * 9)), rel=0.15)
    assert all(np.all(m.weight.numpy() == 1) and np.all(m.bias.numpy() == 0)
               for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    bound = 1 / np.sqrt(64) * (1 + 1e-6)              # the dense layer: PyTorch's default
    assert np.abs(model.fc.weight.numpy()).max() <= bound and np.abs(model.fc.bias.numpy()).max() <= bound
    a, b, c = resnet20(seed=3), resnet20(seed=3), resnet20(seed=4)
    assert all(np.array_equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not np.array_equal(a.layer1[0].conv1.weight.numpy(), c.layer1[0].conv1.weight.numpy())
    zero = resnet18(zero_init_residual=True)
    assert all(not block.bn2.weight.numpy().any() for block in zero.modules() if isinstance(block, BasicBlock))


def test_block_forward_is_the_residual_sum(rng):
    block = resnet20().layer2[0].eval()
    x = minidl.tensor(rng.normal(size=(2, 16, 8, 8)).astype(np.float32))
    with minidl.no_grad():
        main = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x))))).numpy()
        expected = np.maximum(main + block.downsample(x).numpy(), 0)
        np.testing.assert_allclose(block(x).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_any_input_size_and_clear_errors():
    model = resnet20().eval()
    with minidl.no_grad():
        assert model(minidl.tensor(np.zeros((1, 3, 20, 28), np.float32))).shape == (1, 10)
        assert resnet18(num_classes=3).eval()(minidl.tensor(np.zeros((2, 3, 33, 40), np.float32))).shape == (2, 3)
    with pytest.raises(ValueError, match=r"resnet20 expects input \(N, 3, H, W\).*got \(3, 32, 32\)"):
        model(minidl.tensor(np.zeros((3, 32, 32), np.float32)))
    with pytest.raises(ValueError, match="depth must be 6n \\+ 2"):
        cifar_resnet(21)
    with pytest.raises(ValueError, match="shortcut must be 'A'"):
        resnet20(shortcut="C")
    with pytest.raises(ValueError, match="stem must be one of"):
        ResNet((1, 1), stem="tiny")
    with pytest.raises(ValueError, match="as many widths"):
        ResNet((1, 1), stem="cifar", widths=(4, 8, 16))
    assert cifar_resnet(8).arch == "resnet8" and len(cifar_resnet(8).layer3) == 1


def test_option_b_on_cifar():
    model = resnet20(shortcut="B")
    assert isinstance(model.layer2[0].downsample, nn.Sequential)
    assert trainable(model) == 269_722 + (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_a_few_sgd_steps_reduce_the_loss():
    model = resnet20(seed=0)
    rng = np.random.default_rng(0)
    x = minidl.tensor(rng.normal(size=(16, 3, 32, 32)).astype(np.float32))
    y = minidl.tensor(rng.integers(0, 10, size=16))
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(6):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert 1.5 < losses[0] < 4.0          # a sane start near log(10)
    assert losses[-1] < 0.6 * losses[0], losses
    assert all(p.grad is not None for p in model.parameters())


def test_tiny_resnet_gradients_match_finite_differences():
    model = ResNet((1, 1), num_classes=3, stem="cifar", widths=(2, 4), seed=1).to(dtype=np.float64)
    x = minidl.tensor(np.random.default_rng(0).normal(size=(3, 3, 6, 6)))
    checked = [model.conv1.weight, model.bn1.bias, model.layer1[0].conv2.weight, model.layer2[0].bn1.weight,
               model.layer2[0].conv1.weight, model.fc.weight]
    assert check_gradients(lambda *_: model(x), checked)


def test_summary_opens_blocks_and_shows_the_shortcuts():
    text = resnet20().summary(print_fn=None)
    lines = {line.split(" (")[0]: line for line in text.splitlines()[4:-5]}
    assert "(None, 32, 16, 16)" in lines["layer2.0.conv1"] and "floor((32 + 2 - 3) / 2) + 1 = 16" in text
    assert "ZeroPadShortcut" in lines["layer2.0.downsample"] and "8/8 zero channels" in lines["layer2.0.downsample"]
    assert "relu(bn2 + downsample(x))" in text and "relu(bn2 + x)" in lines["layer1.0"]
    assert "(None, 64, 1, 1)" in lines["avgpool"] and "(None, 10)" in lines["fc"]
    text18 = resnet18().summary((3, 64, 64), print_fn=None)
    assert "layer2.0.downsample.0 (Conv2d)" in text18 and "layer2.0.downsample.1 (BatchNorm2d)" in text18
    assert "(None, 512, 2, 2)" in text18 and "Total params: 11,699,112" in text18


def test_trace_matches_the_forward_pass(rng):
    model = resnet20()
    steps = trace(model, (3, 32, 32))
    assert [s.role for s in steps].count("join") == 9 and [s.role for s in steps].count("shortcut") == 2
    join = next(s for s in steps if s.name == "layer2.0")
    assert steps[join.source].name == "layer1.2"      # the shortcut carries the previous block's output
    x = minidl.tensor(rng.normal(size=(2, 3, 32, 32)).astype(np.float32))
    assert model(x).shape == (2,) + steps[-1].shape


def test_pictures_show_every_shortcut(tmp_path):
    rows = viz.layer_rows(resnet20())
    joins = [row for row in rows if row["skip_from"] is not None]
    assert [row["name"] for row in joins][:4] == ["layer1.0", "layer1.1", "layer1.2", "layer2.0"]
    assert rows[joins[0]["skip_from"]]["name"] == "relu" and rows[joins[3]["skip_from"]]["name"] == "layer1.2"
    assert "x[:, :, ::2, ::2] + 8/8 zero channels" in joins[3]["text"] and "identity" in joins[0]["text"]
    assert sum(row["params"] for row in rows) == sum(v.size for v in resnet20().state_dict().values())
    rows18 = {row["name"]: row for row in viz.layer_rows(resnet18())}
    assert "Conv2d 1x1 /2" in rows18["layer2.0"]["text"] and rows18["layer2.0"]["params"] == 128 * 64 + 4 * 128
    pytest.importorskip("matplotlib")
    path = resnet20().plot(tmp_path / "resnet20.svg")
    assert path.stat().st_size > 10_000 and "layer3.2" in path.read_text()


def test_trainer_runs_resnet20_and_resumes_exactly(tmp_path):
    """The training loop, its checkpoints and its pictures take a ResNet as they take AlexNet."""
    from minidl.data import DataLoader, build_transform
    from minidl.train import Trainer
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, size=(24, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, size=24)

    def run(epochs, out, resume=False):
        model = resnet20(seed=1)
        loaders = [DataLoader(images, labels, 8, shuffle=shuffle, seed=3, transform=build_transform(32))
                   for shuffle in (True, False)]
        trainer = Trainer(model, SGD(model.parameters(), lr=0.05, momentum=0.9), *loaders, epochs=epochs,
                          out_dir=out, progress=False, log=lambda message: None)
        if resume:
            trainer.resume()
        trainer.fit()
        return model, trainer

    straight, trainer = run(2, tmp_path / "straight")
    history = trainer.state["history"]
    assert len(history) == 2 and history[-1]["train_loss"] < history[0]["train_loss"]
    run(1, tmp_path / "resumed")
    resumed, _ = run(2, tmp_path / "resumed", resume=True)
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value, err_msg=key)
    assert (tmp_path / "straight" / "best.npz").exists()


def test_the_residual_stream_stays_channels_last_on_the_cpu(monkeypatch):
    # The option-A shortcut pads the subsampled map: the padding must keep channels-last memory,
    # or every later layer pays a layout copy (and backward its gradients' too).
    import minidl.kernels
    from minidl.functional.fast_path import FastPath
    from support.arrays import is_channels_last
    monkeypatch.delenv("MINIDL_KERNELS", raising=False)
    seen = []
    original = FastPath.forward
    monkeypatch.setattr(FastPath, "forward", lambda self, *a: seen.append((self.op, a[0])) or original(self, *a))
    model = resnet20()
    x = minidl.tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    with minidl.kernels.use("fast"):
        model(x)
    convs = [a for op, a in seen if op == "Conv2d"]
    assert len(convs) == 19 and all(is_channels_last(a) for a in convs[1:])   # all but the stem's images
    assert all(is_channels_last(a) for op, a in seen if op in ("ReLU", "BatchNorm") and a.ndim == 4)
