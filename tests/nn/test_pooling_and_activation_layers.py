"""The layers AvgPool2d, AdaptiveAvgPool2d, AdaptiveMaxPool2d, Identity, Sigmoid, Tanh, LeakyReLU, GELU:
PyTorch's names, constructor signatures and (empty) state_dicts, the same outputs as PyTorch's modules,
shape_info that agrees with forward, and the summary and picture built from it."""
import inspect

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl import viz
from minidl.models.summary import summarize

LAYERS = [
    ("AvgPool2d", (3,), {"stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False}),
    ("AvgPool2d", ((2, 3),), {"divisor_override": 4}),
    ("AdaptiveAvgPool2d", ((3, None),), {}),
    ("AdaptiveAvgPool2d", (1,), {}),
    ("AdaptiveMaxPool2d", ((2, 3),), {}),
    ("Identity", (54,), {"unused": "argument"}),
    ("Sigmoid", (), {}),
    ("Tanh", (), {}),
    ("LeakyReLU", (0.2,), {}),
    ("GELU", (), {"approximate": "tanh"}),
]
IDS = [f"{name}{args}{kwargs}" for name, args, kwargs in LAYERS]


@pytest.mark.parametrize("name", sorted({name for name, _, _ in LAYERS}))
def test_constructor_signatures_are_pytorchs(name):
    torch = pytest.importorskip("torch")
    ours = inspect.signature(getattr(nn, name).__init__).parameters
    theirs = inspect.signature(getattr(torch.nn, name).__init__).parameters
    expected = [(p.name, p.default) for p in theirs.values() if p.name not in ("self", "device", "dtype")]
    if getattr(torch.nn, name).__init__ is torch.nn.Module.__init__:
        expected = []   # Sigmoid and Tanh take no arguments (they inherit Module's generic __init__)
    assert [(p.name, p.default) for p in ours.values() if p.name != "self"] == expected


@pytest.mark.parametrize("name,args,kwargs", LAYERS, ids=IDS)
def test_forward_and_state_dict_match_pytorch(kernel_mode, name, args, kwargs):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 8))
    ours, theirs = getattr(nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)
    assert ours.state_dict() == {} and len(theirs.state_dict()) == 0 and list(ours.parameters()) == []
    np.testing.assert_allclose(ours(minidl.tensor(x)).numpy(), theirs(torch.tensor(x)).numpy(), rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_allclose(ours(minidl.tensor(x[0])).numpy(), theirs(torch.tensor(x[0])).numpy(),
                               rtol=1e-12, atol=1e-14)   # one sample (C, H, W), as PyTorch takes


@pytest.mark.parametrize("name,args,kwargs", LAYERS, ids=IDS)
def test_shape_info_agrees_with_forward(name, args, kwargs):
    layer = getattr(nn, name)(*args, **kwargs)
    for shape in [(3, 7, 8), (2, 9, 9), (4, 5, 6)]:
        y = layer(minidl.tensor(np.zeros((1,) + shape)))
        assert layer.shape_info(shape)[0] == y.shape[1:]


def test_adaptive_max_pool_returns_indices():
    y, index = nn.AdaptiveMaxPool2d(2, return_indices=True)(minidl.tensor(np.arange(16.0).reshape(1, 1, 4, 4)))
    np.testing.assert_array_equal(index.numpy()[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(y.numpy()[0, 0], [[5.0, 7.0], [13.0, 15.0]])


def test_reprs_summary_and_picture(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 4, 3, rng=np.random.default_rng(0)), nn.AvgPool2d(3, 2, 1, ceil_mode=True),
                        nn.LeakyReLU(0.2), nn.GELU(), nn.AdaptiveMaxPool2d((2, None)), nn.Sigmoid(), nn.Tanh(),
                        nn.Identity(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    text = repr(net)
    for line in ["AvgPool2d(kernel_size=(3, 3), stride=(2, 2), padding=1, ceil_mode=True)",
                 "LeakyReLU(negative_slope=0.2)", "GELU(approximate='none')", "AdaptiveMaxPool2d(output_size=(2, None))",
                 "Sigmoid()", "Tanh()", "Identity()", "AdaptiveAvgPool2d(output_size=1)"]:
        assert line in text
    table = summarize("net", list(net.named_children()), (3, 16, 16))
    assert "ceil((14 + 2 - 3) / 2) + 1 = 8" in table and "adaptive 8x8 -> 2x8" in table
    rows = viz.layer_rows(net, (3, 16, 16))
    assert [r["shape"] for r in rows][-3:] == [(4, 2, 8), (4, 1, 1), (4,)]
    assert [r["text"] for r in rows][2:4] == ["AvgPool2d 3x3 /2 pad 1", "LeakyReLU 0.2"]
    pytest.importorskip("matplotlib")
    assert viz.plot_model(net, tmp_path / "net.png", (3, 16, 16)).stat().st_size > 0


@pytest.mark.parametrize("make,match", [
    (lambda: nn.AvgPool2d(2, padding=2), r"AvgPool2d: padding 2 must be at most half the kernel \(2, 2\)"),
    (lambda: nn.AvgPool2d(0), r"AvgPool2d: kernel_size must be a positive int"),
    (lambda: nn.AdaptiveAvgPool2d(0), r"AdaptiveAvgPool2d: output_size must be a positive int"),
    (lambda: nn.AdaptiveMaxPool2d((1, 2, 3)), r"AdaptiveMaxPool2d: output_size must be a positive int"),
    (lambda: nn.GELU("fast"), r"GELU: approximate must be 'none' or 'tanh', got 'fast'"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()
