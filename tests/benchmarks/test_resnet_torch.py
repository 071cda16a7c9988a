"""benchmarks/resnet_torch.py, a CIFAR ResNet trained by PyTorch on minidl's batches: it runs, and it is minidl's twin.

The script is only a diagnosis of minidl's engine if everything but the engine is
minidl's. So: from the same initial weights, on the same batches, the twin's weights after
every step equal those of minidl's ``Trainer`` in float64 (cosine schedule stepped per
batch, Nesterov momentum, weight decay, label smoothing, crops and flips), and its test
results equal minidl's ``evaluate``.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from support.cifar_fixture import write_cifar10  # noqa: E402
from support.twin_data import Float64Batches, StepSnapshots, as_loaded  # noqa: E402
import minidl.functional as F  # noqa: E402
from minidl.cli.datasets import make_loaders  # noqa: E402
from minidl.cli.recipes import CIFAR_RESNET, build_optimizer, make_schedule  # noqa: E402
from minidl.metrics import evaluate  # noqa: E402
from minidl.train import Trainer  # noqa: E402

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import resnet_torch as twin  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return write_cifar10(tmp_path_factory.mktemp("cifar"), n_per_batch=8, n_test=12)


def test_the_twin_trains_the_weights_minidls_trainer_trains_float64(fixture):
    settings = dict(CIFAR_RESNET, model="resnet20", epochs=2, batch_size=4, limit_train=12, limit_val=None,
                    limit_test=6, seed=1, dataset="cifar10", schedule="cosine", nesterov=True, weight_decay=5e-4,
                    label_smoothing=0.1, optimizer="sgd")
    train, _, test = make_loaders(settings, as_loaded(fixture), "cpu")
    ours, theirs = twin.build_twin(settings, 10, dtype=torch.float64)
    model = ours.to(dtype=np.float64)
    optimizer = build_optimizer(settings, list(model.parameters()))
    snapshots = StepSnapshots(model)
    mine = snapshots.states

    def loss_fn(outputs, labels):
        return F.cross_entropy(outputs, labels, label_smoothing=settings["label_smoothing"])
    trainer = Trainer(model, optimizer, Float64Batches(train), None, epochs=2,
                      schedule=make_schedule(settings, optimizer, len(train)), loss_fn=loss_fn,
                      callbacks=[snapshots], progress=False, plots=False, log=lambda line: None)
    trainer.fit()
    expected = evaluate(model, Float64Batches(test), loss_fn=loss_fn)

    steps = []
    rows = twin.train(theirs, train, settings, dtype=torch.float64, log=lambda line: None,
                      on_step=lambda net: steps.append({k: v.numpy().copy() for k, v in net.state_dict().items()}))
    assert len(steps) == len(mine) == 6
    for step, (a, b) in enumerate(zip(mine, steps), 1):
        for name, value in a.items():   # weights, momentum-free buffers: running statistics too
            np.testing.assert_allclose(b[name], value, rtol=1e-9, atol=1e-9, err_msg=f"{name} after step {step}")
    for row, reference in zip(rows, trainer.state["history"], strict=True):
        assert row["lr"] == pytest.approx(reference["lr"], rel=1e-12)
        assert row["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-9)
        assert row["train_acc"] == reference["train_acc"]
    assert rows[1]["lr"] < rows[0]["lr"] == settings["lr"]          # the cosine has moved
    got = twin.evaluate(theirs, test, settings, dtype=torch.float64)
    assert got["test_loss"] == pytest.approx(expected["loss"], rel=1e-9)
    assert got["test_acc"] == expected["acc"] and got["test_top5"] == expected["top5"]


def test_the_command_trains_and_writes_its_json(fixture, tmp_path):
    out = tmp_path / "resnet.json"
    done = subprocess.run([sys.executable, str(BENCH / "resnet_torch.py"), "--model", "resnet20", "--data-dir",
                           str(fixture.root), "--epochs", "2", "--batch-size", "16", "--schedule", "cosine",
                           "--label-smoothing", "0.1", "--threads", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith("epoch 1/2: train loss") and lines[-1].startswith("test: loss")
    result = json.loads(out.read_text())
    assert [row["epoch"] for row in result["epochs"]] == [1, 2] and result["epochs"][1]["lr"] < 0.1
    assert result["settings"]["label_smoothing"] == 0.1 and result["threads"] == 1
    assert 0.5 < result["epochs"][0]["train_loss"] < 10 and 0 <= result["test_acc"] <= result["test_top5"] <= 1


@pytest.mark.parametrize("argv, words", [(["--model", "airbench94"], "--model must be one of"),
                                         (["--model", "resnet20", "--optimizer", "adam"], "only SGD"),
                                         (["--model", "resnet20", "--schedule", "plateau"], "only SGD")])
def test_what_it_does_not_twin_is_refused_in_one_line(fixture, capsys, argv, words):
    assert twin.main(["--data-dir", str(fixture.root), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("resnet_torch.py: ") and words in err[0]
    assert err[0].count("resnet_torch.py") == 1


def test_a_missing_data_set_is_one_line(tmp_path, capsys):
    assert twin.main(["--model", "resnet20", "--data-dir", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("resnet_torch.py:")
