"""What a ``minidl train`` run left in its --out, read back for comparisons between runs."""
from __future__ import annotations

import csv
import json

import numpy as np

from minidl.checkpoint import load_checkpoint

TIMING = ("seconds", "images_per_s")
METRICS = ("lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5")


def final(out):
    """(final checkpoint state, results.json, history rows without timing columns) of a run."""
    results = json.loads((out / "results.json").read_text())
    with open(out / "history.csv") as f:
        history = [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]
    return load_checkpoint(out / "checkpoint.npz"), results, history


def history(out) -> np.ndarray:
    """The history's metric columns as floats, a row per epoch (nan where there was no validation)."""
    with open(out / "history.csv") as f:
        return np.array([[float(row[k]) for k in METRICS] for row in csv.DictReader(f)])


def _assert_same_arrays(a, b, where):
    """Nested dicts/lists of arrays and plain values, equal bit for bit."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same_arrays(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_arrays(x, y, f"{where}/{i}")
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    else:
        assert a == b, where


def assert_identical(a, b):
    """Two runs' ``final`` results are the same run: weights, optimizer state, generators, results, history."""
    (state_a, results_a, history_a), (state_b, results_b, history_b) = a, b
    assert list(state_a["model"]) == list(state_b["model"])
    for key in state_a["model"]:
        assert np.array_equal(state_a["model"][key], state_b["model"][key]), key  # bit-identical weights
    _assert_same_arrays(state_a["optim"], state_b["optim"], "optim")  # momentum or Adam moments, groups
    assert state_a["rngs"] == state_b["rngs"] and state_a["schedule"] == state_b["schedule"]
    for key in ("test_loss", "test_acc", "test_top5", "best_val_acc", "best_epoch", "settings"):
        assert results_a[key] == results_b[key], key
    assert history_a == history_b
