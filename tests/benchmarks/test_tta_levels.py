"""benchmarks/tta_levels.py: a finished run's weights at every test-time augmentation level."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import tta_levels  # noqa: E402

from minidl.cli import train as cli  # noqa: E402
from support.cifar_fixture import write_cifar10  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A ResNet-20 run of 2 steps on the tiny CIFAR fixture, evaluated with tta 2."""
    fixture = write_cifar10(tmp_path_factory.mktemp("cifar"), n_per_batch=16, n_test=12)
    out = tmp_path_factory.mktemp("runs") / "run"
    assert cli.main(["--model", "resnet20", "--data-dir", str(fixture.root), "--out", str(out), "--epochs", "1",
                     "--batch-size", "8", "--limit-train", "16", "--tta", "2", "--device", "cpu",
                     "--no-progress", "--no-plots"]) == 0
    return fixture, out


def test_the_runs_own_level_reproduces_its_logged_accuracy(tiny_run, tmp_path, capsys):
    fixture, run = tiny_run
    capsys.readouterr()
    out_json = tmp_path / "levels.json"
    assert tta_levels.main(["--run", str(run), "--data-dir", str(fixture.root), "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    result = json.loads(out_json.read_text())
    logged = json.loads((run / "results.json").read_text())
    assert [r["level"] for r in result["levels"]] == [0, 1, 2] and result["trained_tta"] == 2
    assert result["levels"][2]["accuracy"] == pytest.approx(logged["test_acc"], abs=1e-12)
    assert result["levels"][2]["loss"] == pytest.approx(logged["test_loss"], rel=1e-6)
    assert "reproduced" in text and "NOT" not in text


def test_bad_input_is_one_line_and_exit_2(tiny_run, tmp_path, capsys):
    fixture, run = tiny_run
    assert tta_levels.main(["--run", str(tmp_path), "--data-dir", str(fixture.root)]) == 2
    assert "no checkpoint.npz" in capsys.readouterr().err
    (tmp_path / "broken" / "cifar-10-batches-py").mkdir(parents=True)    # there, but empty: no download
    assert tta_levels.main(["--run", str(run), "--data-dir", str(tmp_path / "broken")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tta_levels:")
    with pytest.raises(SystemExit):
        tta_levels.main(["--run", str(run), "--data-dir", str(fixture.root), "--levels", "0,7"])
