"""``minidl train`` on a folder of images (--dataset folder): a real run, kill-and-resume, errors.

A tiny folder with the cifar variant; the run must behave like a CIFAR run (files,
resume, one-line errors) and carry the class names into its checkpoint and
results.json (``minidl predict`` prints them).
"""
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from support.commands import ROOT, minidl_command  # noqa: E402
from support.mpi import MPIEXEC, needs_mpi  # noqa: E402
from support.folder_fixture import photo, write_image_folder  # noqa: E402
from minidl.checkpoint import load_checkpoint  # noqa: E402

COMMAND = minidl_command("train")
CLASSES = ["bee", "cow", "owl"]
from minidl.cli import predict, train as cli  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """12 JPEGs per class (48x36), a text file and one broken JPEG."""
    root = tmp_path_factory.mktemp("photos")
    write_image_folder(root, {name: 12 for name in CLASSES}, size=(48, 36), ext="jpg")
    (root / "cow" / "readme.txt").write_text("not an image")
    (root / "owl" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def _args(data_dir, out, *extra):
    """3 epochs of 4 steps (24 train images, batch 6), a checkpoint every 2 steps."""
    return ["--dataset", "folder", "--data-dir", str(data_dir), "--variant", "cifar", "--widths", "8,8,8,8,8,16,16",
            "--out", str(out), "--epochs", "3", "--batch-size", "6", "--val-fraction", "0.2", "--test-fraction",
            "0.15", "--device", "cpu", "--checkpoint-every", "2", "--workers", "2", "--no-progress", "--no-plots",
            *extra]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "MINIDL_TEST_WRITE_DELAY"}
    return dict(env, PYTHONPATH=str(ROOT), **extra)


def _cli(args):
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, env=_env(), cwd=ROOT,
                          timeout=120)


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    done = _cli(_args(photos, out))
    assert done.returncode == 0, done.stderr
    return out, done


def test_folder_run_trains_and_records_the_class_names(reference):
    out, done = reference
    assert "3 classes (bee, cow, owl)" in done.stdout and "test: loss" in done.stdout
    assert "Traceback" not in done.stderr
    assert done.stderr.count("skipping unreadable image") == 1 and "broken.jpg" in done.stderr  # once per run
    assert "skipped 1 file(s)" in done.stderr and "readme.txt" in done.stderr  # the non-image, counted once
    results = json.loads((out / "results.json").read_text())
    settings = results["settings"]
    assert settings["class_names"] == CLASSES and settings["dataset"] == "folder"
    assert len(settings["mean"]) == 3 and all(0 < s < 1 for s in settings["std"])
    assert 0.0 <= results["test_acc"] <= 1.0 and results["epochs"] == 3
    state = load_checkpoint(out / "checkpoint.npz")
    assert state["settings"]["class_names"] == CLASSES
    assert state["model"]["fc8.weight"].shape[0] == 3
    # per class int(n * f + 0.5) held out: bee, cow 12 -> 2 val + 2 test, owl 13 -> 3 + 2: 24 train, 4 steps of 6
    assert state["trainer"]["global_step"] == 12


def test_killed_folder_run_resumes_bit_identically(photos, reference, tmp_path):
    out = tmp_path / "run"
    args = _args(photos, out)
    proc = subprocess.Popen([*COMMAND, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=_env(MINIDL_TEST_WRITE_DELAY="0.15"), cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not (out / "checkpoint.npz").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        time.sleep(random.uniform(0.0, 0.5))
        assert proc.poll() is None, "the run finished before the kill"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert load_checkpoint(out / "checkpoint.npz")["trainer"]["global_step"] < 12
    resumed = _cli(args + ["--resume", "--workers", "1"])  # the thread count is a run-time choice
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(reference[0] / "checkpoint.npz"), load_checkpoint(out / "checkpoint.npz")
    for key in a["model"]:
        assert np.array_equal(a["model"][key], b["model"][key]), key
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (reference[0], out))
    for key in ("test_loss", "test_acc", "best_val_acc", "settings"):
        assert ra[key] == rb[key], key


def test_predict_classifies_with_the_folder_runs_crop_normalisation_and_names(photos, reference, capsys):
    import minidl
    import minidl.functional as F
    from minidl.data import ImageFolder, ImageFolderLoader, ResizeCenterCrop

    weights = reference[0] / "best.npz"
    path = photos / "cow" / "003.jpg"
    assert predict.main([str(path), "--weights", str(weights), "--top", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}:" and len(out) == 4 and all(line.split()[1] in CLASSES for line in out[1:])
    # the same probabilities as the run's own evaluation of that image
    model, names, settings = predict.load_model(weights)
    assert names == CLASSES
    single = ImageFolder(photos).subset([ImageFolder(photos).paths.index(str(path))])
    x, _ = ImageFolderLoader(single, 1, ResizeCenterCrop(32), shuffle=False, mean=settings["mean"],
                             std=settings["std"], workers=0).make_batch(0, 0)
    with minidl.no_grad():
        expected = F.softmax(model(x), axis=-1).numpy()
    got = predict.class_probabilities(model, predict.evaluation_transform(settings),
                                      predict.read_image(path, settings)[None])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@needs_mpi
def test_two_processes_train_on_a_folder_like_one(tmp_path):
    root = tmp_path / "clean"  # no broken file: a skipped image would leave the two shards uneven
    write_image_folder(root, {name: 8 for name in CLASSES}, size=(40, 30), ext="jpg")
    def args(out):
        return _args(root, tmp_path / out, "--val-fraction", "0.25", "--test-fraction", "0", "--workers", "1")

    one = _cli(args("one"))
    assert one.returncode == 0, one.stderr
    two = subprocess.run([MPIEXEC, "-n", "2", *COMMAND, *args("two")], capture_output=True,
                         text=True, env=_env(), cwd=ROOT, timeout=120)
    assert two.returncode == 0, two.stderr
    assert "data parallel: 2 processes" in two.stdout and two.stdout.count("test: loss") == 1

    def history(out):
        with open(out / "history.csv") as f:
            return np.array([[float(row[k]) for k in ("lr", "train_loss", "train_acc", "val_loss", "val_acc")]
                             for row in csv.DictReader(f)])

    np.testing.assert_allclose(history(tmp_path / "two"), history(tmp_path / "one"), rtol=1e-5, atol=1e-6)


def _main(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, [line for line in err.strip().splitlines() if line.startswith("minidl train: error: ")]


def test_folder_errors_are_one_line(photos, reference, tmp_path, capsys, monkeypatch):
    code, lines = _main(["--dataset", "folder", "--out", str(tmp_path / "a")], capsys)
    assert code == 1 and "needs --data-dir" in lines[0]
    code, _ = _main(["--dataset", "folder", "--val-fraction", "1.0"], capsys)
    assert code == 2  # argparse: must be < 1
    code, lines = _main(["--val-fraction", "0.2", "--out", str(tmp_path / "b")], capsys)
    assert code == 1 and "--dataset folder only" in lines[0]
    code, lines = _main(_args(photos, tmp_path / "c", "--mean", "0.5,0.5,0.5"), capsys)
    assert code == 1 and "--mean and --std go together" in lines[0]
    for normalize in ("image", "channel"):  # the statistics pass stops too
        code, lines = _main(_args(photos, tmp_path / normalize, "--on-bad-image", "raise", "--normalize", normalize),
                            capsys)
        assert code == 1 and len(lines) == 1 and "unreadable image" in lines[0] and "broken.jpg" in lines[0]
    code, lines = _main(_args(tmp_path / "nothing", tmp_path / "e"), capsys)
    assert code == 1 and "is not a folder" in lines[0]
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    code, lines = _main(_args(photos, tmp_path / "f"), capsys)
    assert code == 1 and "[images]" in lines[0]


def test_resume_refuses_a_changed_folder(photos, reference, tmp_path, capsys):
    changed = tmp_path / "photos"
    write_image_folder(changed, {name: 12 for name in CLASSES}, size=(48, 36), ext="jpg")
    (changed / "owl" / "broken.jpg").write_bytes((photos / "owl" / "broken.jpg").read_bytes())
    Image.fromarray(photo(48, 36, 5)).save(changed / "bee" / "extra.jpg")
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.npz").write_bytes((reference[0] / "checkpoint.npz").read_bytes())
    code, lines = _main(["--out", str(out), "--data-dir", str(changed), "--resume", "--no-progress"], capsys)
    assert code == 1 and "not the ones the run started with" in lines[0]
