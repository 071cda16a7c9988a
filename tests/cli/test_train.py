"""``minidl train``: a real run, kill-and-resume, errors.

Runs that must be real processes (end to end, SIGKILL) go through subprocess
(``python -m minidl train``); argument and setup errors call ``main`` in-process,
which is what the command runs.
"""
import os
import random
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from support.commands import ROOT, minidl_command
from support.cifar_fixture import closed_port, write_cifar10
from support.runs import assert_identical, final
from minidl.backend import is_cuda_available
from minidl.checkpoint import load_checkpoint, save_checkpoint

COMMAND = minidl_command("train")

from minidl.cli import train as cli  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_per_batch=16, n_test=12)  # 80 train images: 16 validation + 64 train
    return root


def _args(data_dir, out, *extra):
    """A tiny cifar run: 3 epochs of 8 steps, a checkpoint every 3 steps."""
    return ["--variant", "cifar", "--widths", "8,8,8,8,8,16,16", "--data-dir", str(data_dir), "--out", str(out),
            "--epochs", "3", "--batch-size", "8", "--val-size", "16", "--device", "cpu", "--checkpoint-every", "3",
            "--no-progress", *extra]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "MINIDL_TEST_WRITE_DELAY"}
    return dict(env, PYTHONPATH=str(ROOT), **extra)


def _cli(args, **env):
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, env=_env(**env),
                          cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted run (with plots), shared by the tests below."""
    out = tmp_path_factory.mktemp("reference") / "run"
    done = _cli(_args(data_dir, out))
    assert done.returncode == 0, done.stderr
    return out, done


def test_end_to_end_run_writes_every_file(reference):
    out, done = reference
    assert "on cpu" in done.stdout and "test: loss" in done.stdout
    assert "Traceback" not in done.stderr
    for name in ("history.csv", "checkpoint.npz", "best.npz", "results.json"):
        assert (out / name).is_file(), name
    state, results, history = final(out)
    assert [row["epoch"] for row in history] == ["1", "2", "3"]
    assert 0.0 <= results["test_acc"] <= results["test_top5"] <= 1.0 and np.isfinite(results["test_loss"])
    assert results["settings"]["batch_size"] == 8 and results["settings"]["schedule"] == "onecycle"
    assert state["trainer"]["epoch"] == 3 and state["trainer"]["global_step"] == 24
    assert not list(out.glob(".*.tmp"))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    for name in ("curves.png", "filters.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name


def _start(args, delay):
    return subprocess.Popen([*COMMAND, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=_env(MINIDL_TEST_WRITE_DELAY=str(delay)), cwd=ROOT)


def _wait_for(path, proc, timeout=60.0):
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {path.name} appeared"
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.005)


@pytest.mark.parametrize("moment", ["random", "while_writing_checkpoint"])
def test_sigkill_then_resume_is_bit_identical(data_dir, tmp_path, reference, moment):
    out = tmp_path / "run"
    args = _args(data_dir, out, "--no-plots")
    # Every file write pauses (test hook), which makes the run slow enough to be
    # killed mid-way and keeps the checkpoint's temporary file around long enough
    # to be killed while writing it.
    proc = _start(args, delay=0.15 if moment == "random" else 0.3)
    try:
        _wait_for(out / "checkpoint.npz", proc)
        if moment == "random":
            pause = random.uniform(0.0, 0.8)
            time.sleep(pause)
        else:
            pause = "in write"
            _wait_for(out / ".checkpoint.npz.tmp", proc)
        assert proc.poll() is None, f"the run finished before the kill ({pause})"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if moment != "random":
        assert (out / ".checkpoint.npz.tmp").exists()  # really killed mid-write
    assert load_checkpoint(out / "checkpoint.npz")["trainer"]["global_step"] < 24, pause
    resumed = _cli(args + ["--resume"])
    assert resumed.returncode == 0, (pause, resumed.stderr)
    assert "resuming at epoch" in resumed.stdout
    assert_identical(final(reference[0]), final(out))


def test_resume_with_more_epochs_trains_longer(reference, data_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    done = _cli(["--out", str(out), "--data-dir", str(data_dir), "--resume", "--epochs", "4",
                 "--no-progress", "--no-plots"])
    assert done.returncode == 0, done.stderr
    state, results, history = final(out)
    assert len(history) == 4 and results["epochs"] == 4 and results["settings"]["epochs"] == 4
    assert state["trainer"]["global_step"] == 32
    before = load_checkpoint(reference[0] / "checkpoint.npz")["model"]
    assert not np.array_equal(before["fc8.weight"], state["model"]["fc8.weight"])


def test_non_finite_loss_exits_3_and_keeps_the_checkpoint(reference, data_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    # A finished 3-epoch run whose stored lr is absurd: continuing it for one more
    # epoch (the schedule is rebuilt from the stored lr) must diverge at once.
    state = load_checkpoint(reference[0] / "checkpoint.npz")
    state["settings"]["lr"] = 1e30
    save_checkpoint(out / "checkpoint.npz", state)
    saved = (out / "checkpoint.npz").read_bytes()
    done = _cli(["--out", str(out), "--data-dir", str(data_dir), "--resume", "--epochs", "4", "--no-progress",
                 "--no-plots"])
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and ("became nan" in lines[0] or "became inf" in lines[0]), done.stderr
    assert "checkpoint.npz is kept" in lines[0]
    assert (out / "checkpoint.npz").read_bytes() == saved


def _main(argv, capsys):
    """Run the CLI in-process; returns (exit code, stderr)."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minidl train: error: "), err
    return lines[0]


@pytest.mark.parametrize("flag, value, expected", [("--epochs", "-1", ">= 1"), ("--batch-size", "0", ">= 1"), ("--epochs", "x", "expected an int"),
                                                   ("--lr", "abc", "expected a number"), ("--variant", "vgg", "invalid choice"),
                                                   ("--lr", "nan", "finite"), ("--lr", "inf", "finite"),
                                                   ("--momentum", "nan", "finite"),
                                                   ("--label-smoothing", "inf", "finite")])
def test_bad_arguments_exit_2(capsys, tmp_path, flag, value, expected):
    code, err = _main([flag, value, "--out", str(tmp_path)], capsys)
    assert code == 2 and expected in err.strip().splitlines()[-1]


@pytest.mark.parametrize("device, expected", [
    ("tpu", "unknown device"),
    pytest.param("cuda", "CUDA", marks=pytest.mark.skipif(is_cuda_available(), reason="a GPU is present"))])
def test_unusable_device(capsys, tmp_path, device, expected):
    code, err = _main(["--device", device, "--out", str(tmp_path)], capsys)
    assert code == 1 and expected in _one_line(err)


def test_no_data_and_no_network(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDL_CIFAR10_URL", f"http://127.0.0.1:{closed_port()}/cifar-10-python.tar.gz")
    code, err = _main(["--variant", "cifar", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "o"),
                       "--device", "cpu", "--no-progress"], capsys)
    assert code == 1 and "could not download" in _one_line(err)


def test_resume_errors(capsys, reference, data_dir, tmp_path):
    code, err = _main(["--out", str(tmp_path / "nothing"), "--resume"], capsys)
    assert code == 1 and "no checkpoint" in _one_line(err)

    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    code, err = _main(_args(data_dir, out), capsys)  # a fresh start would overwrite a run
    assert code == 1 and "--resume" in _one_line(err)

    code, err = _main(["--out", str(out), "--resume", "--lr", "0.5", "--batch-size", "8"], capsys)
    line = _one_line(err)
    assert code == 1 and "--lr 0.5" in line and "--batch-size" not in line  # 8 is the run's own value

    path = out / "checkpoint.npz"
    (tmp_path / "weights_only").mkdir()
    save_checkpoint(tmp_path / "weights_only" / "checkpoint.npz", {"model": load_checkpoint(path)["model"]})
    code, err = _main(["--out", str(tmp_path / "weights_only"), "--resume"], capsys)
    assert code == 1 and "is not the checkpoint of a training run (it has no optim, rngs, trainer, settings)" in \
        _one_line(err)

    damaged = path.read_bytes()[:1000]
    path.write_bytes(damaged)
    code, err = _main(["--out", str(out), "--resume"], capsys)
    assert code == 1 and str(path) in _one_line(err) and "corrupt" in err
    assert path.read_bytes() == damaged


def test_an_out_that_cannot_be_created_is_one_line_before_the_data_loads(capsys, tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    out = tmp_path / "a_file" / "run"
    # no --data-dir: the error must come before the download would be tried
    code, err = _main(["--out", str(out), "--variant", "cifar", "--device", "cpu"], capsys)
    assert code == 1 and f"--out: cannot create the directory {out}" in _one_line(err)


def test_help_texts_come_from_the_codes_constants():
    from minidl.models.alexnet import CIFAR_WIDTHS
    text = " ".join(cli.build_parser().format_help().split())  # argparse wraps lines
    assert f"(default {','.join(map(str, CIFAR_WIDTHS))})" in text
    assert f"(default {cli.DEFAULT_VAL_SIZE};" in text and f"default {cli.DEFAULT_CHECKPOINT_EVERY})" in text
    from minidl.models.alexnet import INPUT_SIZE
    for variant, recipe in cli.RECIPES.items():
        assert f"{variant:5s} ({INPUT_SIZE[variant]}x" in cli.build_parser().epilog
        assert f"lr {recipe['lr']} ({recipe['schedule']})" in cli.build_parser().epilog
    from minidl.cli.recipes import CIFAR_RESNET
    assert f"resnet20 .. resnet110: {CIFAR_RESNET['epochs']} epochs" in cli.build_parser().epilog



def test_paper_recipe_starts_from_he_init_and_init_is_for_the_paper_variant_only(capsys, tmp_path):
    parse = cli.build_parser().parse_args
    assert cli.resolve_settings(parse(["--variant", "paper"]), None)["init"] == "he"
    assert cli.resolve_settings(parse(["--variant", "paper", "--init", "paper"]), None)["init"] == "paper"
    assert cli.resolve_settings(parse(["--variant", "cifar"]), None)["init"] is None
    code, err = _main(["--variant", "cifar", "--init", "he", "--out", str(tmp_path)], capsys)
    assert code == 1 and "--init applies to --variant paper only, not cifar" in _one_line(err)
