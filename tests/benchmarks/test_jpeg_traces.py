"""benchmarks/jpeg_traces.py: its measures tell JPEG-coded images from untouched ones."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import jpeg_traces  # noqa: E402


def _smooth_images(n=40, seed=0):
    """(n, 3, 32, 32) uint8 pictures, statistically alike at every column (never block-coded), in colour."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n, 3, 32, 32))
    f = np.fft.fftfreq(32)
    low_pass = np.exp(-(f[:, None] ** 2 + f[None, :] ** 2) / (2 * 0.08 ** 2))        # periodic, so stationary
    image = np.fft.ifft2(np.fft.fft2(noise) * low_pass).real
    image = 128 + 60 * image / image.std()
    return np.clip(image, 0, 255).astype(np.uint8)


def _jpeg(images, quality):
    Image = pytest.importorskip("PIL.Image")
    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image.transpose(1, 2, 0)).save(buffer, "JPEG", quality=quality, subsampling=2)
        out.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")).transpose(2, 0, 1))
    return np.stack(out)


def test_block_edges_and_colour_detail_show_jpeg():
    raw = _smooth_images()
    coded = _jpeg(raw, quality=40)
    assert abs(jpeg_traces.block_edge_ratio(raw) - 1.0) < 0.05
    assert jpeg_traces.block_edge_ratio(coded) > jpeg_traces.block_edge_ratio(raw) + 0.05
    before, after = jpeg_traces.colour_detail(raw), jpeg_traces.colour_detail(coded)
    chroma = lambda d: (d["Cb"] + d["Cr"]) / d["Y"]                                  # noqa: E731
    assert chroma(after) < 0.8 * chroma(before)                                      # 4:2:0 halves colour detail


def test_nearest_training_image_is_found_with_its_similarity():
    train = _smooth_images(20, seed=1)
    test = train[[3, 17]].astype(np.int16) + np.random.default_rng(2).integers(-3, 4, size=(2, 3, 32, 32))
    similarity, index = jpeg_traces.nearest_training_images(np.clip(test, 0, 255).astype(np.uint8), train, chunk=1)
    assert list(index) == [3, 17] and (similarity > 0.99).all()


def test_a_missing_data_set_is_one_line(tmp_path, capsys):
    assert jpeg_traces.main(["--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jpeg_traces: ")
