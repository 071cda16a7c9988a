"""``minidl predict`` and ``minidl layers`` for every model: a ResNet-20 run's checkpoint, torchvision's
ResNet-18 as a PyTorch .pth (built here with PyTorch, random weights), and the model's GPU current
(``--device cuda:1`` on the fake CuPy of tests/support/fake_cupy.py).
"""
import re

import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.kernels
from minidl.checkpoint import save_checkpoint
from minidl.cli import layers, predict
from minidl.cli import train as cli
from minidl.data import ResizeCenterCrop, decode_crop, imagenet, normalize
from minidl.models import resnet20

from support import fake_cupy
from support.cifar_fixture import LABEL_NAMES, write_cifar10

Image = pytest.importorskip("PIL.Image", reason="minidl predict needs Pillow (the images extra)")


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return write_cifar10(tmp_path_factory.mktemp("cifar"), n_per_batch=4, n_test=4)


@pytest.fixture(scope="module")
def resnet_run(cifar, tmp_path_factory):
    """One step of ResNet-20 through minidl train: its best.npz."""
    out = tmp_path_factory.mktemp("resnet20") / "run"
    assert cli.main(["--model", "resnet20", "--data-dir", str(cifar.root), "--out", str(out), "--epochs", "1",
                     "--batch-size", "8", "--limit-train", "8", "--val-size", "4", "--device", "cpu",
                     "--no-progress", "--no-plots"]) == 0
    return out / "best.npz"


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from support.folder_fixture import photo as make
    path = tmp_path_factory.mktemp("images") / "photo.jpg"
    Image.fromarray(make(300, 200, seed=1)).save(path, quality=95)
    return path


def _run(command, argv, capsys):
    code = command.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _top(out):
    """[(name, percent)] of the one image predict printed."""
    return [(name.strip(), float(p)) for name, p in re.findall(r"^\s+\d+\. (.+?)\s+(\d+\.\d\d)%$", out, flags=re.M)]


def test_predict_with_a_resnet20_run(resnet_run, photo, capsys):
    code, out, err = _run(predict, [photo, "--weights", resnet_run], capsys)
    assert code == 0, err
    model, names, settings = predict.load_model(resnet_run)
    assert type(model).__name__ == "ResNet" and model.arch == "resnet20" and names == LABEL_NAMES
    with minidl.no_grad():
        x = predict.evaluation_transform(settings)(predict.read_image(photo, settings)[None])
        probs = F.softmax(model(minidl.tensor(x)), axis=-1).numpy()[0]
    order = np.argsort(-probs)[:5]
    assert _top(out) == [(names[i], pytest.approx(100 * probs[i], abs=0.006)) for i in order]


def test_layers_walks_a_resnet20_run_through_its_blocks(resnet_run, cifar, tmp_path, capsys):
    code, out, err = _run(layers, ["--weights", resnet_run, "--data-dir", cifar.root, "--index", "2",
                                   "--out", tmp_path, "--no-download", "--no-plots"], capsys)
    assert code == 0, err
    assert f"weights: {resnet_run} (resnet20, 10 classes)" in out
    headers = re.findall(r"^\[\s*(\d+)\] (\S+) \((.+)\)$", out, flags=re.M)
    assert [int(n) for n, _, _ in headers] == list(range(1, len(headers) + 1))
    # stem 3 + 9 blocks x (5 layers + the addition) + 2 shortcuts + avgpool, flatten, fc
    assert len(headers) == 3 + 9 * 6 + 2 + 3
    kinds = {name: kind for _, name, kind in headers}
    assert kinds["layer1.0"] == kinds["layer3.2"] == "BasicBlock: the residual addition"
    assert kinds["layer2.0.downsample"] == "ZeroPadShortcut, on the shortcut"
    texts = re.split(r"^\[\s*\d+\] ", out, flags=re.M)[1:]
    blocks = {name: " ".join(text.split()) for (_, name, _), text in zip(headers, texts)}   # unwrapped
    assert "plus the block's input x (an identity shortcut)" in blocks["layer1.1"]
    assert "plus the shortcut's output (layer2.0.downsample)" in blocks["layer2.0"]
    assert "(16, 32, 32) -> (32, 16, 16)" in blocks["layer2.0.downsample"] and "8 + 8 channels of zeros" in \
        blocks["layer2.0.downsample"]
    assert "floor((32 + 2 - 3) / 2) + 1 = 16" in blocks["layer2.0.conv1"] and "No bias" in blocks["layer2.0.conv1"]
    assert "Global mean pooling" in blocks["avgpool"] and "weight 10x64 + bias 10 = 650 trainable" in blocks["fc"]
    true_name = LABEL_NAMES[cifar.test_labels[2]]
    assert re.search(rf"^ +{true_name} +\d\.\d{{4}} *#*.*<- true label", out, flags=re.M)
    assert (tmp_path / "autograd_graph.dot").is_file() and not list(tmp_path.glob("*.png"))


@pytest.fixture(scope="module")
def torchvision_resnet18(tmp_path_factory):
    """torchvision's ResNet-18 layout with random weights and batch-norm statistics, torch.save'd."""
    torch = pytest.importorskip("torch")
    from support.torch_models import randomise_batch_norm, resnet18
    torch.manual_seed(0)
    model = randomise_batch_norm(resnet18()).eval()
    path = tmp_path_factory.mktemp("torch") / "resnet18-f37072fd.pth"
    torch.save(model.state_dict(), path)
    return path, model


def test_predict_with_torchvisions_resnet18_file_shows_imagenet_classes(torchvision_resnet18, photo, capsys):
    torch = pytest.importorskip("torch")
    path, reference = torchvision_resnet18
    code, out, err = _run(predict, [photo, "--weights", path, "--model", "resnet18"], capsys)
    assert code == 0, err
    # ImageNet's evaluation crop and normalisation, then PyTorch's own model on that input
    image = np.empty((1, 3, 224, 224), np.uint8)
    decode_crop(str(photo), ResizeCenterCrop(224, 256), None, image[0])
    with torch.no_grad():
        probs = torch.softmax(reference(torch.from_numpy(normalize(image, imagenet.MEAN, imagenet.STD))), -1)[0]
    order = np.argsort(-probs.numpy())[:5]
    assert _top(out) == [(imagenet.CLASS_NAMES[i], pytest.approx(100 * float(probs[i]), abs=0.006)) for i in order]


def test_layers_walks_torchvisions_resnet18_on_your_image(torchvision_resnet18, photo, tmp_path, capsys):
    path, _ = torchvision_resnet18
    code, out, err = _run(layers, ["--model", "resnet18", "--weights", path, "--image", photo, "--out", tmp_path,
                                   "--no-plots"], capsys)
    assert code == 0, err
    assert f"input: {photo}; uint8 (1, 3, 224, 224) (decoded as the shorter side to 256, the central 224x224) -> " \
           "(x / 255 - mean) / std per channel, mean [0.485, 0.456, 0.406]" in out
    assert "[ 4] maxpool (MaxPool2d)" in out
    assert re.search(r"^\[\d+\] layer2\.0\.downsample\.0 \(Conv2d, on the shortcut\)$", out, flags=re.M)
    assert "plus the shortcut's output (layer2.0.downsample.1)" in " ".join(out.split())
    assert "(the 10 most probable of 1000 classes):" in out
    rows = re.findall(r"^ +(.+?) +(\d\.\d{4}) *#*(.*)$", out.split("softmax")[1], flags=re.M)
    assert len(rows) == 10 and all(name.strip() in imagenet.CLASS_NAMES for name, _, _ in rows)
    assert "true label" not in out


@pytest.mark.parametrize("argv, message", [
    (["--weights", "{pth}"], "is weights only, not one of a training run (no settings in it): name the model"),
    (["--weights", "{pth}", "--model", "resnet34"], "does not fit resnet34: the model's layer1.2.conv1.weight"),
    (["--weights", "{run}", "--model", "resnet18"], "is a run of resnet20, not --model resnet18"),
    (["--weights", "{run}", "--variant", "cifar"], "is a run of resnet20, not --variant cifar"),
])
def test_predict_names_what_does_not_fit(argv, message, torchvision_resnet18, resnet_run, photo, capsys):
    argv = [a.format(pth=torchvision_resnet18[0], run=resnet_run) for a in argv]
    code, out, err = _run(predict, [photo, *argv], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and out == "" and len(lines) == 1 and message in lines[0], err


# ---- the model's GPU is current ----------------------------------------------------------

@pytest.fixture
def fake(monkeypatch):
    fake = fake_cupy.install(monkeypatch)
    with minidl.kernels.use("reference"):   # the GPU's fast paths are raw CUDA kernels
        yield fake


def _assert_on_gpu1_only(fake):
    assert not fake.cross_device, "arrays of another GPU used from the current one:\n" + "\n".join(
        f"{op}: arrays on {devices}, current {current}\n{where}"
        for op, devices, current, where in fake.cross_device[:3])


def test_predict_runs_on_the_models_gpu(fake, tmp_path, photo, capsys):
    save_checkpoint(tmp_path / "w.npz", {"model": resnet20().state_dict(), "settings": {"model": "resnet20"}})
    code, out, err = _run(predict, [photo, "--weights", tmp_path / "w.npz", "--device", "cuda:1"], capsys)
    assert code == 0, err
    _assert_on_gpu1_only(fake)


def test_layers_runs_on_the_models_gpu(fake, cifar, tmp_path, capsys):
    code, out, err = _run(layers, ["--model", "resnet20", "--data-dir", cifar.root, "--no-download", "--no-plots",
                                   "--out", tmp_path, "--device", "cuda:1"], capsys)
    assert code == 0, err
    _assert_on_gpu1_only(fake)
