"""The example scripts are thin wrappers of the ``minidl`` command: same flags, same output, their own name.

examples/alexnet_cifar10.py is ``minidl train``, examples/predict.py ``minidl
predict``, examples/layer_by_layer.py ``minidl layers``; the commands themselves are
tested in tests/cli. Here: each script imports the package (no sys.path edits),
runs what the command runs, and reports errors under its own name.
"""
import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from support.cifar_fixture import write_cifar10
from support.commands import EXAMPLES, ROOT, minidl_command

SCRIPTS = {"alexnet_cifar10.py": "train", "predict.py": "predict", "layer_by_layer.py": "layers"}
TIMING = ("seconds", "images_per_s")


def _run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), **kw)


def _script(name):
    return [sys.executable, str(EXAMPLES / name)]


@pytest.mark.parametrize("name, command", SCRIPTS.items())
def test_each_script_calls_its_command_and_never_edits_sys_path(name, command):
    text = (EXAMPLES / name).read_text()
    assert "sys.path" not in text
    assert f"from minidl.cli import {command}" in text and f"{command}.main(prog=" in text
    assert len(text.splitlines()) < 40  # a thin wrapper: the code lives in minidl/cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same tiny run through examples/alexnet_cifar10.py and through `minidl train`."""
    root = tmp_path_factory.mktemp("runs")
    data = write_cifar10(root / "cifar", n_per_batch=8, n_test=8).root
    done = {}
    for key, prefix in (("script", _script("alexnet_cifar10.py")), ("command", minidl_command("train"))):
        args = ["--variant", "cifar", "--widths", "4,4,4,4,4,8,8", "--data-dir", str(data), "--out",
                str(root / key), "--epochs", "1", "--batch-size", "8", "--val-size", "8", "--device", "cpu",
                "--no-progress"]
        done[key] = _run(prefix + args)
        assert done[key].returncode == 0, done[key].stderr
    return root, done


def test_the_training_script_is_minidl_train(runs):
    root, done = runs
    def text(key):  # the output, less the run's folder and its timing
        return re.sub(r"\d+:\d\d, \d+ img/s", "TIME", done[key].stdout.replace(str(root / key), "OUT"))
    assert text("script") == text("command") and "TIME" in text("script")
    for name in ("history.csv", "results.json", "checkpoint.npz", "best.npz"):
        assert (root / "script" / name).is_file(), name
    with open(root / "script" / "history.csv") as a, open(root / "command" / "history.csv") as b:
        strip = [[{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)] for f in (a, b)]
    assert strip[0] == strip[1]
    results = [json.loads((root / key / "results.json").read_text()) for key in ("script", "command")]
    assert results[0]["test_loss"] == results[1]["test_loss"]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    for name in ("curves.png", "filters.png"):
        assert (root / "script" / name).read_bytes()[:4] == b"\x89PNG", name


def test_the_scripts_report_errors_under_their_own_names(tmp_path):
    done = _run(_script("alexnet_cifar10.py") + ["--out", str(tmp_path / "none"), "--resume"])
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        f"alexnet_cifar10: error: --resume: there is no checkpoint at {tmp_path / 'none' / 'checkpoint.npz'}; "
        "start the run without --resume"]
    done = _run(_script("alexnet_cifar10.py") + ["--epochs", "0"])
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "alexnet_cifar10: error: argument --epochs: must be >= 1, got 0 (`alexnet_cifar10 --help` lists the options)"]
    done = _run(_script("layer_by_layer.py") + ["--data-dir", str(tmp_path / "empty"), "--no-download"])
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("layer_by_layer: error: ")


def test_the_predict_script_is_minidl_predict(runs, tmp_path):
    image = pytest.importorskip("PIL.Image")
    image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    argv = [str(tmp_path / "a.png"), str(tmp_path / "missing.png"), "--weights", str(runs[0] / "script" / "best.npz")]
    script, command = _run(_script("predict.py") + argv), _run(minidl_command("predict") + argv)
    assert script.returncode == command.returncode == 1
    assert script.stdout == command.stdout and script.stdout.startswith(f"{tmp_path / 'a.png'}:\n  1. ")
    assert script.stderr == command.stderr.replace("minidl predict: error:", "predict: error:")
    assert script.stderr.startswith("predict: error: ")
