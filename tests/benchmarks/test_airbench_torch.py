"""benchmarks/airbench_torch.py, airbench94's recipe in PyTorch: it runs, and it stays minidl's twin.

The twin is only worth its wall time if it trains what ``minidl train --model airbench94``
trains. So besides a smoke run of the command, these tests hold it to minidl: the same
whitening filters, dirac init, frozen weights and parameter groups; the same logits from
minidl's weights (float64); and, from minidl's initial weights, the same trained weights
and test results as minidl's recipe in float64 on the tiny fixture (4 epochs of 3 steps:
warm-up and decay, lookahead's synchronisations at steps 5 and 10, the whitening bias
frozen in epoch 4, translations and alternating flips).
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
from minidl import no_grad  # noqa: E402
from minidl.callbacks import FreezeAfter  # noqa: E402
from minidl.cli.datasets import make_loaders, whitening_images  # noqa: E402
from minidl.cli.recipes import AIRBENCH94, build_optimizer, make_schedule, parameter_groups  # noqa: E402
from minidl.data import normalize  # noqa: E402
from minidl.metrics import evaluate, tta_logits  # noqa: E402
from minidl.models import airbench94  # noqa: E402
from minidl.models.airbench import Airbench94  # noqa: E402
from minidl.train import Trainer  # noqa: E402

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import airbench_torch as twin  # noqa: E402

SMALL = (16, 32, 32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return write_cifar10(tmp_path_factory.mktemp("cifar"), n_per_batch=16, n_test=12)


def _normalised(fixture, n, dtype=np.float32):
    mean, std = twin.channel_statistics(fixture.train_images[:n])
    return normalize(fixture.train_images[:n].astype(dtype), mean, std), mean, std


def _names(model, params):
    ids = {id(p): name for name, p in model.named_parameters()}
    return sorted(ids[id(p)] for p in params)


def test_the_command_trains_one_epoch_and_writes_its_json(fixture, tmp_path):
    out = tmp_path / "torch.json"
    done = subprocess.run([sys.executable, str(BENCH / "airbench_torch.py"), "--data-dir", str(fixture.root),
                           "--epochs", "1", "--batch-size", "16", "--limit-test", "10", "--threads", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith("epoch 1/1: train loss") and lines[-1].startswith("test: loss")
    result = json.loads(out.read_text())
    assert result["train_images"] == 80 and result["test_images"] == 10 and result["threads"] == 1
    assert len(result["history"]) == 1 and result["history"][0]["lr"] == pytest.approx(0.2 * AIRBENCH94["lr"])
    # label-smoothed cross-entropy over 10 classes starts near ln 10 = 2.3; a blow-up would not be finite
    assert 0.5 < result["history"][0]["train_loss"] < 10 and np.isfinite(result["test_loss"])
    assert 0 <= result["test_acc"] <= result["test_top5"] <= 1
    assert 0 < result["train_s"] < result["wall_s"] and result["torch"] == torch.__version__
    assert result["date"].startswith("20") and result["recipe"]["label_smoothing"] == 0.2


def test_a_missing_data_set_is_one_line_and_exit_1(tmp_path, capsys):
    assert twin.main(["--data-dir", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("airbench_torch.py: error:")


def test_initial_network_matches_minidls_construction(fixture):
    images, _, _ = _normalised(fixture, 80, np.float64)
    mine = airbench94(images=images, seed=0)
    theirs = twin.build_model(torch.from_numpy(images), seed=0).double()
    # whitening: the same filters, float64, up to the sign LAPACK gives each eigenvector (v and -v swap places)
    a, b = mine.whiten.weight.data.reshape(24, -1), theirs.whiten.weight.detach().numpy().reshape(24, -1)
    signs = np.sign(np.sum(a[:12] * b[:12], axis=1))
    np.testing.assert_allclose(b[:12] * signs[:, None], a[:12], rtol=1e-6, atol=1e-6 * np.abs(a).max())
    np.testing.assert_array_equal(b[12:], -b[:12])
    # dirac init: the first min(in, out) filters of every block conv are the identity in both
    for name, p in theirs.named_parameters():
        ours = mine.state_dict()[name]
        assert tuple(p.shape) == ours.shape and p.requires_grad == dict(mine.named_parameters())[name].requires_grad
        if name.startswith("block") and ".conv" in name:
            k = min(p.shape[:2])
            np.testing.assert_array_equal(p.detach().numpy()[:k], ours[:k])
            assert abs(ours[:k]).sum() == k
    for name, buffer in theirs.named_buffers():
        if buffer.is_floating_point():
            np.testing.assert_array_equal(buffer.numpy(), mine.state_dict()[name])
    # the optimizer's groups: the same parameters in each, with the same lr and weight decay
    settings = dict(AIRBENCH94)
    for g_mine, g_twin in zip(parameter_groups(settings, mine), twin.parameter_groups(theirs), strict=True):
        assert _names(mine, g_mine["params"]) == _names(theirs, g_twin["params"])
        for key in ("lr", "weight_decay"):
            assert g_mine.get(key) == g_twin.get(key)


def _load_minidl(model, state: dict) -> None:
    """minidl's state_dict into the twin (num_batches_tracked is torch's alone)."""
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                                                strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)


def test_logits_match_minidl_from_its_weights_in_float64(fixture):
    images, mean, std = _normalised(fixture, 80, np.float64)
    mine = airbench94(images=images, seed=0).to(dtype=np.float64)
    theirs = twin.Airbench94().double()
    _load_minidl(theirs, mine.state_dict())
    x = normalize(fixture.test_images[:4].astype(np.float64), mean, std)
    for training in (True, False):
        mine.train(training)
        theirs.train(training)
        with torch.no_grad():
            expected = twin.tta_logits(theirs, torch.from_numpy(x), 2).numpy()
        with no_grad():
            got = tta_logits(mine, x, 2).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_its_batches_are_minidls(fixture):
    settings = dict(AIRBENCH94, model="airbench94", batch_size=16, limit_train=40, limit_val=None, limit_test=None,
                    seed=3, dataset="cifar10")
    train, _, _ = make_loaders(settings, as_loaded(fixture), "cpu")
    mean, std = twin.channel_statistics(fixture.train_images[:40])
    assert list(mean) == settings["channel_mean"] and list(std) == settings["channel_std"]
    batches = twin.Batches(fixture.train_images[:40], fixture.train_labels[:40], 16, mean, std, seed=3, augment=True)
    assert len(batches) == len(train) == 3
    for epoch in (0, 1):
        for (x, y), (mx, my) in zip(batches.epoch(epoch), train.epoch_batches(epoch), strict=True):
            np.testing.assert_array_equal(y.numpy(), my)
            np.testing.assert_array_equal(x.numpy(), mx.data)


def test_a_short_run_trains_the_weights_minidls_recipe_trains_float64(fixture):
    # minidl's side, built as `minidl train --model airbench94` builds it (minidl/cli/train.py's run),
    # in float64 so that rounding cannot hide a difference: 4 epochs of 3 steps of 4 images
    settings = dict(AIRBENCH94, model="airbench94", epochs=4, batch_size=4, limit_train=12, limit_val=None,
                    limit_test=6, seed=0, dataset="cifar10")
    train, _, test = make_loaders(settings, as_loaded(fixture), "cpu")
    # narrower blocks than the recipe's 64/256/256 to keep the test quick; the recipe does not depend on them
    model = Airbench94(widths=SMALL, seed=0)
    model.init_whitening(whitening_images(settings, as_loaded(fixture)))
    model = model.to(dtype=np.float64)
    start = {k: np.array(v) for k, v in model.state_dict().items()}
    optimizer = build_optimizer(settings, parameter_groups(settings, model), settings["epochs"] * len(train), model)
    snapshots = StepSnapshots(model)
    mine = snapshots.states

    def loss_fn(outputs, labels):
        return F.cross_entropy(outputs, labels, label_smoothing=settings["label_smoothing"])
    trainer = Trainer(model, optimizer, Float64Batches(train), None, epochs=4, schedule=make_schedule(settings, optimizer,
                      len(train)), loss_fn=loss_fn, callbacks=[FreezeAfter([model.whiten.bias], 3), snapshots],
                      progress=False, plots=False, log=lambda line: None)
    trainer.fit()
    expected = evaluate(model, Float64Batches(test), loss_fn=loss_fn, tta=settings["tta"])
    # the twin from the same weights, on its own batches (the same images: minidl's generators)
    twin_model = twin.Airbench94(widths=SMALL).double()
    _load_minidl(twin_model, start)
    mean, std = np.array(settings["channel_mean"]), np.array(settings["channel_std"])
    batches = twin.Batches(fixture.train_images[:12], fixture.train_labels[:12], 4, mean, std, augment=True,
                           dtype=torch.float64)
    theirs, lrs = [], []
    rows = twin.train(twin_model, batches, 4, log=lambda line: None, on_step=lambda opt: (
        theirs.append({k: v.numpy().copy() for k, v in twin_model.state_dict().items()}),
        lrs.append([g["lr"] for g in opt.param_groups])))
    assert len(theirs) == len(mine) == 12
    for step, (a, b) in enumerate(zip(mine, theirs), 1):
        for name, value in a.items():
            np.testing.assert_allclose(b[name], value, rtol=1e-9, atol=1e-9, err_msg=f"{name} after step {step}")
    # warm-up from 0.2 lr, 64x for the shifts, the whitening bias frozen in epoch 4 (steps 10 to 12)
    assert lrs[0] == pytest.approx([0.3, 19.2, 0.3]) and lrs[2] == pytest.approx([1.5, 96.0, 1.5])
    assert [lr[2] for lr in lrs[9:]] == [0.0] * 3 and lrs[9][0] > 0
    for row, ours in zip(rows, trainer.state["history"], strict=True):
        assert row["train_loss"] == pytest.approx(ours["train_loss"], rel=1e-9)
        assert row["train_acc"] == ours["train_acc"] and row["lr"] == pytest.approx(ours["lr"], rel=1e-12)
    got = twin.evaluate(twin_model, twin.Batches(fixture.test_images[:6], fixture.test_labels[:6], 4, mean, std,
                                                 dtype=torch.float64))
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-9)
    assert got["acc"] == expected["acc"] and got["top5"] == expected["top5"]
