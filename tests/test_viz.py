"""minidl.viz: the architecture picture (streams, shapes, files) and the autograd graph as DOT."""
import re
import shutil
import sys

import numpy as np
import pytest

import minidl
import minidl.kernels
import minidl.functional as F
from minidl import autograd_graph, nn, viz
from minidl.models import AlexNet

needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's dot is not installed (.ci/run installs it)")


def _rows(variant):
    return {row["name"]: row for row in viz.layer_rows(AlexNet(variant=variant))}


def test_seed_rows_streams_and_crossings():
    rows = _rows("seed")
    assert rows["input"]["shape"] == (3, 224, 224) and rows["input"]["streams"] == 1
    assert (rows["conv1"]["link"], rows["conv1"]["streams"], rows["conv1"]["shape"]) == ("split", 2, (96, 56, 56))
    assert rows["conv2"]["link"] == "parallel"           # groups=2: each stream sees its own half
    assert rows["conv3"]["link"] == "cross"              # groups=1: both streams feed both
    assert rows["conv4"]["link"] == rows["conv5"]["link"] == "parallel"
    assert all(rows[name]["link"] == "parallel" for name in ("bn1", "relu1", "pool1", "bn2", "pool5"))
    assert rows["pool5"]["shape"] == (256, 6, 6)
    assert (rows["flatten"]["link"], rows["flatten"]["streams"], rows["flatten"]["shape"]) == ("join", 1, (9216,))
    assert all(rows[name]["streams"] == 1 and rows[name]["link"] == "straight" for name in ("fc6", "fc7", "fc8"))
    assert sum(row["params"] for row in rows.values()) == 56_910_602  # DESIGN.md's total, running stats included
    assert rows["conv1"]["text"] == 'Conv2d 11x11 /4 "same"' and rows["conv2"]["text"].endswith("groups=2")


@pytest.mark.parametrize("variant", ["paper", "cifar"])
def test_other_variants_cross_at_conv3_and_join_at_flatten(variant):
    model = AlexNet(variant=variant)
    rows = viz.layer_rows(model)
    links = {row["name"]: row["link"] for row in rows}
    assert [name for name, link in links.items() if link in ("cross", "join", "split")] == \
        ["conv1", "conv3", "flatten"]
    assert sum(row["params"] for row in rows) == sum(v.size for v in model.state_dict().values())
    assert rows[-1]["shape"] == (model.num_classes,)


def test_a_network_without_streams_is_one_column():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    rows = viz.layer_rows(net, input_shape=(3, 8, 8))
    assert [row["streams"] for row in rows] == [1] * 5
    assert [row["link"] for row in rows] == ["start"] + ["straight"] * 4
    assert rows[1]["shape"] == (8, 6, 6) and rows[-1]["params"] == 8 * 36 * 5 + 5
    with pytest.raises(ValueError, match="pass input_shape"):
        viz.layer_rows(net)


def test_plot_writes_png_and_svg(tmp_path):
    pytest.importorskip("matplotlib")
    model = AlexNet(variant="cifar")
    png = model.plot(tmp_path / "net.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = viz.plot_model(model, tmp_path / "net.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    # text stays text: every layer name, its per-stream shape and the crossings are readable in the file
    for text in ("conv3", "16 x 32 x 32", "32 x 16 x 16", "streams cross", "streams join", "stream 2"):
        assert text in svg, text
    assert viz.plot_model(model, tmp_path / "again.svg").read_text() == svg  # no dates, stable ids
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        model.plot(tmp_path / "net.pdf")


def test_plot_without_matplotlib_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    with pytest.raises(ImportError, match=r"minidl\[plot\]"):
        viz.plot_model(AlexNet(variant="cifar"), tmp_path / "net.png")


# ---- the autograd graph -------------------------------------------------------------

def _nodes_and_edges(dot):
    labels = dict(re.findall(r"^  (n\d+) \[label=\"((?:[^\"\\]|\\.)*)\"", dot, flags=re.M))
    edges = re.findall(r"^  (n\d+) -> (n\d+);", dot, flags=re.M)
    return labels, edges


def test_graph_nodes_edges_and_names():
    rng = np.random.default_rng(0)
    x = minidl.tensor(rng.normal(size=(3, 4)))          # a constant input
    w = nn.Parameter(rng.normal(size=(4, 2)).astype(np.float32))
    h = (minidl.Tensor(x.data.astype(np.float32)) @ w)
    y = F.relu(h * h).sum()                               # h used twice by one Mul
    dot = viz.graph(y, params={"w": w})
    labels, edges = _nodes_and_edges(dot)
    by_label = {label: node for node, label in labels.items()}
    functions = [label.split(" [")[0] for label in labels.values()      # "ReLU [chunked]": the fast path that ran
                 if label.split(" [")[0] in ("MatMul", "Mul", "ReLU", "Sum")]
    assert sorted(functions) == ["MatMul", "Mul", "ReLU", "Sum"]
    assert "w\\n(4, 2) float32" in by_label and "(3, 4) float32" in by_label and "() float32" in by_label
    # the chain: x, w -> MatMul -> h -> Mul (twice) -> ... -> Sum -> y
    assert (by_label["w\\n(4, 2) float32"], by_label["MatMul"]) in edges
    assert (by_label["(3, 4) float32"], by_label["MatMul"]) in edges
    [h_node] = [b for a, b in edges if a == by_label["MatMul"]]
    assert labels[h_node] == "(3, 2) float32"
    assert edges.count((h_node, by_label["Mul"])) == 2
    assert (by_label["Sum"], by_label["() float32"]) in edges
    assert len(edges) == len(set(edges)) + 1  # only h -> Mul repeats
    assert 'fillcolor="#c6dbef"' in dot.split(by_label["w\\n(4, 2) float32"] + " [", 1)[1].split("\n")[0]


def test_graph_of_a_model_names_every_parameter_and_survives_quotes():
    model = AlexNet(variant="cifar", widths=(4, 4, 4, 4, 4, 8, 8))
    x = minidl.Tensor(np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32))
    x.name = 'the "input"'
    with minidl.kernels.use("fast"):
        loss = F.softmax_cross_entropy(model(x), np.array([0, 3]))
    dot = viz.graph(loss, params=model.named_parameters())
    labels, _ = _nodes_and_edges(dot)
    for name, param in model.named_parameters():
        shape = "(" + ", ".join(map(str, param.shape)) + ("," if param.ndim == 1 else "") + ")"
        assert f"{name}\\n{shape} float32" in labels.values(), name
    assert 'the \\"input\\"\\n(2, 3, 32, 32) float32' in labels.values()
    assert sum(label.startswith("Conv2d") for label in labels.values()) == 5
    # The Function that ran: on the CPU the channels-last im2col convolution (these convs are too
    # narrow for Winograd, see minidl/kernels/dispatch.py); the reference when the kernels say so.
    assert "Conv2d [im2col]\\nkernel 3, groups 2" in labels.values()
    with minidl.kernels.use("reference"):
        dot = viz.graph(F.softmax_cross_entropy(model(x), np.array([0, 3])), params=model.named_parameters())
    labels, _ = _nodes_and_edges(dot)
    assert "Conv2d\\nkernel 3, groups 2" in labels.values() and "BatchNorm\\ntraining" in labels.values()


def test_graph_errors():
    w = nn.Parameter(np.ones(3, np.float32))
    assert viz.graph(w).count("label=") == 2  # the graph label and the one leaf
    y = (w * 2.0).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="already freed by backward"):
        viz.graph(y)
    with pytest.raises(TypeError, match="minidl Tensor"):
        viz.graph(np.ones(3))


def test_render_without_dot_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(autograd_graph.shutil, "which", lambda name: None)
    y = (nn.Parameter(np.ones(3, np.float32)) * 2.0).sum()
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        viz.graph(y, path=tmp_path / "g.svg")
    assert not (tmp_path / "g.svg").exists()


@needs_dot
def test_render_svg_and_png(tmp_path):
    w = nn.Parameter(np.ones((2, 3), np.float32))
    y = F.relu(w * 3.0).sum()
    dot = viz.graph(y, params={"weight": w}, path=tmp_path / "g.svg")
    svg = (tmp_path / "g.svg").read_text()
    assert "<svg" in svg and "ReLU" in svg and "weight" in svg
    viz.render_dot(dot, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(RuntimeError, match="dot failed"):
        viz.render_dot("digraph { this is not dot", tmp_path / "bad.svg")
