"""benchmarks/jpeg_again.py: the ghost finds the settings a copy was coded with; the coded copy loads unchanged."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import jpeg_again  # noqa: E402
from support.cifar_fixture import write_cifar10  # noqa: E402

from minidl.data import load_cifar10  # noqa: E402


def _pictures(n=24, seed=0):
    """(n, 3, 32, 32) uint8 smooth colour pictures with some edges, so JPEG has detail to lose."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(32)
    low_pass = np.exp(-(f[:, None] ** 2 + f[None, :] ** 2) / (2 * 0.1 ** 2))
    image = np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, 3, 32, 32))) * low_pass).real
    image = 128 + 40 * image / image.std()
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("quality, subsampling", [(60, "4:2:0"), (80, "4:4:4")])
def test_the_ghost_finds_the_settings_a_copy_was_coded_with(quality, subsampling):
    coded = jpeg_again.jpeg_pass(_pictures(), quality, subsampling)
    table = jpeg_again.ghost_table(coded, qualities=range(50, 101, 10))
    (found_subsampling, found_quality), ratio = jpeg_again.deepest_dip(table)
    assert (found_subsampling, found_quality) == (subsampling, quality)
    assert ratio < 0.5
    if subsampling == "4:2:0":
        # the smallest change alone says quality 100, 4:4:4: why the dip is the measure
        assert min(table, key=table.get) == ("4:4:4", 100)


def test_a_pass_at_lower_quality_changes_more():
    images = _pictures()
    mse = [float(np.mean((jpeg_again.jpeg_pass(images, q).astype(float) - images) ** 2)) for q in (90, 50, 20)]
    assert 0 < mse[0] < mse[1] < mse[2]
    assert jpeg_again.psnr(mse[1]) == pytest.approx(10 * np.log10(255 ** 2 / mse[1]))


def test_the_coded_copy_keeps_layout_and_labels_and_changes_the_pixels(tmp_path):
    fx = write_cifar10(tmp_path / "src", n_per_batch=4, n_test=3)
    mse = jpeg_again.write_coded_copy(tmp_path / "src", tmp_path / "coded", quality=50)
    original = load_cifar10(data_dir=tmp_path / "src", download=False, val_size=0, progress=False)
    copy = load_cifar10(data_dir=tmp_path / "coded", download=False, val_size=0, progress=False)
    np.testing.assert_array_equal(copy.train_labels, original.train_labels)
    np.testing.assert_array_equal(copy.test_labels, original.test_labels)
    assert copy.label_names == original.label_names
    assert copy.train_images.shape == original.train_images.shape
    expected = jpeg_again.jpeg_pass(np.concatenate([fx.train_images, fx.test_images]), 50)
    np.testing.assert_array_equal(np.concatenate([copy.train_images, copy.test_images]), expected)
    changed = np.concatenate([copy.train_images, copy.test_images]).astype(float)
    assert mse == pytest.approx(np.mean((changed - np.concatenate([fx.train_images, fx.test_images])) ** 2))
    assert mse > 100          # random noise pictures lose a lot at quality 50


def test_bad_input_gets_one_line(tmp_path, capsys):
    assert jpeg_again.main(["--data-dir", str(tmp_path)]) == 1
    assert "jpeg_again:" in capsys.readouterr().err
    with pytest.raises(ValueError, match="jpeg_pass: expected"):
        jpeg_again.jpeg_pass(np.zeros((2, 32, 32), np.uint8), 50)
    with pytest.raises(ValueError, match="quality must be"):
        jpeg_again.jpeg_pass(np.zeros((1, 3, 8, 8), np.uint8), 0)
    with pytest.raises(SystemExit):
        jpeg_again.main(["--data-dir", str(tmp_path), "--quality", "50"])     # --out missing
