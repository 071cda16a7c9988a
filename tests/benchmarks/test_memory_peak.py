"""benchmarks/memory_peak.py: what a training step keeps for backward, counted once per memory block."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import memory_peak  # noqa: E402
from frameworks import model_spec  # noqa: E402

import minidl  # noqa: E402
from minidl import Function, nn  # noqa: E402


class _Keep(Function):
    """y = 2a, keeping a for backward as a real op would."""

    def forward(self, a):
        self.save_for_backward(a)
        return a * 2

    def backward(self, g):
        return g * 2


def test_a_block_kept_by_two_functions_counts_once_and_views_count_as_their_base():
    base = np.arange(12.0)
    assert memory_peak.block_of(base[2:].reshape(2, 5)) is base
    x = minidl.tensor(np.ones((4, 8)), requires_grad=True)
    h = _Keep()(x)                        # keeps x (256 bytes)
    loss = (_Keep()(h) + _Keep()(h)).sum()   # both keep h: one block
    rows = memory_peak.saved_for_backward(loss, {}, exclude=set())
    assert sum(nbytes for _, _, nbytes in rows) == x.data.nbytes + h.data.nbytes
    assert [op for _, op, _ in rows].count("_Keep") == 2
    excluded = memory_peak.saved_for_backward(loss, {}, exclude={id(x.data)})
    assert sum(nbytes for _, _, nbytes in excluded) == h.data.nbytes


def test_layer_tags_name_each_function_by_its_innermost_module():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    originals = (nn.Module.__call__, Function.__call__)
    with memory_peak.LayerTags(model) as tags:
        y = model(minidl.tensor(np.ones((2, 3), np.float32)))
    assert sorted(set(tags.layer_of.values())) == ["0", "1"]
    assert (nn.Module.__call__, Function.__call__) == originals   # restored on exit
    assert y.creator is not None and id(y.creator) in tags.layer_of


def test_a_resnet_step_is_counted_by_kind_op_and_layer():
    result = memory_peak.measure(model_spec("resnet20"), batch=2)
    kinds = result["kinds"]
    saved = kinds["saved for backward"]
    assert saved > 0 and saved == sum(result["by_op"].values()) == sum(result["by_layer"].values())
    assert kinds["parameters"] == 269_722 * 4 == kinds["optimizer state"] == result["gradients"]
    assert result["counted"] == sum(kinds.values())
    assert "layer1.0.bn1" in result["by_layer"] and any(op.startswith("BatchNorm") for op in result["by_op"])
    assert "saved for backward, by op" in memory_peak.report(result)


def test_the_measured_peak_comes_from_a_fresh_process(tmp_path):
    """In a long test process the step may reuse memory earlier tests freed (the peak then reads 0),
    so the measured peak is checked where the script is meant to run: a process of its own."""
    import json
    import subprocess
    out = tmp_path / "peak.json"
    done = subprocess.run([sys.executable, str(BENCH / "memory_peak.py"), "--model", "resnet20", "--batch-size", "2",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["measured_peak"] > 0 and result["counted"] == sum(result["kinds"].values())


def test_an_unknown_variant_is_one_line_and_exit_2(capsys):
    assert memory_peak.main(["--model", "alexnet", "--variant", "nope"]) == 2
    assert "memory_peak:" in capsys.readouterr().err
