"""CIFAR-10 pipeline: download -> MD5 -> safe extract -> load, transforms, and the loader.

Everything runs on a tiny fixture in the official format (tests/cifar_fixture.py),
served from a local HTTP server; no real data, no internet.
"""
import io
import os
import pickle
import tarfile
import threading
import time

import numpy as np
import pytest
from support.cifar_fixture import closed_port, make_archive, md5_of, serve_directory, write_cifar10

from minidl import Tensor, backend
from minidl.data import (DataLoader, DatasetError, build_transform, data_dir_from_env, download_and_extract,
                         load_cifar10, per_image_standardization, random_crop, random_horizontal_flip, resize_bilinear,
                         safe_extract)
from minidl.data.cifar10 import ARCHIVE_NAME


# ---- loading ------------------------------------------------------------------
def _assert_matches_fixture(data, fx, val_size):
    assert data.train_images.dtype == np.uint8 and data.train_images.shape[1:] == (3, 32, 32)
    assert data.train_labels.dtype == np.int64
    np.testing.assert_array_equal(data.val_images, fx.train_images[:val_size])
    np.testing.assert_array_equal(data.val_labels, fx.train_labels[:val_size])
    np.testing.assert_array_equal(data.train_images, fx.train_images[val_size:])
    np.testing.assert_array_equal(data.train_labels, fx.train_labels[val_size:])
    np.testing.assert_array_equal(data.test_images, fx.test_images)
    np.testing.assert_array_equal(data.test_labels, fx.test_labels)
    assert data.label_names == fx.label_names


def test_existing_data_dir_is_used_as_is(tmp_path):
    fx = write_cifar10(tmp_path / "data", n_per_batch=6, n_test=5)
    dead_url = f"http://127.0.0.1:{closed_port()}/x.tar.gz"  # any download attempt would fail
    data = load_cifar10(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", download=False, val_size=4,
                        url=dead_url, md5="0" * 32)
    _assert_matches_fixture(data, fx, 4)
    # the batches directory itself is accepted too
    data = load_cifar10(data_dir=fx.batches_dir, cache_dir=tmp_path / "cache", download=False, val_size=0)
    assert data.val_images.shape == (0, 3, 32, 32) and len(data.train_images) == 30
    assert not (tmp_path / "cache").exists()


def test_download_verify_extract_and_load_over_http(tmp_path):
    fx = write_cifar10(tmp_path / "src", n_per_batch=4, n_test=4)
    _, md5 = make_archive(fx, tmp_path / "www" / ARCHIVE_NAME)
    cache = tmp_path / "cache"
    with serve_directory(tmp_path / "www") as base:
        data = load_cifar10(cache_dir=cache, val_size=3, url=f"{base}/{ARCHIVE_NAME}", md5=md5, progress=False)
    _assert_matches_fixture(data, fx, 3)
    assert md5_of(cache / ARCHIVE_NAME) == md5
    assert sorted(p.name for p in cache.iterdir()) == sorted([ARCHIVE_NAME, "cifar-10-batches-py"])  # no temp leftovers
    # second run: the server is gone, the cache is enough
    dead_url = f"http://127.0.0.1:{closed_port()}/{ARCHIVE_NAME}"
    _assert_matches_fixture(load_cifar10(cache_dir=cache, val_size=3, url=dead_url, md5=md5), fx, 3)


def test_cached_archive_is_verified_and_extracted_without_network(tmp_path):
    fx = write_cifar10(tmp_path / "src", n_per_batch=3, n_test=3)
    _, md5 = make_archive(fx, tmp_path / "cache" / ARCHIVE_NAME)
    dead_url = f"http://127.0.0.1:{closed_port()}/{ARCHIVE_NAME}"
    out = download_and_extract(tmp_path / "cache", url=dead_url, md5=md5, progress=False)
    assert out == tmp_path / "cache" / "cifar-10-batches-py"
    _assert_matches_fixture(load_cifar10(cache_dir=tmp_path / "cache", download=False, val_size=2), fx, 2)


def test_md5_mismatch_deletes_the_download_and_names_both_hashes(tmp_path):
    fx = write_cifar10(tmp_path / "src", n_per_batch=2, n_test=2)
    archive, good_md5 = make_archive(fx, tmp_path / "www" / ARCHIVE_NAME)
    with open(archive, "r+b") as f:  # tamper with one byte in the middle
        f.seek(archive.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    bad_md5 = md5_of(archive)
    cache = tmp_path / "cache"
    with serve_directory(tmp_path / "www") as base:
        with pytest.raises(DatasetError) as info:
            load_cifar10(cache_dir=cache, url=f"{base}/{ARCHIVE_NAME}", md5=good_md5, progress=False)
    message = str(info.value)
    assert ARCHIVE_NAME in message and good_md5 in message and bad_md5 in message
    assert not (cache / ARCHIVE_NAME).exists() and not (cache / "cifar-10-batches-py").exists()


def _tar_with(path, name, kind="file"):
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("cifar-10-batches-py/fine.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        info = tarfile.TarInfo(name)
        if kind == "file":
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        else:
            info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "device": tarfile.CHRTYPE}[kind]
            info.linkname = "/etc/passwd"
            tar.addfile(info)


@pytest.mark.parametrize("name, kind", [
    ("../escape.txt", "file"), ("cifar-10-batches-py/../../escape.txt", "file"), ("ABSOLUTE", "file"),
    ("cifar-10-batches-py/link", "symlink"), ("cifar-10-batches-py/hard", "hardlink"),
    ("cifar-10-batches-py/dev", "device")])
def test_unsafe_archive_members_are_refused_and_nothing_is_written(tmp_path, name, kind):
    outside = tmp_path / "escape.txt"
    if name == "ABSOLUTE":
        name = str(outside)
    target = tmp_path / "a" / "b"
    _tar_with(tmp_path / "evil.tar.gz", name, kind)
    with pytest.raises(DatasetError, match="unsafe archive") as info:
        safe_extract(tmp_path / "evil.tar.gz", target)
    assert repr(name) in str(info.value)
    assert not outside.exists() and not (tmp_path / "a" / "escape.txt").exists()
    assert list(target.iterdir()) == []  # checked before anything was extracted


def test_unsafe_archive_in_cache_is_reported_by_load(tmp_path):
    (tmp_path / "cache").mkdir()
    _tar_with(tmp_path / "cache" / ARCHIVE_NAME, "../escape.txt")
    with pytest.raises(DatasetError, match="escape.txt"):
        load_cifar10(cache_dir=tmp_path / "cache", md5=None, download=False)
    assert not (tmp_path / "escape.txt").exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [ARCHIVE_NAME]  # staging dir cleaned up


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _rewrite(path, **changes):
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    for key, value in changes.items():
        if value is None:
            del batch[key.encode()]
        else:
            batch[key.encode()] = value
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


class _Boom:  # unpickling this would call os.system: the loader must refuse it
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("corrupt, pattern", [
    (_truncate, "corrupt"),
    (lambda p: p.write_bytes(b"not a pickle at all"), "corrupt"),
    (lambda p: p.write_bytes(b""), "corrupt"),
    (lambda p: _rewrite(p, data=np.zeros((4, 100), np.uint8)), "uint8 \\(n, 3072\\)"),
    (lambda p: _rewrite(p, data=np.zeros((4, 3072), np.float32)), "uint8 \\(n, 3072\\)"),
    (lambda p: _rewrite(p, labels=None), "missing key b'labels'"),
    (lambda p: _rewrite(p, labels=[1, 2]), "labels of shape"),
    (lambda p: _rewrite(p, labels=[0, 1, 2, 99]), "labels outside"),
    (lambda p: p.write_bytes(pickle.dumps(_Boom(), protocol=2)), "posix.system|nt.system|os.system"),
    (lambda p: p.unlink(), "missing file"),
])
def test_bad_batch_file_is_reported_by_name(tmp_path, corrupt, pattern):
    fx = write_cifar10(tmp_path, n_per_batch=4, n_test=4)
    corrupt(fx.batches_dir / "data_batch_3")
    with pytest.raises(DatasetError, match=pattern) as info:
        load_cifar10(data_dir=tmp_path, download=False, val_size=1)
    assert "data_batch_3" in str(info.value)


def test_unreachable_server_gives_a_clear_error_quickly(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/{ARCHIVE_NAME}"
    start = time.perf_counter()
    with pytest.raises(DatasetError) as info:
        load_cifar10(cache_dir=tmp_path / "cache", url=url, timeout=2, progress=False)
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert url in message and "--data-dir" in message and "cifar-10-batches-py" in message
    assert "refused" in message.lower()
    assert list((tmp_path / "cache").iterdir()) == []  # the temporary file is gone


def test_http_error_and_disabled_download_are_reported(tmp_path):
    (tmp_path / "www").mkdir()
    with serve_directory(tmp_path / "www") as base:
        with pytest.raises(DatasetError, match="404"):
            load_cifar10(cache_dir=tmp_path / "cache", url=f"{base}/{ARCHIVE_NAME}", progress=False)
    with pytest.raises(DatasetError, match="downloading is disabled.*--data-dir"):
        load_cifar10(data_dir=tmp_path / "nothing", cache_dir=tmp_path / "cache", download=False)


def test_the_hint_speaks_the_callers_words(tmp_path):
    # a notebook has no --data-dir: it passes its own way of pointing at the data
    hint = "set MINIDL_DATA_DIR to a folder that holds cifar-10-batches-py/"
    url = f"http://127.0.0.1:{closed_port()}/{ARCHIVE_NAME}"
    with pytest.raises(DatasetError) as info:
        load_cifar10(cache_dir=tmp_path / "cache", url=url, timeout=2, progress=False, data_dir_hint=hint)
    assert str(info.value).endswith(f"or {hint}") and "--data-dir" not in str(info.value)
    with pytest.raises(DatasetError, match="allow the download, or set MINIDL_DATA_DIR"):
        load_cifar10(cache_dir=tmp_path / "cache", download=False, data_dir_hint=hint)


def test_data_dir_from_env_reads_a_relative_path_as_the_shell_did(tmp_path, monkeypatch):
    # `MINIDL_DATA_DIR=../shared/data jupyter ...` typed in project/, the kernel running in project/examples/
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "project" / "examples").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "project" / "examples")
    monkeypatch.setenv("PWD", str(tmp_path / "project"))
    monkeypatch.setenv("MINIDL_DATA_DIR", "../shared/data")
    assert data_dir_from_env() == (tmp_path / "shared" / "data").resolve()
    # no folder from $PWD: the working directory's reading
    (tmp_path / "project" / "data").mkdir()
    monkeypatch.setenv("MINIDL_DATA_DIR", "../data")
    assert data_dir_from_env() == (tmp_path / "project" / "data").resolve()
    monkeypatch.setenv("MINIDL_DATA_DIR", str(tmp_path / "shared" / "data"))
    assert data_dir_from_env() == tmp_path / "shared" / "data"
    monkeypatch.setenv("MINIDL_DATA_DIR", "")
    assert data_dir_from_env() is None
    monkeypatch.delenv("MINIDL_DATA_DIR")
    assert data_dir_from_env() is None


def test_data_dir_from_env_that_names_nothing_says_where_it_looked(tmp_path, monkeypatch):
    (tmp_path / "project" / "examples").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "project" / "examples")
    monkeypatch.setenv("PWD", str(tmp_path / "project"))
    monkeypatch.setenv("MINIDL_DATA_DIR", "../shared/data")
    with pytest.raises(DatasetError) as info:
        data_dir_from_env()
    message = str(info.value)
    assert f"not {tmp_path / 'shared' / 'data'} nor {tmp_path / 'project' / 'shared' / 'data'}" in message
    assert message.startswith("MINIDL_DATA_DIR=../shared/data names no folder") and "--data-dir" not in message
    assert not (tmp_path / "shared").exists()


# ---- transforms ---------------------------------------------------------------
def test_per_image_standardization_matches_the_formula(device, rng):
    x = rng.integers(0, 256, size=(5, 3, 6, 7)).astype(np.uint8)
    x[2] = 77  # a constant image: std 0, so the 1/sqrt(num_pixels) floor applies -> all zeros
    ref = x.astype(np.float64)
    mean = ref.mean(axis=(1, 2, 3), keepdims=True)
    std = np.sqrt(((ref - mean) ** 2).mean(axis=(1, 2, 3), keepdims=True))
    ref = (ref - mean) / np.maximum(std, 1 / np.sqrt(3 * 6 * 7))
    y = per_image_standardization(backend.to_device(x, device))
    assert backend.device_of(y) == device and y.dtype == np.float32
    np.testing.assert_allclose(backend.to_numpy(y), ref, rtol=1e-5, atol=1e-5)
    assert np.all(backend.to_numpy(y)[2] == 0)
    with pytest.raises(ValueError, match="per_image_standardization"):
        per_image_standardization(np.zeros((3, 4, 4)))


def _naive_resize(x, out_h, out_w):
    """Per-pixel loops over TensorFlow's half-pixel-centre bilinear rule."""
    n, c, h, w = x.shape
    y = np.zeros((n, c, out_h, out_w))

    def source(i, n_in, n_out):
        s = (i + 0.5) * n_in / n_out - 0.5
        lo = max(int(np.floor(s)), 0)
        hi = min(int(np.ceil(s)), n_in - 1)
        return min(lo, n_in - 1), hi, s - np.floor(s)

    for i in range(out_h):
        top, bottom, fy = source(i, h, out_h)
        for j in range(out_w):
            left, right, fx = source(j, w, out_w)
            upper = x[:, :, top, left] * (1 - fx) + x[:, :, top, right] * fx
            lower = x[:, :, bottom, left] * (1 - fx) + x[:, :, bottom, right] * fx
            y[:, :, i, j] = upper * (1 - fy) + lower * fy
    return y


@pytest.mark.parametrize("in_hw, out_hw", [((5, 7), (11, 13)), ((6, 6), (6, 15)), ((9, 8), (4, 3)), ((1, 3), (4, 2))])
def test_resize_bilinear_matches_a_naive_loop(device, rng, in_hw, out_hw):
    x = rng.standard_normal((2, 3) + in_hw)
    y = resize_bilinear(backend.to_device(x, device), out_hw)
    assert y.shape == (2, 3) + out_hw and backend.device_of(y) == device
    np.testing.assert_allclose(backend.to_numpy(y), _naive_resize(x, *out_hw), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("in_size, out_size", [(32, 224), (32, 227), (7, 12), (12, 5)])
def test_resize_bilinear_matches_torch(rng, in_size, out_size):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, in_size, in_size))
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=(out_size, out_size), mode="bilinear",
                                          align_corners=False).numpy()
    np.testing.assert_allclose(resize_bilinear(x, out_size), ref, rtol=1e-10, atol=1e-10)
    y32 = resize_bilinear(x.astype(np.uint8), out_size)
    assert y32.dtype == np.float32 and y32.shape == (2, 3, out_size, out_size)


def test_random_crop_is_a_zero_padded_shifted_window(device):
    rng = np.random.default_rng(0)
    x = rng.integers(1, 256, size=(32, 2, 6, 5)).astype(np.uint8)  # no zeros: zeros can only be padding
    p = 2
    y = backend.to_numpy(random_crop(backend.to_device(x, device), p, np.random.default_rng(7)))
    assert y.shape == x.shape and y.dtype == np.uint8
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    offsets = []
    for n in range(len(x)):
        hits = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                if np.array_equal(y[n], padded[n, :, dy:dy + 6, dx:dx + 5])]
        assert hits, f"image {n} is not a window of its padded original"
        offsets.append(hits[0])
    assert len(set(offsets)) > 5  # offsets really vary per image
    again = backend.to_numpy(random_crop(backend.to_device(x, device), p, np.random.default_rng(7)))
    np.testing.assert_array_equal(again, y)
    other = backend.to_numpy(random_crop(backend.to_device(x, device), p, np.random.default_rng(8)))
    assert not np.array_equal(other, y)
    np.testing.assert_array_equal(random_crop(x, 0, np.random.default_rng(0)), x)


def test_random_horizontal_flip_mirrors_about_half_the_images(device):
    x = np.random.default_rng(1).integers(0, 256, size=(64, 3, 4, 5)).astype(np.uint8)
    y = backend.to_numpy(random_horizontal_flip(backend.to_device(x, device), np.random.default_rng(3)))
    flipped = np.array([np.array_equal(y[n], x[n, :, :, ::-1]) for n in range(len(x))])
    kept = np.array([np.array_equal(y[n], x[n]) for n in range(len(x))])
    assert np.all(flipped | kept) and 16 < flipped.sum() < 48
    again = random_horizontal_flip(backend.to_device(x, device), np.random.default_rng(3))
    np.testing.assert_array_equal(backend.to_numpy(again), y)


def test_build_transform_standardises_then_resizes(device, rng):
    x = rng.integers(0, 256, size=(4, 3, 32, 32)).astype(np.uint8)
    xd = backend.to_device(x, device)
    y = build_transform(32)(xd, None)
    assert y.dtype == np.float32 and backend.device_of(y) == device
    np.testing.assert_allclose(backend.to_numpy(y).mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(backend.to_numpy(y).std(axis=(1, 2, 3)), 1, atol=1e-4)
    big = build_transform(64)(xd, None)
    np.testing.assert_allclose(backend.to_numpy(big),
                               resize_bilinear(per_image_standardization(x.astype(np.float64)), 64), atol=1e-5)
    aug = build_transform(32, augment=True)
    a, b = aug(xd, np.random.default_rng(5)), aug(xd, np.random.default_rng(5))
    np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))
    assert not np.allclose(backend.to_numpy(a), backend.to_numpy(y))
    with pytest.raises(ValueError, match="rng"):
        aug(xd, None)


def test_transform_with_a_pixel_mean_centres_raw_pixels(device, rng):
    x = rng.integers(0, 256, size=(4, 3, 8, 8)).astype(np.uint8)
    mean_image = x.mean(axis=0)
    xd = backend.to_device(x, device)
    y = build_transform(8, pixel_mean=mean_image)(xd, None)
    assert y.dtype == np.float32 and backend.device_of(y) == device
    np.testing.assert_allclose(backend.to_numpy(y), x - mean_image.astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(backend.to_numpy(y).mean(axis=0), 0, atol=1e-4)  # centred, pixel units kept
    per_channel = build_transform(12, pixel_mean=np.array([100.0, 120.0, 140.0]))(xd, None)
    expected = resize_bilinear(x.astype(np.float64) - np.array([100.0, 120.0, 140.0])[:, None, None], 12)
    np.testing.assert_allclose(backend.to_numpy(per_channel), expected, atol=1e-4)
    with pytest.raises(ValueError, match="subtract_mean: expected a mean of shape"):
        build_transform(8, pixel_mean=np.zeros(4))(xd, None)


# ---- loader -------------------------------------------------------------------
def _indexed_data(n=23):
    """Images whose first pixel is their index, labels equal to the index: every sample is identifiable."""
    images = np.zeros((n, 3, 4, 4), np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    return images, np.arange(n)


def _collect(batches):
    return [(x.numpy(), backend.to_numpy(y)) for x, y in batches]


def test_loader_covers_every_sample_once_and_keeps_images_with_labels(device):
    images, labels = _indexed_data()
    loader = DataLoader(images, labels, batch_size=5, seed=3, device=device)
    assert len(loader) == 5
    batches = list(loader.epoch_batches(0))
    x, y = batches[0]
    assert isinstance(x, Tensor) and x.dtype == np.float32 and x.device == device
    assert y.dtype == np.int64 and backend.device_of(y) == device
    got = _collect(batches)
    assert [len(b[1]) for b in got] == [5, 5, 5, 5, 3]
    seen = np.concatenate([b[1] for b in got])
    assert sorted(seen) == list(range(23)) and not np.array_equal(seen, np.arange(23))
    for xb, yb in got:
        np.testing.assert_array_equal(xb[:, 0, 0, 0], yb)
    dropped = DataLoader(images, labels, batch_size=5, drop_last=True)
    assert len(dropped) == 4
    seen = np.concatenate([y for _, y in _collect(dropped.epoch_batches(0))])
    assert len(seen) == 20 and len(set(seen)) == 20
    ordered = DataLoader(images, labels, batch_size=5, shuffle=False, prefetch=False)
    np.testing.assert_array_equal(np.concatenate([y for _, y in _collect(ordered)]), np.arange(23))


def test_loader_order_is_reproducible_per_seed_and_epoch():
    images, labels = _indexed_data()

    def order(seed, epoch):
        loader = DataLoader(images, labels, batch_size=4, seed=seed)
        return np.concatenate([y for _, y in _collect(loader.epoch_batches(epoch))])

    np.testing.assert_array_equal(order(0, 1), order(0, 1))
    assert not np.array_equal(order(0, 1), order(0, 2))
    assert not np.array_equal(order(0, 1), order(1, 1))
    loader = DataLoader(images, labels, batch_size=4, seed=0)
    loader.set_epoch(2)
    np.testing.assert_array_equal(np.concatenate([y for _, y in _collect(loader)]), order(0, 2))


@pytest.mark.parametrize("prefetch", [True, False])
def test_resuming_and_prefetch_give_identical_augmented_batches(prefetch):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, size=(30, 3, 8, 8)).astype(np.uint8), np.arange(30)
    transform = build_transform(12, augment=True, crop_padding=2)
    reference = _collect(DataLoader(images, labels, 4, seed=5, transform=transform, prefetch=True).epoch_batches(1))
    loader = DataLoader(images, labels, 4, seed=5, transform=transform, prefetch=prefetch)
    full = _collect(loader.epoch_batches(1))
    resumed = _collect(loader.epoch_batches(1, start_batch=3))
    assert len(full) == 8 and len(resumed) == 5 and full[0][0].shape == (4, 3, 12, 12)
    for (xa, ya), (xb, yb) in zip(full, reference):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    for (xa, ya), (xb, yb) in zip(resumed, full[3:]):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # the documented contract: batch b of epoch e is augmented with default_rng([seed, e, b, 1])
    for b, (xa, ya) in enumerate(full):
        np.testing.assert_array_equal(xa, transform(images[ya], np.random.default_rng([5, 1, b, 1])))
    with pytest.raises(ValueError, match="start_batch"):
        loader.epoch_batches(0, start_batch=9)


def _wait_for_threads(count, timeout=5.0):
    deadline = time.monotonic() + timeout
    while threading.active_count() > count and time.monotonic() < deadline:
        time.sleep(0.01)
    return threading.active_count()


def test_prefetch_thread_stops_on_early_break_and_worker_errors_propagate():
    images, labels = _indexed_data(40)
    baseline = threading.active_count()
    loader = DataLoader(images, labels, batch_size=2, prefetch=True)
    for i, _ in enumerate(loader):
        if i == 1:
            break
    assert _wait_for_threads(baseline) == baseline
    batches = loader.epoch_batches(0)
    next(batches)
    assert threading.active_count() == baseline + 1
    batches.close()
    assert threading.active_count() == baseline  # close() joins the worker

    def failing(x, rng):
        if failing.calls == 2:
            raise RuntimeError("transform exploded")
        failing.calls += 1
        return x.astype(np.float32)

    failing.calls = 0
    loader = DataLoader(images, labels, batch_size=2, transform=failing, prefetch=True)
    got = []
    with pytest.raises(RuntimeError, match="transform exploded"):
        for x, _ in loader:
            got.append(x)
    assert len(got) == 2
    assert _wait_for_threads(baseline) == baseline


def test_loader_rejects_bad_arguments():
    images, labels = _indexed_data(6)
    with pytest.raises(ValueError, match="DataLoader"):
        DataLoader(images, labels[:5], 2)
    with pytest.raises(ValueError, match="DataLoader: got no images"):
        DataLoader(images[:0], labels[:0], 2)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(images, labels, 0)
    with pytest.raises(ValueError, match="DataLoader"):
        DataLoader(images[0], labels, 2)


@pytest.mark.parametrize("labels, num_classes, expected", [
    (np.arange(6.0), None, "labels must be integer class indices, got dtype float64"),
    (np.array([0, 1, -1, 2, 0, 1]), None, "labels must be >= 0, got values from -1 to 2"),
    (np.array([0, 1, 2, 3, 9, 5]), 6, r"labels must be in \[0, 6\), got values from 0 to 9"),
])
def test_loader_checks_labels_once_on_the_host(labels, num_classes, expected):
    images, _ = _indexed_data(6)
    with pytest.raises(ValueError, match="DataLoader: " + expected):
        DataLoader(images, labels, 2, num_classes=num_classes)
    assert len(DataLoader(images, np.arange(6), 2, num_classes=6)) == 3


@pytest.mark.parametrize("size", [2, 3])
def test_shards_of_each_global_batch_are_the_one_process_batch(size):
    # 23 images in batches of 8: the last global batch has 7, split unevenly (and with
    # 3 shards of a 7-image batch, sizes 2, 2, 3); augmentation must not depend on it.
    images = np.random.default_rng(0).integers(0, 256, (23, 3, 8, 8), dtype=np.uint8)
    labels = np.arange(23) % 10
    common = dict(batch_size=8, shuffle=True, seed=5, transform=build_transform(8, augment=True), prefetch=False)
    whole = DataLoader(images, labels, **common)
    shards = [DataLoader(images, labels, shard=(r, size), **common) for r in range(size)]
    for (x, y), *parts in zip(whole.epoch_batches(1), *(s.epoch_batches(1) for s in shards)):
        np.testing.assert_array_equal(np.concatenate([p[0].numpy() for p in parts]), x.numpy())
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)
    assert [s.batch_rows(2) for s in shards][-1][1:] == (7, 7)
    with pytest.raises(ValueError, match="shard"):
        DataLoader(images, labels, 8, shard=(2, 2))
