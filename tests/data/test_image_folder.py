"""Folders of images: layout and class order, splits, and every per-image transform against a slow reference.

Every folder is written by the test itself (tests/folder_fixture.py); Pillow is the
``images`` extra.
"""
import math
import os
import warnings

import numpy as np
import pytest

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from support.folder_fixture import photo, write_image_folder  # noqa: E402
from minidl.data import (DatasetError, ImageFolder, RandomResizedCrop, ResizeCenterCrop, decode_crop,  # noqa: E402
                         load_image_folder, normalize, split_by_fraction)
from minidl.data import image_ops  # noqa: E402


# ---- layout ---------------------------------------------------------------------
def test_layout_class_order_and_skipped_files(tmp_path):
    root = tmp_path / "ds"
    write_image_folder(root, {"b_dog": 2, "a_cat": 3, "c_eel": 1}, size=(8, 6))
    (root / "a_cat" / "nested").mkdir()
    Image.fromarray(photo(8, 6, 9)).save(root / "a_cat" / "nested" / "deep.JPG")  # upper-case extension
    (root / "a_cat" / "notes.txt").write_text("not an image")
    (root / "b_dog" / ".DS_Store").write_bytes(b"\0")
    (root / "b_dog" / ".thumbs").mkdir()
    Image.fromarray(photo(8, 6, 8)).save(root / "b_dog" / ".thumbs" / "t.png")
    (root / ".git").mkdir()  # a hidden folder is no class
    folder = ImageFolder(root)
    assert folder.class_names == ["a_cat", "b_dog", "c_eel"]
    rel = [os.path.relpath(p, root) for p in folder.paths]
    assert rel == ["a_cat/000.png", "a_cat/001.png", "a_cat/002.png", "a_cat/nested/deep.JPG", "b_dog/000.png",
                   "b_dog/001.png", "c_eel/000.png"]
    assert folder.labels.tolist() == [0, 0, 0, 0, 1, 1, 2] and folder.labels.dtype == np.int64
    assert sorted(os.path.relpath(p, root) for p in folder.skipped) == ["a_cat/notes.txt", "b_dog/.DS_Store",
                                                                        "b_dog/.thumbs"]


def test_layout_errors_are_clear(tmp_path):
    with pytest.raises(DatasetError, match="is not a folder"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    Image.fromarray(photo(8, 6, 0)).save(tmp_path / "flat" / "x.png")
    with pytest.raises(DatasetError, match="no class subfolders"):
        ImageFolder(tmp_path / "flat")
    write_image_folder(tmp_path / "ds", {"cat": 1})
    (tmp_path / "ds" / "dog").mkdir()
    with pytest.raises(DatasetError, match=r"dog holds no images"):
        ImageFolder(tmp_path / "ds")
    write_image_folder(tmp_path / "val", {"cat": 1, "cow": 1})
    with pytest.raises(DatasetError, match=r"\['cow'\]"):
        ImageFolder(tmp_path / "val", class_names=["cat", "dog"])


def test_train_val_test_folders_use_the_training_classes(tmp_path):
    write_image_folder(tmp_path / "train", {"cat": 3, "dog": 3, "eel": 2}, size=(8, 6))
    write_image_folder(tmp_path / "val", {"dog": 2}, size=(8, 6))  # a validation folder may lack classes
    write_image_folder(tmp_path / "test", {"cat": 1, "eel": 1}, size=(8, 6))
    splits = load_image_folder(tmp_path, val_fraction=0.5, seed=1)
    assert splits.layout == "folders" and splits.class_names == ["cat", "dog", "eel"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 2, 2)
    assert splits.val.labels.tolist() == [1, 1]
    assert sorted(splits.test.labels.tolist()) == [0, 2]
    (tmp_path / "test").rename(tmp_path / "unused")
    (tmp_path / "val").rename(tmp_path / "unused2")
    splits = load_image_folder(tmp_path, val_fraction=0.5, seed=1)  # no val/: held out from train/ per class
    assert splits.test is None and (len(splits.train), len(splits.val)) == (3, 5)
    assert np.bincount(splits.val.labels).tolist() == [2, 2, 1]  # int(n * 0.5 + 0.5): 2 of 3, 2 of 3, 1 of 2


def test_fraction_split_is_seeded_stratified_and_disjoint(tmp_path):
    write_image_folder(tmp_path, {"cat": 10, "dog": 7, "eel": 5}, size=(6, 6))
    a = load_image_folder(tmp_path, val_fraction=0.2, test_fraction=0.1, seed=4)
    b = load_image_folder(tmp_path, val_fraction=0.2, test_fraction=0.1, seed=4)
    c = load_image_folder(tmp_path, val_fraction=0.2, test_fraction=0.1, seed=5)
    assert a.layout == "fraction" and a.digest() == b.digest() != c.digest()
    for s in ("train", "val", "test"):
        assert getattr(a, s).paths == getattr(b, s).paths
    # per class: int(n * f + 0.5) held out; cat 10 -> 2 val + 1 test, dog 7 -> 1 + 1, eel 5 -> 1 + 1 (0.5 rounds up)
    assert np.bincount(a.val.labels, minlength=3).tolist() == [2, 1, 1]
    assert np.bincount(a.test.labels, minlength=3).tolist() == [1, 1, 1]
    every = a.train.paths + a.val.paths + a.test.paths
    assert len(set(every)) == 22 == len(every)
    assert [a.class_names[label] for label in a.train.labels] == [os.path.basename(os.path.dirname(p))
                                                                  for p in a.train.paths]
    assert len(set(a.train.labels[:6].tolist())) > 1  # a shuffled order: the first images are not all one class
    folder = ImageFolder(tmp_path)
    assert split_by_fraction(folder, (0.2,), 4) == split_by_fraction(folder, (0.2,), 4)
    Image.fromarray(photo(6, 6, 99)).save(tmp_path / "dog" / "new.png")
    assert load_image_folder(tmp_path, 0.2, 0.1, seed=4).digest() != a.digest()


def test_too_small_classes_and_empty_validation_are_reported(tmp_path):
    write_image_folder(tmp_path / "one", {"cat": 1, "dog": 4}, size=(6, 6))
    with pytest.raises(DatasetError, match="'cat' has 1 image"):
        load_image_folder(tmp_path / "one", val_fraction=0.5, test_fraction=0.0)
    write_image_folder(tmp_path / "few", {"cat": 2, "dog": 2}, size=(6, 6))
    with pytest.raises(DatasetError, match="no validation images"):
        load_image_folder(tmp_path / "few", val_fraction=0.1, test_fraction=0.0)
    with pytest.raises(ValueError, match="val_fraction"):
        load_image_folder(tmp_path / "few", val_fraction=1.0)


# ---- crop plans ------------------------------------------------------------------
def _reference_random_box(width, height, u, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop.get_params, written out, with the uniforms given."""
    for attempt in range(10):
        area = width * height * (scale[0] + (scale[1] - scale[0]) * u[2 * attempt])
        aspect = math.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[2 * attempt + 1])
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 1 <= w <= width and 1 <= h <= height:
            top, left = math.floor(u[20] * (height - h + 1)), math.floor(u[21] * (width - w + 1))
            return (left, top, left + w, top + h), u[22] < 0.5
    w, h = width, height
    if width / height < ratio[0]:
        h = round(width / ratio[0])
    elif width / height > ratio[1]:
        w = round(height * ratio[1])
    return ((width - w) // 2, (height - h) // 2, (width - w) // 2 + w, (height - h) // 2 + h), u[22] < 0.5


def test_random_resized_crop_boxes_match_the_reference_and_their_ranges():
    plan = RandomResizedCrop(16)
    rng = np.random.default_rng(0)
    areas, aspects, flips = [], [], []
    for width, height in [(500, 375), (375, 500), (64, 64), (33, 17)]:
        for _ in range(300):
            u = rng.random(plan.draws)
            box, flip = plan.box(width, height, u)
            assert (box, flip) == _reference_random_box(width, height, u)
            left, top, right, bottom = box
            assert 0 <= left < right <= width and 0 <= top < bottom <= height
            areas.append((right - left) * (bottom - top) / (width * height))
            if min(right - left, bottom - top) >= 20:  # rounding moves tiny boxes' aspect further
                aspects.append((right - left) / (bottom - top))
            flips.append(flip)
    assert 0.06 < min(areas) and max(areas) <= 1.0 and 0.3 < np.mean(areas) < 0.7
    assert 0.72 < min(aspects) and max(aspects) < 1.39 and 0.4 < np.mean(flips) < 0.6
    # a hand-worked case: area 0.08 + 0.92 * 0.5 = 54% of 100x80, aspect 1 -> 66x66; top int(0.5 * 15) = 7
    u = np.full(plan.draws, 0.5)
    u[-2], u[-1] = 0.25, 0.7  # left int(0.25 * 35) = 8; no flip
    assert plan.box(100, 80, u) == ((8, 7, 74, 73), False)
    # nothing fits a 1000x10 strip at scale >= 0.5: the central box with the widest allowed aspect, 13x10
    assert RandomResizedCrop(8, scale=(0.5, 1.0)).box(1000, 10, np.zeros(plan.draws)) == ((493, 0, 506, 10), True)


def _triangle_taps(in_size, start, stop, out_size):
    """Pillow's bilinear weights for ``out_size`` samples of [start, stop): a triangle as wide as the scale."""
    scale = (stop - start) / out_size
    support, stretch = max(scale, 1.0), 1.0 / max(scale, 1.0)
    taps = np.zeros((out_size, in_size))
    for x in range(out_size):
        center = start + (x + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), in_size)
        k = np.arange(lo, hi)
        w = np.maximum(0.0, 1.0 - np.abs((k - center + 0.5) * stretch))
        taps[x, lo:hi] = w / w.sum()
    return taps


def _reference_crop(pixels, box, size, flip):
    """The crop as a float computation: rows then columns of triangle taps (rounded between, as Pillow)."""
    across = _triangle_taps(pixels.shape[1], box[0], box[2], size)
    down = _triangle_taps(pixels.shape[0], box[1], box[3], size)
    rows = np.round(np.einsum("xw,hwc->hxc", across, pixels.astype(np.float64)))
    out = np.clip(np.round(np.einsum("yh,hxc->yxc", down, rows)), 0, 255)
    return (out[:, ::-1] if flip else out).transpose(2, 0, 1)


@pytest.mark.parametrize("plan", [RandomResizedCrop(16), RandomResizedCrop(24, scale=(0.3, 0.5)),
                                  ResizeCenterCrop(16), ResizeCenterCrop(12, resize_size=20)], ids=repr)
def test_decoded_crops_match_a_numpy_triangle_filter(tmp_path, plan):
    written = write_image_folder(tmp_path, {"x": 4}, size=(41, 29))
    rng = np.random.default_rng(1)
    for path, pixels in written.items():
        u = rng.random(plan.draws)
        out = np.empty((3, plan.size, plan.size), np.uint8)
        decode_crop(path, plan, u, out)
        box, flip = plan.box(41, 29, u)
        expected = _reference_crop(pixels, box, plan.size, flip)
        diff = np.abs(out - expected)
        assert diff.max() <= 1 and diff.mean() < 0.2, (path, box, flip)


def test_centre_crop_equals_resizing_the_whole_image_then_cropping(tmp_path):
    for width, height in [(41, 29), (29, 41), (50, 50)]:
        pixels = photo(width, height, 3)
        path = tmp_path / f"{width}x{height}.png"
        Image.fromarray(pixels).save(path)
        plan = ResizeCenterCrop(16, resize_size=20)
        out = np.empty((3, 16, 16), np.uint8)
        decode_crop(str(path), plan, None, out)
        short = min(width, height)
        new = (20, int(20 * height / width)) if width == short else (int(20 * width / height), 20)
        whole = np.asarray(Image.fromarray(pixels).resize(new, Image.Resampling.BILINEAR))
        top, left = int(round((new[1] - 16) / 2)), int(round((new[0] - 16) / 2))
        expected = whole[top:top + 16, left:left + 16].transpose(2, 0, 1)
        assert np.abs(out.astype(int) - expected).max() <= 1


def test_large_jpegs_are_decoded_in_draft_mode(tmp_path, monkeypatch):
    from PIL import JpegImagePlugin

    path = tmp_path / "big.jpg"
    Image.fromarray(photo(640, 480, 5)).save(path, quality=95)
    scales, draft = [], JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = draft(self, mode, size)
        scales.append(self.decoderconfig[0] if result is not None else 1)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    plan = ResizeCenterCrop(32)  # 480 -> 37 pixels: room for 1/8 (480 / 8 = 60 >= 37)
    drafted = np.empty((3, 32, 32), np.uint8)
    decode_crop(str(path), plan, None, drafted)
    assert scales == [8]
    with Image.open(path) as image:
        box, _ = plan.box(640, 480)
        full = np.asarray(image.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR, box=box))
    assert np.abs(drafted.astype(int) - full.transpose(2, 0, 1)).mean() < 4  # DCT scaling is a fair downscale
    assert image_ops.draft_scale((0, 0, 100, 60), 32) == 1 and image_ops.draft_scale((0, 0, 130, 70), 32) == 2
    assert image_ops.draft_scale((0, 0, 10, 10), 32) == 1  # an upscale


def test_every_image_mode_becomes_rgb(tmp_path):
    rgb = photo(16, 16, 7)
    alpha = np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)
    gray = rgb[:, :, 0]
    palette = Image.fromarray(rgb).quantize(16)
    images = {"rgba.png": (Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), rgb),
              "gray.png": (Image.fromarray(gray, "L"), np.dstack([gray] * 3)),
              "la.png": (Image.fromarray(np.dstack([gray, alpha]), "LA"), np.dstack([gray] * 3)),
              "pal.png": (palette, np.asarray(palette.convert("RGB"))),
              "bmp.bmp": (Image.fromarray(rgb), rgb),
              "lossless.webp": (Image.fromarray(rgb), rgb)}
    trans = palette.copy()
    trans.info["transparency"] = bytes([0, 128] + [255] * 14)  # per-entry alpha: read back as bytes
    images["pal_transparent.png"] = (trans, np.asarray(palette.convert("RGB")))
    plan = ResizeCenterCrop(16, resize_size=16)  # the identity on a 16x16 image
    for name, (image, expected) in images.items():
        image.save(tmp_path / name, **({"lossless": True} if name.endswith("webp") else {}))
        out = np.empty((3, 16, 16), np.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. Pillow's warning on palette transparency converted straight to RGB
            decode_crop(str(tmp_path / name), plan, None, out)
        np.testing.assert_array_equal(out, expected.transpose(2, 0, 1), err_msg=name)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    out = np.empty((3, 16, 16), np.uint8)
    decode_crop(str(tmp_path / "cmyk.jpg"), plan, None, out)
    assert np.abs(out.astype(int) - rgb.transpose(2, 0, 1)).mean() < 6


def test_normalize_matches_the_formula(device):
    from minidl import backend

    x = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 5), dtype=np.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    y = normalize(backend.to_device(x, device), mean, std)
    assert y.dtype == np.float32 and backend.device_of(y) == backend.parse_device(device)
    expected = (x / 255.0 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(backend.to_numpy(y), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(normalize(x.astype(np.float64), mean, std), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="normalize: expected 3 means"):
        normalize(x, [0.5, 0.5], [1, 1])
    with pytest.raises(ValueError, match="positive stds"):
        normalize(x, mean, [0.2, 0.0, 0.2])
