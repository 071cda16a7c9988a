"""Checkpoints: exact round trips, no pickle, clear errors on bad files, atomic writes."""
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidl.checkpoint as ckpt
from minidl.checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint


def _state():
    rng = np.random.default_rng(7)
    rng.random(5)  # move the generator away from its seed state
    return {
        "model": {"conv1.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
                  "bn1.running_var": np.ones(4, np.float32), "fc.bias": np.arange(3, dtype=np.float64)},
        "optim": {"lr": 0.1, "nesterov": True, "momentum_buffers": [None, np.full((2, 2), -0.5, np.float32), None]},
        "schedule": {"step": 17, "best": float("-inf"), "scalar": np.float32(0.3)},
        "rngs": {"drop6": rng.bit_generator.state, "mt": np.random.MT19937(3).state},
        "trainer": {"epoch": 2, "step": 5, "by_index": {0: "a", 3: (1, 2.5)}, "history": [{"loss": 1 / 3}]},
        "settings": None,
    }


def _assert_same(a, b, where="state"):
    """Exact equality, including dtypes of arrays and NumPy scalars and tuple-ness."""
    assert type(a) is type(b) or (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)), \
        f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, np.ndarray) or isinstance(a, np.generic):
        assert a.dtype == b.dtype and np.shape(a) == np.shape(b), where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}/{i}")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, where


def test_round_trip_is_exact(tmp_path):
    state = _state()
    path = tmp_path / "c.npz"
    save_checkpoint(path, state)
    _assert_same(state, load_checkpoint(path))
    # a restored generator continues exactly where the saved one was
    restored = load_checkpoint(path)["rngs"]["drop6"]
    g1, g2 = np.random.default_rng(), np.random.default_rng()
    g1.bit_generator.state, g2.bit_generator.state = state["rngs"]["drop6"], restored
    assert np.array_equal(g1.random(10), g2.random(10))


def test_every_entry_loads_without_pickle(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, _state())
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k] for k in npz.files}
    assert "model/conv1.weight" in entries and "optim/momentum_buffers/1" in entries
    assert not any(a.dtype.hasobject for a in entries.values())
    meta = entries[ckpt.META_KEY]
    assert meta.dtype.kind == "U" and meta.ndim == 0
    parsed = json.loads(str(meta))
    assert parsed["version"] == ckpt.FORMAT_VERSION
    assert parsed["state"]["optim"]["momentum_buffers"][0] is None  # None buffers are explicit


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=5),
                    st.floats(allow_nan=False, width=64))
arrays = st.builds(lambda shape, dtype, seed: np.random.default_rng(seed).normal(size=shape).astype(dtype),
                   st.lists(st.integers(0, 3), max_size=3).map(tuple), st.sampled_from([np.float32, np.float64,
                                                                                         np.int64]),
                   st.integers(0, 100))
nested = st.recursive(st.one_of(scalars, arrays), lambda children: st.one_of(
    st.lists(children, max_size=3), st.lists(children, max_size=3).map(tuple),
    st.dictionaries(st.one_of(st.text("abc.", min_size=1, max_size=3), st.integers(0, 5)), children, max_size=3)),
    max_leaves=8)


@settings(max_examples=40, deadline=None)
@given(value=nested)
def test_round_trip_property(tmp_path_factory, value):
    path = tmp_path_factory.mktemp("prop") / "c.npz"
    save_checkpoint(path, {"x": value})
    _assert_same({"x": value}, load_checkpoint(path))


def test_object_arrays_are_refused(tmp_path):
    with pytest.raises(ValueError, match="pickle"):
        save_checkpoint(tmp_path / "c.npz", {"x": np.array([{"a": 1}], dtype=object)})
    assert not (tmp_path / "c.npz").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty", "pickle"])
def test_damaged_file_gives_clear_error_and_is_untouched(tmp_path, damage):
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, _state())
    data = path.read_bytes()
    if damage == "truncate":
        bad = data[: len(data) * 2 // 3]
    elif damage == "flip":  # one flipped byte inside the array data: the zip CRC catches it
        bad = bytearray(data)
        bad[len(bad) // 3] ^= 0xFF
        bad = bytes(bad)
    elif damage == "garbage":
        bad = b"not a checkpoint at all" * 10
    elif damage == "empty":
        bad = b""
    else:
        import pickle
        bad = pickle.dumps({"model": 1})
    path.write_bytes(bad)
    with pytest.raises(CheckpointError, match=str(path).replace("\\", "\\\\")):
        load_checkpoint(path)
    assert path.read_bytes() == bad  # the failed load neither deleted nor rewrote it


def test_missing_file_and_foreign_npz(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.npz")
    np.savez(tmp_path / "other.npz", a=np.ones(2))
    with pytest.raises(CheckpointError, match="not a minidl checkpoint"):
        load_checkpoint(tmp_path / "other.npz")


def test_failed_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.npz"
    old = _state()
    save_checkpoint(path, old)
    before = path.read_bytes()

    def broken_savez(f, **entries):  # writes part of a file, then the disk "fills up"
        f.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.np, "savez", broken_savez)
    new = _state()
    new["trainer"]["epoch"] = 3
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, new)
    monkeypatch.undo()
    assert path.read_bytes() == before
    _assert_same(old, load_checkpoint(path))
    assert os.listdir(tmp_path) == ["checkpoint.npz"]  # the temporary file was removed


def test_atomic_write_text_and_replace(tmp_path):
    path = tmp_path / "h.csv"
    atomic_write(path, lambda f: f.write("a,b\n1,2\n"), mode="w")
    atomic_write(path, lambda f: f.write("a,b\n3,4\n"), mode="w")
    assert path.read_text() == "a,b\n3,4\n"
    assert os.listdir(tmp_path) == ["h.csv"]
