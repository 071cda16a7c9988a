"""The walkthrough (``minidl layers``): one fixture image through the seed AlexNet.

The full walk runs once as a real process (about 10 s: building the 57M-parameter
model and drawing the PNGs dominate); the error paths call ``main`` in-process and
stop before the model is built.
"""
import importlib.util
import os
import re
import shutil
import subprocess

import pytest

from support.commands import ROOT, minidl_command
from support.cifar_fixture import LABEL_NAMES, closed_port, write_cifar10

COMMAND = minidl_command("layers")
SEED_LAYERS = ["conv1", "bn1", "relu1", "pool1", "conv2", "bn2", "relu2", "pool2", "conv3", "relu3", "conv4",
               "relu4", "conv5", "relu5", "pool5", "flatten", "fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]
MAPPED = SEED_LAYERS[:15]  # conv1 .. pool5: the layers with (C,H,W) outputs get a feature-map grid


from minidl.cli import layers as walk  # noqa: E402


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return write_cifar10(tmp_path_factory.mktemp("cifar"), n_per_batch=2, n_test=4)


def _has_matplotlib():
    return importlib.util.find_spec("matplotlib") is not None


def _zeros(block):
    return float(re.search(r"zeros (\d+\.\d)%", block).group(1))


def test_walk_prints_every_layer_and_saves_grids(fixture, tmp_path):
    out = tmp_path / "maps"
    done = subprocess.run([*COMMAND, "--data-dir", str(fixture.root), "--index", "1",
                           "--out", str(out), "--no-download"], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "fresh initial weights" in text
    # every layer, in execution order, and nothing else numbered
    assert re.findall(r"^\[\s*\d+\] (\w+) \(", text, flags=re.M) == SEED_LAYERS
    blocks = dict(zip(SEED_LAYERS, re.split(r"^\[\s*\d+\] ", text, flags=re.M)[1:]))
    # shape arithmetic, TF "same" padding split, parameter arithmetic
    assert "(224 + 7 - 11) / 4 + 1 = 56" in blocks["conv1"] and '"same": 3 top, 4 bottom' in blocks["conv1"]
    assert "floor((56 + 0 - 3) / 2) + 1 = 27" in blocks["pool1"]
    assert "(13 + 0 - 3) / 2 + 1 = 6" in blocks["pool5"]
    assert "weight 96x3x11x11 + bias 96 = 34,944 trainable" in blocks["conv1"]
    assert "weight 256x48x5x5 + bias 256 = 307,456" in blocks["conv2"] and "groups=2" in blocks["conv2"]
    assert "= 192 running statistics" in blocks["bn1"]
    assert "37,752,832 trainable" in blocks["fc6"] and "(256, 6, 6) -> (9216,)" in blocks["flatten"]
    assert "identity" in blocks["drop6"]
    # statistics that must hold: ReLU leaves no negatives and some zeros; a max over
    # a window is zero only if the whole window is, so pooling cannot add zeros
    assert "min +0.000" in blocks["relu1"] and _zeros(blocks["relu1"]) > 10
    assert _zeros(blocks["pool1"]) <= _zeros(blocks["relu1"])
    assert _zeros(blocks["conv1"]) == 0.0
    # the probabilities: all ten classes, sorted, summing to 1, prediction and true label marked
    rows = re.findall(r"^ +(\w+) +(\d\.\d{4}) *#*(.*)$", text.split("softmax")[1], flags=re.M)
    assert sorted(name for name, _, _ in rows) == sorted(LABEL_NAMES)
    probs = [float(p) for _, p, _ in rows]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-3
    assert "prediction" in rows[0][2]
    true_name = LABEL_NAMES[fixture.test_labels[1]]
    assert [name for name, _, marks in rows if "true label" in marks] == [true_name]
    # the autograd graph of the loss: every parameter by name, eval-mode batch norm, the loss at the end
    dot = (out / "autograd_graph.dot").read_text()
    for name in [f"{layer}.{kind}" for layer in ("conv1", "bn1", "conv2", "bn2", "conv3", "conv4", "conv5", "fc6",
                                                  "fc7", "fc8") for kind in ("weight", "bias")]:
        assert f'label="{name}\\n' in dot, name
    evaluation_bn = len(re.findall(r'label="BatchNorm( \[fused passes\])?\\nevaluation"', dot))   # fast or reference
    assert evaluation_bn == 2 and "SoftmaxCrossEntropy" in dot
    assert "Dropout" not in dot  # eval mode: dropout is the identity and records nothing
    # 23 layers less the two dropouts, plus the loss
    assert re.search(r"autograd graph of the loss: 22 functions, \d+ tensors", text)
    rendered = shutil.which("dot") is not None
    assert ("rendered by Graphviz" in text) == rendered and ("apt-get install graphviz" in text) != rendered
    graphs = {"autograd_graph.dot"} | ({"autograd_graph.svg"} if rendered else set())
    # the pictures
    if _has_matplotlib():
        expected = {"00_input.png", "00_conv1_filters.png", "00_architecture.png"}
        expected |= {f"{SEED_LAYERS.index(name) + 1:02d}_{name}.png" for name in MAPPED}
        assert {p.name for p in out.iterdir()} == expected | graphs
        assert all((out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in expected)
    else:
        assert "matplotlib is not installed" in text
        assert {p.name for p in out.iterdir()} == graphs


def _main(argv, capsys):
    code = walk.main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minidl layers: error: "), captured.err
    return code, lines[0]


def test_missing_data_and_no_network(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDL_CIFAR10_URL", f"http://127.0.0.1:{closed_port()}/cifar-10-python.tar.gz")
    code, line = _main(["--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and "could not download" in line


def test_missing_data_without_download(capsys, tmp_path):
    code, line = _main(["--data-dir", str(tmp_path / "empty"), "--no-download"], capsys)
    assert code == 1 and "downloading is disabled" in line


def test_index_out_of_range(capsys, fixture, tmp_path):
    code, line = _main(["--data-dir", str(fixture.root), "--index", "4", "--out", str(tmp_path)], capsys)
    assert code == 1 and "--index must be in [0, 4)" in line


def test_an_out_that_cannot_be_created(capsys, fixture, tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    out = tmp_path / "a_file" / "pictures"
    code, line = _main(["--data-dir", str(fixture.root), "--out", str(out), "--no-plots"], capsys)
    assert code == 1 and f"--out: cannot create the directory {out}" in line


def test_the_new_layers_are_described():
    from minidl import nn
    cases = [(nn.AvgPool2d(2), (4, 8, 8), (4, 4, 4), "mean of a 2x2 window"),
             (nn.AdaptiveAvgPool2d(1), (4, 8, 8), (4, 1, 1), "Global mean pooling"),
             (nn.AdaptiveMaxPool2d((3, 2)), (4, 8, 8), (4, 3, 2), "cut into 3x2 windows"),
             (nn.Sigmoid(), (4,), (4,), "Sigmoid"), (nn.Tanh(), (4,), (4,), "Tanh"),
             (nn.LeakyReLU(0.1), (4,), (4,), "0.1 * x"), (nn.GELU(), (4,), (4,), "GELU"),
             (nn.Identity(), (4,), (4,), "Identity")]
    for module, in_shape, out_shape, text in cases:
        assert text in walk.describe(module, in_shape, out_shape)
