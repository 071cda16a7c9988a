"""ImageFolderLoader: reproducible batches (resume, any number of threads), bad files, stalls, statistics.

Folders are written by the tests (tests/folder_fixture.py); Pillow is the ``images`` extra.
"""
import os
import threading
import time

import numpy as np
import pytest

pytest.importorskip("PIL")

from support.folder_fixture import write_image_folder  # noqa: E402
from minidl import Tensor, backend  # noqa: E402
from minidl.data import (DatasetError, ImageFolder, ImageFolderLoader, RandomResizedCrop, ResizeCenterCrop,  # noqa
                         channel_mean_std, decode_crop, folder_loaders, load_image_folder, normalize)

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    write_image_folder(root, {"cat": 9, "dog": 8, "eel": 6}, size=(37, 29), ext="jpg")
    return ImageFolder(root)


def _collect(batches):
    return [(x.numpy(), backend.to_numpy(y)) for x, y in batches]


def _assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_batches_are_decoded_crops_normalised_on_the_device(folder, device):
    plan = RandomResizedCrop(12)
    loader = ImageFolderLoader(folder, 5, plan, seed=2, device=device, mean=MEAN, std=STD, workers=2)
    assert len(loader) == 5 and loader.num_samples == 23
    batches = list(loader.epoch_batches(3))
    x, y = batches[0]
    assert isinstance(x, Tensor) and x.shape == (5, 3, 12, 12) and x.dtype == np.float32 and x.device == device
    assert y.dtype == np.int64 and backend.device_of(y) == x.device
    got = _collect(batches)
    assert [len(b[1]) for b in got] == [5, 5, 5, 5, 3]
    # the contract: epoch e's order is default_rng([seed, e]); batch b's crops use default_rng([seed, e, b, 1])
    order = np.random.default_rng([2, 3]).permutation(23)
    for b, (xb, yb) in enumerate(got):
        indices = order[5 * b:5 * b + 5]
        np.testing.assert_array_equal(yb, folder.labels[indices])
        u = np.random.default_rng([2, 3, b, 1]).random((len(indices), plan.draws))
        expected = np.empty((len(indices), 3, 12, 12), np.uint8)
        for row, (i, ui) in enumerate(zip(indices, u)):
            decode_crop(folder.paths[i], plan, ui, expected[row])
        np.testing.assert_allclose(xb, normalize(expected, MEAN, STD), rtol=1e-6, atol=1e-6)
    standardised = ImageFolderLoader(folder, 23, ResizeCenterCrop(12), shuffle=False, device=device, workers=1)
    x, _ = next(iter(standardised))  # without mean/std: per-image standardisation
    flat = x.numpy().reshape(23, -1)
    np.testing.assert_allclose(flat.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(flat.std(axis=1), 1, atol=1e-3)


def test_resume_threads_and_prefetch_change_nothing(folder):
    def batches(workers, prefetch, start=0):
        loader = ImageFolderLoader(folder, 4, RandomResizedCrop(10), seed=7, mean=MEAN, std=STD, workers=workers,
                                   prefetch=prefetch)
        return _collect(loader.epoch_batches(1, start_batch=start)), loader

    reference, loader = batches(0, 0)
    assert len(reference) == 6
    for workers, prefetch in [(1, 0), (2, 2), (3, 1)]:
        _assert_same(batches(workers, prefetch)[0], reference)
    _assert_same(batches(2, 2, start=4)[0], reference[4:])  # resuming mid-epoch: the same last batches
    _assert_same([(x.numpy(), backend.to_numpy(y)) for x, y in [loader.make_batch(1, 2)]], reference[2:3])
    assert not np.array_equal(_collect(loader.epoch_batches(2))[0][0], reference[0][0])  # another epoch differs
    with pytest.raises(ValueError, match="start_batch"):
        loader.epoch_batches(0, start_batch=7)


def test_shards_together_serve_the_unsharded_batches(folder):
    def batches(shard):
        loader = ImageFolderLoader(folder, 5, RandomResizedCrop(10), seed=4, mean=MEAN, std=STD, workers=1,
                                   shard=shard)
        return _collect(loader.epoch_batches(2))

    whole = batches(None)
    parts = [batches((rank, 3)) for rank in range(3)]
    assert [len(y) for _, y in parts[0]] == [1, 1, 1, 1, 1]  # rank 0 of 3: 1 of 5 rows (1, 2, 2), 1 of the last 3
    for b, (x, y) in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([p[b][0] for p in parts]), x)
        np.testing.assert_array_equal(np.concatenate([p[b][1] for p in parts]), y)
    with pytest.raises(ValueError, match="shard"):
        ImageFolderLoader(folder, 2, ResizeCenterCrop(8), shard=(2, 2))


def _count_threads():
    return sum(t.name.startswith("minidl-decode") for t in threading.enumerate())


def test_threads_stop_on_early_close_and_errors_reach_the_consumer(folder):
    loader = ImageFolderLoader(folder, 2, ResizeCenterCrop(8), workers=3)
    batches = loader.epoch_batches(0)
    next(batches)
    assert _count_threads() == 3
    batches.close()  # joins the threads
    assert _count_threads() == 0
    for i, _ in enumerate(loader):
        if i == 1:
            break
    deadline = time.monotonic() + 5
    while _count_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _count_threads() == 0

    class BrokenPlan(ResizeCenterCrop):
        def box(self, width, height, uniforms=None):
            raise RuntimeError("a bug in the plan")  # not an image's fault: must not be skipped

    broken = ImageFolderLoader(folder, 4, BrokenPlan(8), workers=2)
    with pytest.raises(RuntimeError, match="a bug in the plan"):
        list(broken.epoch_batches(0))
    assert _count_threads() == 0


@pytest.fixture
def damaged(tmp_path):
    """A folder with a truncated JPEG, a text file named .jpg and an empty .png among good images."""
    write_image_folder(tmp_path, {"cat": 4, "dog": 4}, size=(20, 16), ext="jpg")
    good = (tmp_path / "cat" / "000.jpg").read_bytes()
    bad = {tmp_path / "cat" / "truncated.jpg": good[:len(good) // 2], tmp_path / "dog" / "text.jpg": b"hello",
           tmp_path / "dog" / "empty.png": b""}
    for path, data in bad.items():
        path.write_bytes(data)
    return ImageFolder(tmp_path), sorted(str(p) for p in bad)


def test_bad_images_are_reported_once_and_skipped(damaged):
    folder, bad = damaged
    messages = []
    loader = ImageFolderLoader(folder, 4, ResizeCenterCrop(8), seed=1, workers=2, name="train", log=messages.append)
    for epoch in range(2):
        got = _collect(loader.epoch_batches(epoch))
        assert sum(len(y) for _, y in got) == len(folder) - 3
    reported = [m for m in messages if "skipping unreadable image" in m]
    assert sorted(m.split("image ")[1].split(" (")[0] for m in reported) == bad  # each path once, over 2 epochs
    assert any("truncated" in m for m in reported)
    counts = [m for m in messages if "skipped in this pass" in m]
    assert len(counts) == 2 and all(m.startswith("train: 3 unreadable image(s)") for m in counts)
    assert set(loader.bad_paths) == set(bad)


def test_bad_images_can_stop_the_loader_and_a_batch_of_only_bad_ones_does(damaged, tmp_path):
    folder, bad = damaged
    strict = ImageFolderLoader(folder, 16, ResizeCenterCrop(8), shuffle=False, on_bad_image="raise", workers=2)
    with pytest.raises(DatasetError, match="unreadable image .*(truncated|text|empty)"):
        list(strict)
    only_bad = folder.subset([folder.paths.index(p) for p in bad])
    loader = ImageFolderLoader(only_bad, 3, ResizeCenterCrop(8), workers=1, log=lambda m: None)
    with pytest.raises(DatasetError, match="none of the 3 images of batch 1 could be read"):
        list(loader)


def test_a_stuck_file_is_reported_not_waited_for(folder, tmp_path):
    fifo = tmp_path / "stuck.jpg"
    os.mkfifo(fifo)  # opening it for reading blocks until a writer comes, like a hung network drive
    stuck = folder.subset(range(4))
    stuck.paths[2] = str(fifo)
    loader = ImageFolderLoader(stuck, 4, ResizeCenterCrop(8), workers=2, stall_timeout=0.5, log=lambda m: None)
    start = time.monotonic()
    try:
        with pytest.raises(DatasetError, match="stuck reading .*stuck.jpg"):
            list(loader)
        assert time.monotonic() - start < 5
    finally:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # let the blocked thread go
        os.close(fd)


def test_channel_statistics_match_numpy(folder):
    mean, std = channel_mean_std(folder, 10, workers=2)
    crops = np.empty((len(folder), 3, 10, 10), np.uint8)
    for path, out in zip(folder.paths, crops):
        decode_crop(path, ResizeCenterCrop(10), None, out)
    values = crops.astype(np.float64) / 255
    np.testing.assert_allclose(mean, values.mean(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(std, values.std(axis=(0, 2, 3)), rtol=1e-8)
    sampled = channel_mean_std(folder, 10, max_images=5, seed=3, workers=1)
    assert sampled != (mean, std) and sampled == channel_mean_std(folder, 10, max_images=5, seed=3, workers=2)


def test_folder_loaders_build_train_val_and_test(tmp_path):
    write_image_folder(tmp_path, {"cat": 6, "dog": 6}, size=(20, 16))
    splits = load_image_folder(tmp_path, val_fraction=0.25, test_fraction=0.0, seed=0)
    train, val, test = folder_loaders(splits, 8, 4, augment=True, limits=(5, None, 2), workers=1)
    assert isinstance(train.plan, RandomResizedCrop) and train.shuffle and train.num_samples == 5
    assert isinstance(val.plan, ResizeCenterCrop) and not val.shuffle and val.num_samples == 4
    assert test.num_samples == 2 and test.paths == val.paths[:2] and "validation" in test.name
    train, _, _ = folder_loaders(splits, 8, 4, augment=False)
    assert isinstance(train.plan, ResizeCenterCrop)


def test_loader_rejects_bad_arguments(folder):
    with pytest.raises(ValueError, match="batch_size"):
        ImageFolderLoader(folder, 0, ResizeCenterCrop(8))
    with pytest.raises(ValueError, match="on_bad_image"):
        ImageFolderLoader(folder, 2, ResizeCenterCrop(8), on_bad_image="ignore")
    with pytest.raises(ValueError, match="mean and std"):
        ImageFolderLoader(folder, 2, ResizeCenterCrop(8), mean=MEAN)
    with pytest.raises(ValueError, match="workers"):
        ImageFolderLoader(folder, 2, ResizeCenterCrop(8), workers=-1)
