"""benchmarks/ort_layers.py: minidl's fused inference and ONNX Runtime's profile, layer by layer."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import ort_layers  # noqa: E402


def _node(name, op, ts, dur):
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}


def test_the_trace_is_read_run_by_run_with_the_warm_up_left_out(tmp_path):
    events = [{"cat": "Session", "name": "model_run", "ts": 0, "dur": 99}]
    ts = 1
    for run, scale in enumerate((100, 1, 2)):          # run 0 is the warm-up, 100x slower
        for name, op, dur in (("conv_a", "FusedConv", 10), ("reorder", "ReorderOutput", 3), ("fc", "Gemm", 5)):
            events.append(_node(name, op, ts, dur * scale))
            events.append({"cat": "Node", "name": f"{name}_fence_before", "ts": ts, "dur": 0})
            ts += 1
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(events[::-1]))           # out of order on purpose: read by timestamp
    order, times = ort_layers.ort_node_times(path, runs_to_skip=1)
    assert order == [("conv_a", "FusedConv"), ("reorder", "ReorderOutput"), ("fc", "Gemm")]
    assert times["conv_a"] == pytest.approx([10e-6, 20e-6]) and times["fc"] == pytest.approx([5e-6, 10e-6])
    assert [ort_layers.ORT_CATEGORY[op] for _, op in order] == ["conv", "layout", "dense"]


def test_minidl_layers_fall_into_their_categories():
    from minidl import nn
    assert ort_layers.minidl_category(nn.MaxPool2d(2)) == "pool"
    assert ort_layers.minidl_category(nn.Linear(2, 3)) == "dense"
    assert ort_layers.minidl_category(nn.Flatten()) == "layout"
    assert ort_layers.minidl_category(nn.ReLU()) == "element-wise"
    assert ort_layers.minidl_category(nn.Conv2d(1, 1, 3)) == "conv"


def test_both_sides_of_a_resnet_are_timed_and_add_up(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out = tmp_path / "layers.json"
    assert ort_layers.main(["--model", "resnet20", "--batch-size", "2", "--warmup", "1", "--iters", "2",
                            "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for side in ("minidl", "onnxruntime"):
        totals = result[f"{side}_by_category"]
        assert totals["conv"] > 0 and totals["dense"] > 0 and totals["pool"] > 0
        assert sum(totals.values()) == pytest.approx(result[f"{side}_batch_s"], rel=1e-6)
    convs = [row for row in result["minidl_layers"] if row[2] == "conv"]
    assert len(convs) == 19      # ResNet-20: conv1 and two per block, option-A shortcuts have none
    assert len([row for row in result["onnxruntime_nodes"] if row[2] == "conv"]) == 19
    text = capsys.readouterr().out
    assert "resnet20, batch 2" in text and "layer1.0.conv1" in text


def test_an_unknown_variant_is_one_line(capsys):
    assert ort_layers.main(["--model", "alexnet", "--variant", "nope"]) == 2
    assert capsys.readouterr().err.strip().startswith("ort_layers: ")

