"""airbench's data side: reflect-padded translations, per-channel normalisation, alternating flips."""
import numpy as np
import pytest

from minidl import backend
from minidl.data import DataLoader, build_transform, normalize, random_crop


def test_reflect_padded_crop_is_a_window_of_the_mirrored_image(device):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 2, 6, 5)).astype(np.uint8)
    p = 2
    y = backend.to_numpy(random_crop(backend.to_device(x, device), p, np.random.default_rng(7),
                                     padding_mode="reflect"))
    assert y.shape == x.shape and y.dtype == np.uint8
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")   # torch's reflect: edge not repeated
    assert padded[0, 0, 0, 2] == x[0, 0, 2, 0]
    offsets = set()
    for n in range(len(x)):
        hits = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                if np.array_equal(y[n], padded[n, :, dy:dy + 6, dx:dx + 5])]
        assert hits, f"image {n} is not a window of its reflect-padded original"
        offsets.add(hits[0])
    assert len(offsets) > 8
    # the same offsets as zero padding draws from the same generator
    zeros = random_crop(x + 1, p, np.random.default_rng(7))
    moved = np.pad(x + 1, ((0, 0), (0, 0), (p, p), (p, p)))
    for n in range(3):
        dy, dx = next((dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                      if np.array_equal(zeros[n], moved[n, :, dy:dy + 6, dx:dx + 5]))
        np.testing.assert_array_equal(y[n], padded[n, :, dy:dy + 6, dx:dx + 5])
    with pytest.raises(ValueError, match="random_crop: expected padding"):
        random_crop(x, 5, rng, padding_mode="reflect")
    with pytest.raises(ValueError, match="random_crop: expected padding"):
        random_crop(x, 1, rng, padding_mode="edge")


def test_transform_with_channel_statistics_and_without_flips(rng):
    x = rng.integers(0, 256, size=(16, 3, 8, 8)).astype(np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    plain = build_transform(8, mean=mean, std=std)
    np.testing.assert_allclose(plain(x, None), normalize(x, mean, std))
    crops = build_transform(8, augment=True, crop_padding=2, padding_mode="reflect", flip=False, mean=mean, std=std)
    expected = normalize(random_crop(x, 2, np.random.default_rng(3), padding_mode="reflect"), mean, std)
    np.testing.assert_allclose(crops(x, np.random.default_rng(3)), expected)   # crops only: no flip drawn
    assert "padding_mode='reflect', flip=False" in repr(crops)
    with pytest.raises(ValueError, match="mean and std go together"):
        build_transform(8, mean=mean)
    with pytest.raises(ValueError, match="padding_mode"):
        build_transform(8, padding_mode="wrap")


def test_alternating_flips_mirror_every_image_in_every_other_epoch(device):
    n = 40
    x = np.arange(n * 3 * 2 * 4, dtype=np.float64).reshape(n, 3, 2, 4)
    labels = np.arange(n) % 10
    loader = DataLoader(x, labels, 16, shuffle=True, seed=5, device=device, alternate_flips=True, prefetch=False)

    seen = {}
    for epoch in range(3):
        order = loader.order(epoch)
        batches = [backend.to_numpy(xb.data) for xb, _ in loader.epoch_batches(epoch)]
        images = np.concatenate(batches)
        mirrored = np.array([np.array_equal(images[k], x[i, :, :, ::-1]) for k, i in enumerate(order)])
        kept = np.array([np.array_equal(images[k], x[i]) for k, i in enumerate(order)])
        assert np.all(mirrored != kept)
        seen[epoch] = mirrored
        np.testing.assert_array_equal(mirrored, loader.flips(epoch, order))
    first, second, third = (np.zeros(n, bool) for _ in range(3))
    for by_image, epoch in ((first, 0), (second, 1), (third, 2)):
        by_image[loader.order(epoch)] = seen[epoch]
    assert 10 < first.sum() < 30                      # a random half first
    np.testing.assert_array_equal(second, ~first)      # then each image the other way round
    np.testing.assert_array_equal(third, first)
    # a data-parallel shard flips its rows as the whole batch does
    shard = DataLoader(x, labels, 16, shuffle=True, seed=5, device=device, alternate_flips=True, prefetch=False,
                       shard=(1, 2))
    whole = backend.to_numpy(loader.make_batch(1, 0)[0].data)
    np.testing.assert_array_equal(backend.to_numpy(shard.make_batch(1, 0)[0].data), whole[8:16])
