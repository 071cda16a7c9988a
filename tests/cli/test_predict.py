"""``minidl predict``: your own images through a trained checkpoint, on images the tests write.

The checkpoints are tiny "cifar" AlexNets (widths of 4 and 8), so a whole run
takes well under a second; one real process checks the command line end to end.
"""
import os
import re
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

import minidl
import minidl.functional as F
from minidl.checkpoint import save_checkpoint
from minidl.data import build_transform
from minidl.models import AlexNet

from support.commands import ROOT, minidl_command
from minidl.cli import datasets, predict, recipes

Image = pytest.importorskip("PIL.Image", reason="minidl predict needs Pillow (the images extra)")

COMMAND = minidl_command("predict")
WIDTHS = [4, 4, 4, 4, 4, 8, 8]


def _model(num_classes=10, seed=0):
    return AlexNet(num_classes=num_classes, variant="cifar", widths=WIDTHS, seed=seed)


def _checkpoint(path, model, **settings):
    save_checkpoint(path, {"model": model.state_dict(), "settings": {"variant": "cifar", "widths": WIDTHS,
                                                                      **settings}})
    return path


@pytest.fixture
def weights(tmp_path):
    return _checkpoint(tmp_path / "best.npz", _model())


def _pixels(rng, h, w, channels=3):
    return rng.integers(0, 256, size=(h, w, channels) if channels > 1 else (h, w), dtype=np.uint8)


def _run(argv, capsys):
    code = predict.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, [line for line in err.splitlines() if line]


def _results(out) -> dict:
    """{image path: [(class, percent), ...]} from the printed results."""
    results, current = {}, None
    for line in out.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            current = results.setdefault(line[:-1], [])
        else:
            rank, name, percent = re.fullmatch(r"\s+(\d+)\. (\S+)\s+(\d+\.\d\d)%", line).groups()
            assert int(rank) == len(current) + 1
            current.append((name, float(percent)))
    return results


def test_probabilities_are_the_models_on_the_training_transform(tmp_path, weights, capsys):
    rng = np.random.default_rng(0)
    pixels = _pixels(rng, 32, 32)
    Image.fromarray(pixels).save(tmp_path / "cat.png")
    code, out, err = _run([tmp_path / "cat.png", "--weights", weights], capsys)
    assert code == 0 and err == []
    [(path, top)] = _results(out).items()
    assert path == str(tmp_path / "cat.png") and len(top) == 5
    # the same image through the model by hand: CHW layout, per-image standardisation, eval mode
    model = _model().eval()
    x = build_transform(32)(pixels.transpose(2, 0, 1)[None])
    with minidl.no_grad():
        probs = F.softmax(model(x), axis=-1).numpy()[0]
    order = np.argsort(-probs)[:5]
    assert [name for name, _ in top] == [predict.CIFAR10_CLASSES[i] for i in order]
    assert np.allclose([p for _, p in top], 100 * probs[order], atol=0.006)


@pytest.mark.parametrize("variant", ["seed", "paper", "cifar"])
def test_evaluation_transform_is_the_training_runs(variant):
    settings = dict(recipes.RECIPES[variant], variant=variant, seed=0, limit_train=None, limit_val=None,
                    limit_test=None)
    images, labels = np.zeros((2, 3, 32, 32), np.uint8), np.zeros(2, np.int64)
    data = SimpleNamespace(train_images=images, train_labels=labels, val_images=images, val_labels=labels,
                           test_images=images, test_labels=labels, label_names=list(predict.CIFAR10_CLASSES))
    _, val, test = datasets.make_loaders(settings, data, "cpu")  # records the paper's pixel_mean
    transform = predict.evaluation_transform(settings)
    assert repr(transform) == repr(val.transform) == repr(test.transform)
    np.testing.assert_array_equal(transform(images + 7), val.transform(images + 7))


def test_read_image_layout_crop_and_modes(tmp_path):
    rng = np.random.default_rng(1)
    pixels = _pixels(rng, 32, 32)
    Image.fromarray(pixels).save(tmp_path / "exact.png")
    assert np.array_equal(predict.read_image(tmp_path / "exact.png"), pixels.transpose(2, 0, 1))
    # an odd, wide size: the centred square is kept, the sides are cropped away
    wide = np.zeros((32, 96, 3), np.uint8)
    wide[:, :, 0] = 255
    wide[:, 32:64] = (0, 200, 0)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert np.array_equal(predict.read_image(tmp_path / "wide.png"), np.broadcast_to(
        np.array([0, 200, 0], np.uint8)[:, None, None], (3, 32, 32)))
    # any size comes out 32x32
    Image.fromarray(_pixels(rng, 7, 53)).save(tmp_path / "odd.jpg")
    Image.fromarray(_pixels(rng, 300, 200)).save(tmp_path / "big.bmp")
    for name in ("odd.jpg", "big.bmp"):
        image = predict.read_image(tmp_path / name)
        assert image.shape == (3, 32, 32) and image.dtype == np.uint8
    # grayscale and 16-bit grayscale: three equal channels, 16 bits scaled rather than clipped
    gray = _pixels(rng, 32, 32, channels=1)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    assert np.array_equal(predict.read_image(tmp_path / "gray.png"), np.stack([gray] * 3))
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    assert np.array_equal(predict.read_image(tmp_path / "gray16.png"), np.stack([gray] * 3))
    # palette: the palette's colours
    Image.fromarray(pixels).convert("P").save(tmp_path / "palette.gif")
    palette = Image.open(tmp_path / "palette.gif").convert("RGB")
    assert np.array_equal(predict.read_image(tmp_path / "palette.gif"), np.asarray(palette).transpose(2, 0, 1))
    # transparency shows white: a fully transparent black image, and a half-transparent one
    rgba = np.zeros((32, 32, 4), np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    assert (predict.read_image(tmp_path / "clear.png") == 255).all()
    rgba[..., 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "half.png")
    assert (np.abs(predict.read_image(tmp_path / "half.png").astype(int) - 127) <= 1).all()


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[:16] = (255, 0, 0)  # stored: red on top, blue below
    pixels[16:] = (0, 0, 255)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 3  # Orientation: rotate 180 degrees to show it upright
    image.save(tmp_path / "upside_down.jpg", exif=exif, quality=95)
    upright = predict.read_image(tmp_path / "upside_down.jpg")
    assert upright[2, :12].mean() > 200 and upright[0, :12].mean() < 50  # blue on top now
    assert upright[0, 20:].mean() > 200


def test_class_names_from_the_checkpoint(tmp_path, capsys):
    names = ["apple", "banana", "cherry"]
    weights = _checkpoint(tmp_path / "fruit.npz", _model(num_classes=3), class_names=names)
    Image.fromarray(_pixels(np.random.default_rng(2), 40, 40)).save(tmp_path / "fruit.png")
    code, out, err = _run([tmp_path / "fruit.png", "--weights", weights], capsys)
    assert code == 0 and err == []
    [top] = _results(out).values()
    assert sorted(name for name, _ in top) == names  # only three classes to show
    assert abs(sum(p for _, p in top) - 100) < 0.02


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("text", "is not a minidl checkpoint (not an .npz file)"),
    ("foreign_npz", "is not a minidl checkpoint"),
    ("bare_state", "not one of a training run"),
    ("no_names", "has 3 classes but no class names"),
    ("wrong_widths", "does not fit the model its settings describe"),
])
def test_bad_weights_one_line(tmp_path, capsys, case, message):
    path = tmp_path / "weights.npz"
    if case == "text":
        path.write_text("hello")
    elif case == "foreign_npz":
        np.savez(path, conv1=np.zeros(3))
    elif case == "bare_state":
        save_checkpoint(path, {"model": _model().state_dict()})
    elif case == "no_names":
        _checkpoint(path, _model(num_classes=3))
    elif case == "wrong_widths":
        save_checkpoint(path, {"model": _model().state_dict(), "settings": {"variant": "cifar"}})
    Image.fromarray(_pixels(np.random.default_rng(3), 32, 32)).save(tmp_path / "ok.png")
    code, out, err = _run([tmp_path / "ok.png", "--weights", path], capsys)
    assert code == 1 and out == ""
    assert len(err) == 1 and err[0].startswith("minidl predict: error: --weights: ") and message in err[0], err


def test_command_line_good_and_bad_images(tmp_path, weights):
    rng = np.random.default_rng(4)
    Image.fromarray(_pixels(rng, 32, 32, channels=1)).save(tmp_path / "gray.png")
    Image.fromarray(_pixels(rng, 50, 31)).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(_pixels(rng, 9, 64, channels=4), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(_pixels(rng, 120, 90)).save(tmp_path / "photo.jpg", quality=90)
    (tmp_path / "notes.jpg").write_text("this is not a picture")
    data = (tmp_path / "photo.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
    good = ["gray.png", "palette.png", "rgba.png", "photo.jpg"]
    bad = {"notes.jpg": "not an image Pillow can read", "missing.png": "no such file",
           "cut.jpg": "cannot be decoded"}
    argv = [str(tmp_path / name) for name in ["gray.png", "notes.jpg", "palette.png", "missing.png", "rgba.png",
                                              "cut.jpg", "photo.jpg"]]
    done = subprocess.run([*COMMAND, *argv, "--weights", str(weights)], capture_output=True,
                          text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = done.stderr.strip().splitlines()
    assert len(errors) == len(bad)
    for line, (name, message) in zip(errors, bad.items()):
        assert line.startswith(f"minidl predict: error: {tmp_path / name}: ") and message in line, line
    results = _results(done.stdout)
    assert list(results) == [str(tmp_path / name) for name in good]
    for top in results.values():
        assert len(top) == 5 and all(name in predict.CIFAR10_CLASSES for name, _ in top)
        percents = [p for _, p in top]
        assert percents == sorted(percents, reverse=True) and sum(percents) <= 100.01


def test_all_good_exits_zero_and_bad_arguments_exit_two(tmp_path, weights, capsys):
    Image.fromarray(_pixels(np.random.default_rng(5), 32, 32)).save(tmp_path / "a.png")
    assert _run([tmp_path / "a.png", "--weights", weights, "--top", "2"], capsys)[0] == 0
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(tmp_path / "a.png"), "--weights", str(weights), "--top", "0"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(tmp_path / "a.png")])  # --weights is required
    assert exit_info.value.code == 2
