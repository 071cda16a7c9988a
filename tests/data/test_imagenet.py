"""minidl.data.imagenet: the 1,000 class names (torchvision's, in class-index order) and the normalisation."""
from importlib import resources
from pathlib import Path

import pytest

from minidl.data import imagenet


def test_one_thousand_distinct_names_in_class_index_order():
    names = imagenet.CLASS_NAMES
    assert isinstance(names, tuple) and len(names) == imagenet.NUM_CLASSES == 1000
    assert len(set(names)) == 1000
    assert all(name == name.strip() and name and "\n" not in name for name in names)
    known = {0: "tench", 1: "goldfish", 2: "great white shark", 134: "crane bird", 151: "Chihuahua",
             207: "golden retriever", 281: "tabby", 285: "Egyptian cat", 409: "analog clock", 517: "crane",
             638: "maillot", 639: "maillot tank suit", 817: "sports car", 954: "banana", 999: "toilet tissue"}
    assert {index: names[index] for index in known} == known


def test_normalisation_is_torchvisions():
    assert imagenet.MEAN == (0.485, 0.456, 0.406) and imagenet.STD == (0.229, 0.224, 0.225)
    assert (imagenet.RESIZE_SIZE, imagenet.CROP_SIZE) == (256, 224)


def test_names_ship_as_package_data():
    data = resources.files("minidl.data").joinpath("imagenet_classes.txt")
    assert data.is_file() and data.read_text(encoding="utf-8").count("\n") == 1000
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert "imagenet_classes.txt" in pyproject["tool"]["setuptools"]["package-data"]["minidl.data"]


def test_damaged_names_file_is_reported(monkeypatch):
    class Damaged:
        def joinpath(self, name):
            return self

        def read_text(self, encoding):
            return "tench\ngoldfish\n"

    monkeypatch.setattr(imagenet.resources, "files", lambda package: Damaged())
    with pytest.raises(RuntimeError, match="holds 2 names .* expected 1000 distinct; reinstall minidl"):
        imagenet._read_class_names()
