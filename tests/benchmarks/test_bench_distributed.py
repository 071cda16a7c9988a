"""benchmarks/bench_distributed.py: its jobs run, the ResNet-20 rows and the threaded comparison add up."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from support.mpi import MPIEXEC, needs_mpi

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_distributed  # noqa: E402


@needs_mpi
def test_resnet20_round_with_threads_reports_consistent_ratios(tmp_path, capsys):
    out = tmp_path / "bd.json"
    code = bench_distributed.main(["--variants", "resnet20", "--rounds", "1", "--steps", "1", "--warmup", "1",
                                   "--threaded", "--mpiexec", MPIEXEC, "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())["results"]["resnet20"]
    assert result["batch"] == 128 and result["threads"] == 2
    one, many, threaded = result["one_process_img_s"], result["n_process_img_s"], result["threaded_img_s"]
    assert min(one, many, threaded) > 0
    assert result["processes_over_threads"] == pytest.approx(many / threaded)
    assert result["efficiency"] == pytest.approx(many / (2 * one))
    assert [run["processes"] for run in result["threaded_runs"]] == [1]
    assert "1 proc x 2 threads img/s" in capsys.readouterr().out


def test_refuses_an_unknown_variant_in_one_line(capsys):
    assert bench_distributed.main(["--variants", "resnet20,vgg"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'resnet20,vgg'" in err


@needs_mpi
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch not installed (optional 'bench' extra)")
def test_torch_job_trains_the_twin_on_the_same_loader(tmp_path):
    out = tmp_path / "bd.json"
    code = bench_distributed.main(["--variants", "resnet20", "--rounds", "1", "--steps", "1", "--warmup", "1",
                                   "--torch", "--mpiexec", MPIEXEC, "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())["results"]["resnet20"]
    assert result["torch_img_s"] > 0 and result["threaded_img_s"] is None
    assert result["processes_over_torch"] == pytest.approx(result["n_process_img_s"] / result["torch_img_s"])
    assert result["torch_runs"][0]["processes"] == 1
