"""The trainer: metrics against references, overfitting, exact in-process resume, files."""
import csv
import json
import sys

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.checkpoint import load_checkpoint
from minidl.data import DataLoader, build_transform
from minidl.optim import SGD, OneCycleLR, ReduceLROnPlateau
from minidl.plots import filter_grid
from minidl.callbacks import Callback, FilterPlot
from minidl.train import HISTORY_FIELDS, NonFiniteLossError, Trainer, count_correct, evaluate, fit

CLASSES = 4


def _data(n, seed=0, size=8):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8), rng.integers(0, CLASSES, size=n)


def _loader(images, labels, batch, shuffle=True, augment=False, **kw):
    return DataLoader(images, labels, batch, shuffle=shuffle, seed=3, transform=build_transform(8, augment=augment),
                      **kw)


def _model(seed=0, dropout=0.0):
    rng = np.random.default_rng(seed)
    layers = [nn.Conv2d(3, 6, 3, padding=1, rng=rng), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
              nn.Linear(6 * 4 * 4, 16, rng=rng), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout, rng=np.random.default_rng(seed + 100)))
    return nn.Sequential(*layers, nn.Linear(16, CLASSES, rng=rng))


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_count_correct_matches_argsort_reference():
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(50, 10)), rng.integers(0, 10, size=50)
    order = np.argsort(-logits, axis=1)
    for k in (1, 3, 5):
        expected = sum(labels[i] in order[i, :k] for i in range(50))
        assert count_correct(logits, labels, k) == expected


def test_evaluate_matches_reference_and_restores_mode():
    images, labels = _data(10)
    model = _model(dropout=0.5)
    loader = _loader(images, labels, 4, shuffle=False)  # 4 + 4 + 2: the mean must weight by batch size
    model.train()
    metrics = evaluate(model, loader)
    assert model.training  # mode restored
    model.eval()
    with minidl.no_grad():
        x = minidl.tensor(build_transform(8)(images))
        logits = model(x).numpy().astype(np.float64)
    loss = -_log_softmax(logits)[np.arange(10), labels].mean()
    top = np.argsort(-logits, axis=1)
    assert metrics["loss"] == pytest.approx(loss, rel=1e-5)
    assert metrics["acc"] == pytest.approx(np.mean(top[:, 0] == labels))
    assert metrics["top5"] == pytest.approx(np.mean([labels[i] in top[i, :5] for i in range(10)]))
    assert metrics["top5"] == 1.0  # only 4 classes


def test_trainer_overfits_a_tiny_batch():
    images, labels = _data(16, seed=2)
    model = _model(seed=1)
    train = _loader(images, labels, 16)
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = fit(model, optimizer, train, _loader(images, labels, 16, shuffle=False), epochs=40, progress=False,
                  log=lambda message: None)
    history = trainer.state["history"]
    assert len(history) == 40 and history[-1]["train_loss"] < history[0]["train_loss"]
    assert evaluate(model, train)["acc"] == 1.0


class _Killed(Exception):
    pass


class _DyingLoader(DataLoader):
    """Raises after serving ``limit`` batches in total, like a process killed mid-run."""

    def __init__(self, *args, limit, **kw):
        super().__init__(*args, **kw)
        self.limit = limit

    def epoch_batches(self, epoch, start_batch=0):
        for batch in super().epoch_batches(epoch, start_batch):
            if self.limit == 0:
                raise _Killed()
            self.limit -= 1
            yield batch


def _run(out_dir, limit=None, resume=False, schedule="onecycle", plots=False):
    """A 3-epoch run with dropout, augmentation, momentum and a schedule; returns the trainer."""
    train_images, train_labels = _data(20, seed=4)
    val_images, val_labels = _data(6, seed=5)
    model = _model(seed=7, dropout=0.3)
    kw = dict(shuffle=True, seed=3, transform=build_transform(8, augment=True))
    train = (DataLoader(train_images, train_labels, 4, **kw) if limit is None else
             _DyingLoader(train_images, train_labels, 4, limit=limit, **kw))
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True)
    sched = (OneCycleLR(optimizer, max_lr=0.05, total_steps=15) if schedule == "onecycle" else
             ReduceLROnPlateau(optimizer, patience=0, factor=0.5))
    trainer = Trainer(model, optimizer, train, _loader(val_images, val_labels, 4, shuffle=False), epochs=3,
                      schedule=sched, out_dir=out_dir, settings={"tag": "t"}, checkpoint_every=3, progress=False,
                      plots=plots, log=lambda message: None, callbacks=[FilterPlot()] if plots else [])
    if resume:
        trainer.resume()
    try:
        trainer.fit()
    except _Killed:
        return None
    trainer.test(_loader(val_images, val_labels, 4, shuffle=False))
    return trainer


@pytest.mark.parametrize("schedule, killed_after", [("onecycle", 4), ("onecycle", 10), ("plateau", 7)])
def test_resume_after_a_crash_is_bit_identical(tmp_path, schedule, killed_after):
    reference = _run(tmp_path / "a", schedule=schedule)
    assert _run(tmp_path / "b", limit=killed_after, schedule=schedule) is None
    partial = load_checkpoint(tmp_path / "b" / "checkpoint.npz")["trainer"]
    assert partial["global_step"] < 15  # it really stopped early
    resumed = _run(tmp_path / "b", resume=True, schedule=schedule)
    a, b = reference.state_dict(), resumed.state_dict()
    for key in a["model"]:
        assert np.array_equal(a["model"][key], b["model"][key]), key
    assert a["optim"]["state"].keys() == b["optim"]["state"].keys()
    for i in a["optim"]["state"]:
        assert np.array_equal(a["optim"]["state"][i]["momentum_buffer"], b["optim"]["state"][i]["momentum_buffer"])
    assert a["rngs"] == b["rngs"] and a["schedule"] == b["schedule"]
    assert a["optim"]["param_groups"] == b["optim"]["param_groups"]
    timing = ("seconds", "images_per_s")
    strip = [[{k: v for k, v in row.items() if k not in timing} for row in t.state["history"]]
             for t in (reference, resumed)]
    assert strip[0] == strip[1]
    results = [json.loads((tmp_path / d / "results.json").read_text()) for d in "ab"]
    for key in ("test_loss", "test_acc", "test_top5", "best_val_acc", "best_epoch"):
        assert results[0][key] == results[1][key], key


def test_run_files(tmp_path):
    trainer = _run(tmp_path, plots=True)
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == HISTORY_FIELDS and [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for row, kept in zip(rows, trainer.state["history"]):
        assert float(row["val_acc"]) == kept["val_acc"] and float(row["train_loss"]) == kept["train_loss"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"] == {"tag": "t"} and results["epochs"] == 3
    best = load_checkpoint(tmp_path / "best.npz")["trainer"]
    assert best["epoch"] == results["best_epoch"]
    assert max(r["val_acc"] for r in trainer.state["history"]) == results["best_val_acc"]
    # killed after the last checkpoint but before the reports: resuming rewrites them
    (tmp_path / "history.csv").unlink()
    _run(tmp_path, resume=True)
    with open(tmp_path / "history.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    pytest.importorskip("matplotlib")
    for name in ("curves.png", "filters.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path):
    images, labels = _data(8)
    model = _model()
    optimizer = SGD(model.parameters(), lr=0.01)
    trainer = Trainer(model, optimizer, _loader(images, labels, 4), _loader(images, labels, 4, shuffle=False),
                      epochs=1, out_dir=tmp_path, progress=False, plots=False, log=lambda message: None)
    trainer.fit()
    saved = (tmp_path / "checkpoint.npz").read_bytes()
    trainer.epochs = 2
    model[0].weight.data[0, 0, 0, 0] = np.nan  # what a diverging step leaves behind
    with pytest.raises(NonFiniteLossError, match="nan.*checkpoint.npz is kept"):
        trainer.fit()
    assert (tmp_path / "checkpoint.npz").read_bytes() == saved


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    images, labels = _data(8)
    model = _model()
    trainer = Trainer(model, SGD(model.parameters(), lr=0.01), _loader(images, labels, 4), None, epochs=1,
                      out_dir=tmp_path, progress=False, plots=False)
    model[-1].bias.data[0] = np.inf
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        trainer.save()
    assert not (tmp_path / "checkpoint.npz").exists()


def test_progress_without_tqdm_prints_lines(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    images, labels = _data(20)
    model = _model()
    trainer = Trainer(model, SGD(model.parameters(), lr=0.01), _loader(images, labels, 2),
                      _loader(images, labels, 10, shuffle=False), epochs=1, progress=True)
    trainer.fit()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch 1/1 [")]
    assert len(lines) == 10 and all("img/s" in line and "ETA" in line for line in lines)


def test_filter_grid_layout():
    weight = np.random.default_rng(0).normal(size=(5, 3, 2, 3))
    grid = filter_grid(weight, columns=2, gap=1)
    assert grid.shape == (3 * 3 - 1, 2 * 4 - 1, 3)
    tile = grid[3:5, 4:7]  # filter 3: row 1, column 1
    w = weight[3].transpose(1, 2, 0)
    np.testing.assert_allclose(tile, (w - w.min()) / (w.max() - w.min()))
    assert np.all(grid[2, :] == 1.0) and np.all(grid[6:, 4:] == 1.0)  # gaps and the empty slot are white


class _SkippingLoader:
    """One planned batch of 4 images of which the loader could read only 3 (a file was skipped)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return 1

    def batch_rows(self, batch_index):
        return 0, 4, 4

    def epoch_batches(self, epoch, start_batch=0):
        yield (minidl.tensor(self.x), self.y)


def test_a_batch_with_skipped_files_steps_on_the_mean_loss_of_the_images_served():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 5)), np.array([0, 2, 1])
    model = nn.Linear(5, 3, rng=np.random.default_rng(1)).to(dtype=np.float64)
    reference = nn.Linear(5, 3, rng=np.random.default_rng(1)).to(dtype=np.float64)
    minidl.functional.softmax_cross_entropy(reference(minidl.tensor(x)), y).backward()
    trainer = Trainer(model, SGD(model.parameters(), lr=1.0), _SkippingLoader(x, y), None, epochs=1,
                      progress=False, plots=False, log=lambda *a: None)
    trainer.fit()
    np.testing.assert_allclose(model.weight.numpy(), reference.weight.numpy() - reference.weight.grad.numpy(),
                               rtol=1e-12)
    assert trainer.state["history"][0]["images_per_s"] > 0 and trainer.state["history"][0]["train_acc"] * 3 % 1 == 0


# ---- any loss, callbacks ------------------------------------------------------------

class _Rows:
    """Whole batches of (x, y) float arrays, in order: a loader for any model and loss."""

    def __init__(self, x, y, batch):
        self.x, self.y, self.batch = x, y, batch

    def __len__(self):
        return -(-len(self.x) // self.batch)

    def epoch_batches(self, epoch, start_batch=0):
        for i in range(start_batch, len(self)):
            rows = slice(i * self.batch, (i + 1) * self.batch)
            yield minidl.tensor(self.x[rows]), self.y[rows]


def _mse(outputs, targets):
    diff = outputs - minidl.tensor(targets)
    return (diff * diff).mean()


def test_a_regression_trains_with_its_own_loss_and_no_accuracy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3))
    y = x @ np.array([[1.0], [-2.0], [0.5]]) + 0.25
    model = nn.Linear(3, 1, rng=np.random.default_rng(1)).to(dtype=np.float64)
    reference = nn.Linear(3, 1, rng=np.random.default_rng(1)).to(dtype=np.float64)
    trainer = fit(model, SGD(model.parameters(), lr=0.1), _Rows(x, y, 8), _Rows(x, y, 16), epochs=30,
                  loss_fn=_mse, progress=False, log=lambda message: None)
    history = trainer.state["history"]
    assert history[-1]["val_loss"] < 1e-3 < history[0]["train_loss"]
    assert np.isnan(history[-1]["train_acc"]) and np.isnan(history[-1]["val_acc"])
    # the first step is exactly one SGD step on the first batch's mean loss
    one = Trainer(reference, SGD(reference.parameters(), lr=0.1), _Rows(x[:8], y[:8], 8), None, epochs=1,
                  loss_fn=_mse, progress=False, log=lambda message: None)
    before = reference.weight.numpy().copy()
    _mse(reference(minidl.tensor(x[:8])), y[:8]).backward()
    expected = before - 0.1 * reference.weight.grad.numpy()
    reference.zero_grad()
    one.fit()
    np.testing.assert_allclose(reference.weight.numpy(), expected, rtol=1e-12)


def test_the_default_loss_is_softmax_cross_entropy():
    images, labels = _data(8, seed=3)
    runs = []
    for loss_fn in (None, minidl.functional.softmax_cross_entropy):
        model = _model(seed=2)
        fit(model, SGD(model.parameters(), lr=0.05), _loader(images, labels, 4), None, epochs=1, loss_fn=loss_fn,
            progress=False, log=lambda message: None)
        runs.append(model.state_dict())
    for key in runs[0]:
        assert np.array_equal(runs[0][key], runs[1][key]), key


class _Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, trainer):
        self.calls.append("fit_start")

    def on_epoch_start(self, trainer):
        self.calls.append(f"epoch_start {trainer.state['epoch']}")

    def on_step_end(self, trainer):
        self.calls.append(f"step {trainer.state['global_step']}")

    def on_steps_end(self, trainer):
        self.calls.append("steps_end")

    def on_epoch_end(self, trainer, row):
        assert row is trainer.state["history"][-1] and trainer.state["epoch"] == row["epoch"]
        self.calls.append(f"epoch_end {row['epoch']}")

    def on_fit_end(self, trainer):
        self.calls.append("fit_end")


def test_callbacks_are_called_in_order_after_the_standard_ones(tmp_path):
    images, labels = _data(8)
    model = _model()
    recorder = _Recorder()
    trainer = Trainer(model, SGD(model.parameters(), lr=0.01), _loader(images, labels, 4), None, epochs=2,
                      out_dir=tmp_path, plots=False, progress=False, log=lambda message: None,
                      callbacks=[recorder])
    assert [type(c).__name__ for c in trainer.callbacks] == ["ProgressLog", "Checkpoints", "History", "_Recorder"]
    trainer.fit()
    assert recorder.calls == ["fit_start", "epoch_start 0", "step 1", "step 2", "steps_end", "epoch_end 1",
                              "epoch_start 1", "step 3", "step 4", "steps_end", "epoch_end 2", "fit_end"]
    assert (tmp_path / "history.csv").exists() and not (tmp_path / "curves.png").exists()


def test_steps_end_closes_what_epoch_start_opened_when_a_step_fails(tmp_path):
    images, labels = _data(8)
    model = _model()
    recorder = _Recorder()

    def failing_loss(outputs, targets):
        raise RuntimeError("bad loss")

    trainer = Trainer(model, SGD(model.parameters(), lr=0.01), _loader(images, labels, 4), None, epochs=1,
                      loss_fn=failing_loss, progress=False, log=lambda message: None, callbacks=[recorder])
    with pytest.raises(RuntimeError, match="bad loss"):
        trainer.fit()
    assert recorder.calls == ["fit_start", "epoch_start 0", "steps_end"]


def test_a_state_that_is_not_a_trainers_is_a_clear_error():
    model = _model()
    trainer = Trainer(model, SGD(model.parameters(), lr=0.01), None, None, epochs=1)
    with pytest.raises(ValueError, match="not the state of a training run.*optim, rngs, trainer"):
        trainer.load_state_dict({"model": model.state_dict()})
