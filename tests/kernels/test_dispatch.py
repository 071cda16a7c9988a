"""minidl.kernels.dispatch: the mode switch, the table's choices per device and shape, and conv2d's rule."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.kernels
from minidl.functional.fast_path import FastPath
from minidl.kernels import dispatch


def _creator(y):
    return y.creator


def _graph_kinds(y):
    """The Function classes of every node of y's graph, as names (FastPath shows its label)."""
    seen, stack, kinds = set(), [y.creator], []
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        kinds.append(fn.label if isinstance(fn, FastPath) else type(fn).__name__)
        stack += [t.creator for t in fn.inputs]
    return kinds


def _small_net_output():
    rng = np.random.default_rng(0)
    x = minidl.tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32), requires_grad=True)
    w = minidl.tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), requires_grad=True)
    g, b = minidl.tensor(np.ones(4, np.float32), requires_grad=True), minidl.tensor(np.zeros(4, np.float32))
    h = F.relu(F.batch_norm(F.conv2d(x, w, padding=1), g, b, None, None, training=True))
    h = F.max_pool2d(h, 2)
    lw = minidl.tensor(rng.standard_normal((5, 64)).astype(np.float32), requires_grad=True)
    return F.linear(F.flatten(h), lw)


def test_the_fast_paths_run_by_default_on_the_cpu(monkeypatch):
    monkeypatch.delenv("MINIDL_KERNELS", raising=False)
    kinds = _graph_kinds(_small_net_output())
    for op in ("Conv2d [im2col]", "BatchNorm [fused passes]", "ReLU [chunked]", "MaxPool2d [batch slices]",
               "Linear [split products]"):
        assert op in kinds, kinds


@pytest.mark.parametrize("how", ["environment", "use", "set_mode"])
def test_reference_mode_runs_every_reference(monkeypatch, how):
    monkeypatch.delenv("MINIDL_KERNELS", raising=False)
    if how == "environment":
        monkeypatch.setenv("MINIDL_KERNELS", "reference")
        kinds = _graph_kinds(_small_net_output())
    elif how == "use":
        with minidl.kernels.use("reference"):
            assert minidl.kernels.mode() == "reference"
            kinds = _graph_kinds(_small_net_output())
        assert minidl.kernels.mode() == "fast"   # restored on exit
    else:
        minidl.kernels.set_mode("reference")
        try:
            kinds = _graph_kinds(_small_net_output())
        finally:
            minidl.kernels.set_mode(None)
    assert not any("[" in k for k in kinds), kinds
    assert {"Conv2d", "BatchNorm", "ReLU", "MaxPool2d", "Linear"} <= set(kinds)


def test_use_wins_over_the_environment_and_restores_after_an_error(monkeypatch):
    monkeypatch.setenv("MINIDL_KERNELS", "reference")
    with pytest.raises(RuntimeError):
        with minidl.kernels.use("fast"):
            assert dispatch.mode() == "fast"
            raise RuntimeError("inside")
    assert dispatch.mode() == "reference"


def test_bad_modes_are_clear_errors(monkeypatch):
    monkeypatch.setenv("MINIDL_KERNELS", "turbo")
    with pytest.raises(ValueError, match=r"MINIDL_KERNELS must be one of \('fast', 'reference'\), got 'turbo'"):
        dispatch.mode()
    with pytest.raises(ValueError, match=r"minidl.kernels.use must be one of .* got 'fastest'"):
        with minidl.kernels.use("fastest"):
            pass
    with pytest.raises(ValueError, match=r"minidl.kernels.set_mode must be one of"):
        minidl.kernels.set_mode("slow")


def test_an_explicit_algorithm_wins_over_reference_mode():
    x = minidl.tensor(np.zeros((1, 16, 6, 6), np.float32), requires_grad=True)
    w = minidl.tensor(np.zeros((4, 16, 3, 3), np.float32))
    with minidl.kernels.use("reference"):
        assert type(_creator(F.conv2d(x, w, padding=1, algorithm="auto"))) is not FastPath
        assert "winograd" in _creator(F.conv2d(x, w, padding=1, algorithm="winograd")).label
    assert type(_creator(F.conv2d(x, w, padding=1, algorithm="reference"))).__name__ == "Conv2d"


def test_a_gpu_gets_raw_kernels_for_float32_and_float64_only(monkeypatch):
    # Route NumPy arrays as if they lived on a GPU: the table's GPU column.
    monkeypatch.setattr(dispatch, "device_type", lambda array: "cuda")
    x32, x16 = np.zeros((1, 4, 6, 6), np.float32), np.zeros((1, 4, 6, 6), np.float16)
    assert type(dispatch.max_pool2d(x32, (2, 2), (2, 2), ((0, 0), (0, 0)))).__name__ == "RawMaxPool2d"
    assert dispatch.max_pool2d(x16, (2, 2), (2, 2), ((0, 0), (0, 0))) is None
    assert type(dispatch.conv2d(x32, (3, 3), (1, 1), ((1, 1), (1, 1)), 1, (6, 6))).__name__ == "RawIm2colConv2d"
    assert dispatch.conv2d(x16, (3, 3), (1, 1), ((1, 1), (1, 1)), 1, (6, 6)) is None
    assert dispatch.batch_norm(x32, True, True, True, 1e-5, 0.1).passes.__name__.endswith("cuda.channel_passes")
    assert dispatch.relu(x32) is None and dispatch.linear(x32) is None     # CuPy / cuBLAS already
    assert dispatch.resize_bilinear(x32) is not None
    with minidl.kernels.use("reference"):
        assert dispatch.max_pool2d(x32, (2, 2), (2, 2), ((0, 0), (0, 0))) is None
        assert dispatch.resize_bilinear(x32) is None
    # Winograd on a GPU only when asked for, and then NCHW memory
    chosen = dispatch.conv2d(np.zeros((1, 32, 6, 6), np.float32), (3, 3), (1, 1), ((1, 1), (1, 1)), 1, (6, 6))
    assert type(chosen).__name__ == "RawIm2colConv2d"
    forced = dispatch.conv2d(x32, (3, 3), (1, 1), ((1, 1), (1, 1)), 1, (6, 6), "winograd")
    assert not forced.channels_last


def test_relu_on_a_strided_view_runs_the_reference():
    x = np.zeros((4, 6), np.float32)[:, ::2]
    assert dispatch.relu(x) is None and dispatch.relu(np.zeros((4, 6), np.float32)) is not None


# ---- conv2d's algorithm rule ------------------------------------------------------------
def _chosen(monkeypatch, x_shape, w_shape, **kwargs):
    monkeypatch.delenv("MINIDL_KERNELS", raising=False)
    seen = []
    original = dispatch.conv_algorithm

    def spy(*args):
        seen.append(original(*args))
        return seen[-1]
    monkeypatch.setattr(dispatch, "conv_algorithm", spy)
    F.conv2d(minidl.tensor(np.zeros(x_shape, np.float32)), minidl.tensor(np.zeros(w_shape, np.float32)), **kwargs)
    return seen[0]


def test_the_rule_picks_winograd_for_wide_3x3_and_5x5_stride_1_convs(monkeypatch):
    wide = dispatch.WINOGRAD_MIN_CHANNELS
    assert _chosen(monkeypatch, (2, wide, 8, 8), (8, wide, 3, 3), padding=1) == "winograd_4x4"
    assert _chosen(monkeypatch, (2, 2 * wide, 13, 13), (8, wide, 3, 3), padding=1, groups=2) == "winograd_4x4"
    assert _chosen(monkeypatch, (2, wide, 6, 6), (8, wide, 3, 3), padding=1) == "winograd_2x2"  # a tie: F(2x2)
    assert _chosen(monkeypatch, (2, wide - 1, 8, 8), (8, wide - 1, 3, 3), padding=1) == "im2col"
    assert _chosen(monkeypatch, (2, 2 * wide, 8, 8), (8, wide, 3, 3), padding=1, groups=2) == "winograd_4x4"
    assert _chosen(monkeypatch, (2, wide, 8, 8), (8, wide, 3, 3), stride=2, padding=1) == "im2col"
    assert _chosen(monkeypatch, (2, wide, 8, 8), (8, wide, 5, 5), padding=2) == "winograd_4x4"
    assert _chosen(monkeypatch, (2, 2 * wide, 27, 27), (8, wide, 5, 5), padding="same", groups=2) == "winograd_4x4"
    assert _chosen(monkeypatch, (2, wide, 6, 6), (8, wide, 5, 5)) == "winograd_2x2"   # 2x2 outputs: one 6x6 tile
    assert _chosen(monkeypatch, (2, wide - 1, 8, 8), (8, wide - 1, 5, 5), padding=2) == "im2col"
    assert _chosen(monkeypatch, (2, wide, 8, 8), (8, wide, 5, 5), stride=2, padding=2) == "im2col"
    assert _chosen(monkeypatch, (2, wide, 8, 8), (8, wide, 7, 7), padding=3) == "im2col"   # no 7x7 tile
    assert _chosen(monkeypatch, (2, wide, 8, 8), (8, wide, 5, 3), padding=2) == "im2col"   # not square


def test_forcing_an_algorithm(monkeypatch):
    assert _chosen(monkeypatch, (1, 64, 8, 8), (8, 64, 3, 3), padding=1, algorithm="im2col") == "im2col"
    monkeypatch.setenv("MINIDL_CONV_ALGORITHM", "winograd_2x2")
    assert _chosen(monkeypatch, (1, 2, 8, 8), (8, 2, 3, 3), padding=1) == "winograd_2x2"
    x, w = minidl.tensor(np.zeros((1, 2, 8, 8))), minidl.tensor(np.zeros((2, 2, 3, 3)))
    with pytest.raises(ValueError, match=r"conv2d: algorithm 'winograd_4x4' needs stride 1 and a square kernel "
                                         r"with a Winograd tile \(F\(2x2, 3x3\), F\(4x4, 3x3\), F\(2x2, 5x5\), "
                                         r"F\(4x4, 5x5\)\), "
                                         r"got kernel \(3, 3\) and stride \(2, 2\)"):
        F.conv2d(x, w, stride=2, algorithm="winograd_4x4")
    assert _chosen(monkeypatch, (1, 2, 8, 8), (2, 2, 5, 5), padding=2, algorithm="winograd") == "winograd_4x4"
    assert _chosen(monkeypatch, (1, 2, 8, 8), (2, 2, 5, 5), padding=2, algorithm="winograd_2x2") == "winograd_2x2"
    with pytest.raises(ValueError, match=r"algorithm 'winograd_2x2' needs .* got kernel \(7, 7\)"):
        F.conv2d(x, minidl.tensor(np.zeros((2, 2, 7, 7))), padding=3, algorithm="winograd_2x2")
    with pytest.raises(ValueError, match=r"algorithm 'winograd' needs .* got kernel \(5, 3\)"):
        F.conv2d(x, minidl.tensor(np.zeros((2, 2, 5, 3))), padding=2, algorithm="winograd")
    with pytest.raises(ValueError, match=r"conv2d: algorithm must be one of .* got 'fft'"):
        F.conv2d(x, w, algorithm="fft")
