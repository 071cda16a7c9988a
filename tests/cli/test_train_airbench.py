"""``minidl train --model airbench94``: the recipe's settings, the whitening layer from the run's own
training images, the optimizer's groups and lookahead, the whitening bias frozen after 3 epochs, and
an interrupted run resuming bit-identically. In-process on the tiny CIFAR fixture: 4 epochs of 3 steps
of 8 images (the network itself is the full 2-million-weight one)."""
import contextlib
import subprocess

import numpy as np
import pytest

from support.cifar_fixture import write_cifar10
from support.commands import ROOT, minidl_command
from support.mpi import MPIEXEC, mpi_env, needs_mpi
from support.runs import assert_identical, final, history
from minidl.checkpoint import load_checkpoint
from minidl.cli import train as cli
from minidl.cli.recipes import AIRBENCH94
from minidl.data import normalize
from minidl.models import airbench94, whitening_filters
from minidl.train import Trainer


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    return write_cifar10(root, n_per_batch=16, n_test=12)


def _args(root, out, *extra):
    return ["--model", "airbench94", "--data-dir", str(root), "--out", str(out), "--epochs", "4", "--batch-size",
            "8", "--limit-train", "24", "--device", "cpu", "--checkpoint-every", "5", "--no-progress", "--no-plots",
            *extra]


@pytest.fixture(scope="module")
def run(fixture, tmp_path_factory):
    out = tmp_path_factory.mktemp("airbench") / "run"
    assert cli.main(_args(fixture.root, out)) == 0
    return out


def test_airbench94_runs_with_its_recipe_and_writes_its_files(run, fixture, capsys):
    for name in ("checkpoint.npz", "best.npz", "history.csv", "results.json"):
        assert (run / name).exists(), name
    state, results, rows = final(run)
    settings = results["settings"]
    for key in ("lr", "momentum", "weight_decay", "nesterov", "schedule", "label_smoothing", "lookahead", "tta",
                "flip", "preprocess", "val_size", "crop_padding", "padding_mode", "bias_lr_scale"):
        assert settings[key] == AIRBENCH94[key], key
    assert settings["model"] == "airbench94" and settings["batch_size"] == 8 and len(rows) == 4
    assert results["best_val_acc"] is None and np.isfinite(results["test_loss"])
    # per-channel statistics of the 24 training images, and the whitening layer from them
    images = fixture.train_images[:24].astype(np.float64) / 255
    np.testing.assert_allclose(settings["channel_mean"], images.mean(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(settings["channel_std"], images.std(axis=(0, 2, 3)), atol=1e-6)
    expected = whitening_filters(normalize(fixture.train_images[:24], settings["channel_mean"],
                                           settings["channel_std"]))
    np.testing.assert_allclose(state["model"]["whiten.weight"], expected, rtol=1e-4, atol=1e-4 * abs(expected).max())
    # the schedule's first step: 0.2 of the peak; the batch norms' shifts at 64x; lookahead's slow weights
    np.testing.assert_allclose(history(run)[0, 0], 0.2 * 1.5, rtol=1e-12)
    groups = state["optim"]["param_groups"]
    assert len(groups) == 3 and groups[1]["lr"] == pytest.approx(64 * groups[0]["lr"])
    assert groups[1]["weight_decay"] == pytest.approx(groups[0]["weight_decay"] / 64)
    assert state["optim"]["lookahead"]["steps"] == 12 and len(state["optim"]["lookahead"]["slow"]) == \
        sum(len(g["params"]) for g in groups)
    assert len(state["optim"]["lookahead"]["slow_buffers"]) == 12   # 6 batch norms' running mean and variance
    assert groups[2]["lr"] == 0.0   # the whitening bias, frozen after 3 epochs


def test_an_interrupted_run_resumes_bit_identically_and_the_whitening_bias_stops(run, fixture, tmp_path,
                                                                                  monkeypatch, capsys):
    out = tmp_path / "run"
    train_step = Trainer._train_step

    def interrupted(self, x, y):
        if self.state["global_step"] == 11:
            raise KeyboardInterrupt
        return train_step(self, x, y)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_train_step", interrupted)
        assert cli.main(_args(fixture.root, out)) == cli.EXIT_INTERRUPTED
    cut = load_checkpoint(out / "checkpoint.npz")
    assert cut["trainer"]["global_step"] == 10
    assert cli.main(_args(fixture.root, out, "--resume")) == 0
    assert "resuming at epoch 4, batch 1 (10 steps done)" in capsys.readouterr().out
    assert_identical(final(run), final(out))
    # frozen from epoch 4 (step 10) on: lookahead's pull at step 10 was its last move (as in airbench,
    # whose average covers it too); the rest trains on
    end = final(out)[0]["model"]
    np.testing.assert_array_equal(end["whiten.bias"], cut["model"]["whiten.bias"])
    assert not np.array_equal(end["head.weight"], cut["model"]["head.weight"])


def test_airbench94_refuses_a_folder(tmp_path, capsys):
    assert cli.main(["--model", "airbench94", "--dataset", "folder", "--data-dir", str(tmp_path), "--out",
                     str(tmp_path / "out")]) == 1
    assert "--model airbench94 trains on CIFAR-10 only" in capsys.readouterr().err


def test_its_ablation_knobs_change_the_groups_and_the_freeze(fixture, tmp_path):
    """--bias-lr-scale and --whiten-bias-epochs, for measuring what each ingredient adds."""
    out = tmp_path / "ablated"
    assert cli.main(_args(fixture.root, out, "--epochs", "2", "--bias-lr-scale", "1", "--whiten-bias-epochs",
                          "5", "--no-lookahead")) == 0
    state, results, _ = final(out)
    assert results["settings"]["bias_lr_scale"] == 1.0 and results["settings"]["whiten_bias_epochs"] == 5
    groups = state["optim"]["param_groups"]
    assert groups[1]["lr"] == pytest.approx(groups[0]["lr"]) and groups[1]["weight_decay"] == \
        pytest.approx(groups[0]["weight_decay"])
    assert groups[2]["lr"] == pytest.approx(groups[0]["lr"])   # not frozen within the 2 epochs
    trained = load_checkpoint(out / "checkpoint.npz")["model"]["whiten.bias"]
    assert not np.allclose(trained, airbench94(seed=0).whiten.bias.data)   # it trained


@pytest.mark.parametrize("argv, words", [(["--model", "resnet20", "--bias-lr-scale", "8"], "airbench94 only"),
                                         (["--model", "alexnet", "--whiten-bias-epochs", "1"], "airbench94 only"),
                                         (["--model", "airbench94", "--bias-lr-scale", "0.5"], "must be >= 1.0")])
def test_the_knobs_refuse_other_models_and_bad_values(tmp_path, capsys, argv, words):
    with pytest.raises(SystemExit) if "0.5" in argv else contextlib.nullcontext():
        code = cli.main([*argv, "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")])
        assert code != 0
    assert words in capsys.readouterr().err



def test_without_its_initialisations_the_layers_keep_their_default_init(fixture, tmp_path, capsys):
    out = tmp_path / "plain"
    assert cli.main(_args(fixture.root, out, "--epochs", "1", "--no-dirac", "--no-whitening")) == 0
    assert "no dirac init, no whitening init" in capsys.readouterr().out
    state, results, _ = final(out)
    assert results["settings"]["dirac"] is False and results["settings"]["whitening"] is False
    start = airbench94(seed=0, dirac=False, whitening=False)
    assert start.whiten.weight.requires_grad
    assert not np.allclose(start.block1.conv1.weight.data[:24, :, 1, 1], np.eye(24), atol=0.05)
    # the whitening filters trained (they are the default init moved by SGD), not the eigenvectors
    trained = state["model"]["whiten.weight"]
    assert not np.allclose(trained, start.whiten.weight.data)
    assert not np.allclose(trained, whitening_filters(normalize(fixture.train_images[:24],
                                                                results["settings"]["channel_mean"],
                                                                results["settings"]["channel_std"])), atol=1e-2)
    recipe = airbench94(seed=0)
    assert not recipe.whiten.weight.requires_grad
    np.testing.assert_array_equal(recipe.block1.conv1.weight.data[:24, :, 1, 1], np.eye(24, dtype=np.float32))


@needs_mpi
def test_two_processes_write_the_history_of_one(fixture, tmp_path):
    """mpiexec -n 2 trains the same run (whitening from the same images, sync batch norm, lookahead on
    every process, the alternating flips of the global batch). float32, so equal to rounding: at lr
    0.01 the two runs' training losses agree to 1.5e-6 after 12 steps (measured); at the recipe's lr
    1.5 rounding grows about tenfold an epoch (1e-7 after the first, 2e-4 after the fourth), which
    would hide a real difference, hence the small lr here."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli.main(_args(fixture.root, one, "--lr", "0.01")) == 0
    done = subprocess.run([MPIEXEC, "-n", "2", *minidl_command("train"), *_args(fixture.root, two, "--lr", "0.01")],
                          capture_output=True, text=True, env=mpi_env(), cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "data parallel: 2 processes" in done.stdout
    h_two, h_one = history(two), history(one)   # columns: lr, train loss, acc, val loss, acc, top-5
    np.testing.assert_allclose(h_two[:, 0], h_one[:, 0], rtol=1e-12)
    np.testing.assert_allclose(h_two[:, 1], h_one[:, 1], rtol=2e-5)
    np.testing.assert_allclose(h_two[:, 2], h_one[:, 2], rtol=0, atol=1 / 24 + 1e-9)      # 24 training images
    (state_two, results_two, _), (state_one, results_one, _) = final(two), final(one)
    np.testing.assert_allclose(state_two["model"]["whiten.weight"], state_one["model"]["whiten.weight"], rtol=1e-5,
                               atol=1e-6)
    assert results_two["test_loss"] == pytest.approx(results_one["test_loss"], rel=2e-5)
    assert state_two["optim"]["lookahead"]["steps"] == state_one["optim"]["lookahead"]["steps"] == 12
