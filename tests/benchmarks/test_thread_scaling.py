"""benchmarks/thread_scaling.py: the regions it times are minidl's, and its columns mean what they say."""
from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import thread_scaling  # noqa: E402


def test_resnet20_regions_and_short_calls(tmp_path, capsys):
    out = tmp_path / "ts.json"
    code = thread_scaling.main(["--model", "resnet20", "--batch-size", "4", "--steps", "1", "--rounds", "1",
                                "--calls", "--count", "20", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    regions = result["regions"]
    # ResNet-20's 3x3 convolutions run Winograd, its batch norms the channel passes: both must be seen.
    assert {"winograd.forward", "winograd.gradients", "channel_passes._affine"} <= set(regions)
    for entry in regions.values():
        # one thread: the pieces run inside the region, one after the other
        assert 0 < entry["one_thread_in_pieces_s"] <= entry["one_thread_s"] * 1.001 + 1e-6
        assert entry["in_pieces_s"] > 0 and entry["wall_s"] > 0
    assert sum(e["one_thread_s"] for e in regions.values()) < result["step_s"]["1"]
    assert set(result["calls"]) == {"alone", "2 threads", "2 processes"}
    assert all(v > 0 for how in result["calls"].values() for v in how.values())
    text = capsys.readouterr().out
    assert "whole step" in text and "2 threads of one process us" in text


def test_refuses_an_unknown_model_in_one_line(capsys):
    assert thread_scaling.main(["--model", "vgg16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("thread_scaling:") and "vgg16" in err
