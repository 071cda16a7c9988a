"""A folder of your own images: one subfolder per class, split into train/val/test.

The layout is the one torchvision's ``ImageFolder`` and Keras's
``image_dataset_from_directory`` read::

    root/cat/0001.jpg            class indices follow the sorted folder names:
    root/cat/holiday/0002.png    cat -> 0, dog -> 1 (files in nested folders count
    root/dog/a.webp              for the class folder they are in)

Only files with an image extension (``IMAGE_EXTENSIONS``) are taken; hidden files
and folders (a leading dot) and everything else are skipped and counted, so a
stray ``notes.txt`` or ``.DS_Store`` costs nothing. Whether a file really decodes
is found out by the loader (``ImageFolderLoader``), which skips and reports the
ones that do not.

Splits (``load_image_folder``): ``root/train`` + ``root/val`` (+ ``root/test``) when
``root/train`` exists, else one folder of classes split per class by a seeded
fraction. Scanning only lists names; nothing here opens an image or imports Pillow.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLIT_FOLDERS = ("train", "val", "test")


class ImageFolder:
    """The images under ``root`` as (path, class index) pairs, in sorted order.

    Args:
        root: a folder holding one subfolder per class.
        class_names: the classes to map to indices 0..K-1 (e.g. a training split's,
            for its validation folder); None takes the sorted subfolder names. A
            subfolder that is not among them is an error.

    Attributes:
        root (Path), class_names (list of str), paths (list of str, absolute),
        labels (N,) int64, skipped (list of str: hidden files and non-images).

    Raises:
        DatasetError: when ``root`` is missing, has no class folders, or a class
            folder holds no image.
    """

    def __init__(self, root, class_names: list | None = None):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"ImageFolder: {self.root} is not a folder; expected a folder with one subfolder "
                               "per class")
        found = sorted(entry.name for entry in os.scandir(self.root)
                       if entry.is_dir() and not entry.name.startswith("."))
        if not found:
            raise DatasetError(f"ImageFolder: {self.root} has no class subfolders; put each class's images in a "
                               f"folder of its own ({self.root}/<class>/<image>)")
        self.class_names = list(found) if class_names is None else list(class_names)
        unknown = sorted(set(found) - set(self.class_names))
        if unknown:
            raise DatasetError(f"ImageFolder: {self.root} has class folders {unknown} that the training images do "
                               f"not have (their classes: {self.class_names})")
        self.paths, labels, self.skipped = [], [], []
        for index, name in enumerate(self.class_names):
            if name not in found:
                continue  # a validation folder may lack a class
            images = _scan_class(self.root / name, self.skipped)
            if not images and class_names is None:
                raise DatasetError(f"ImageFolder: the class folder {self.root / name} holds no images "
                                   f"({', '.join(IMAGE_EXTENSIONS)}); add some or remove the folder")
            self.paths.extend(images)
            labels.extend([index] * len(images))
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices) -> "ImageFolder":
        """The images at ``indices`` (in that order), same root and classes."""
        part = object.__new__(ImageFolder)
        part.root, part.class_names, part.skipped = self.root, self.class_names, []
        part.paths = [self.paths[i] for i in indices]
        part.labels = self.labels[np.asarray(indices, dtype=np.int64)]
        return part

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, {len(self)} images, {len(self.class_names)} classes)"


def _scan_class(folder: Path, skipped: list) -> list:
    """Absolute paths of the images under ``folder`` (recursively), sorted; the rest goes to ``skipped``."""
    images = []
    for directory, subdirs, files in os.walk(folder, followlinks=True):
        hidden = sorted(d for d in subdirs if d.startswith("."))
        skipped.extend(os.path.join(directory, d) for d in hidden)
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))  # sorted: a stable walk order
        for name in sorted(files):
            path = os.path.join(directory, name)
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(path):
                images.append(path)
            else:
                skipped.append(path)
    return sorted(images)


@dataclass
class FolderSplits:
    """The train/validation/test images of a folder data set.

    ``test`` is None when the folder has no test images (no ``root/test`` and no
    test fraction); callers then test on ``val``. Each split's order is a seeded
    shuffle of its files, so its first N images are a random sample of all classes
    (what ``--limit-train N`` takes), not the first class only. ``unreadable``
    collects the files that loaders over these splits failed to decode (path ->
    reason), so that a run reports each one once (see ``folder_loaders``).
    """

    root: Path
    class_names: list
    train: ImageFolder
    val: ImageFolder
    test: ImageFolder | None
    layout: str  # "folders" (root/train, root/val...) or "fraction" (one folder, split by seed)
    skipped: list
    unreadable: dict = field(default_factory=dict)

    def digest(self) -> str:
        """MD5 over every split's relative paths and labels: equal iff the same files play the same roles."""
        md5 = hashlib.md5()
        for name, split in (("train", self.train), ("val", self.val), ("test", self.test)):
            for path, label in zip(split.paths if split else [], split.labels if split else []):
                md5.update(f"{name}\t{os.path.relpath(path, self.root)}\t{label}\n".encode())
        return md5.hexdigest()


def split_by_fraction(folder: ImageFolder, fractions, seed: int) -> list:
    """Split ``folder`` per class into parts of the given fractions plus the rest.

    Each class's images are shuffled with ``default_rng([seed, class_index])`` and
    cut into ``int(n * f + 0.5)`` images per fraction, in order; the remainder is
    the last part. Per class, so every part keeps the class balance, and a class's
    split does not move when other classes gain or lose images.

    Args:
        folder: the images to split.
        fractions: e.g. (0.1, 0.1) for validation and test; each in [0, 1).
        seed: the split's seed.

    Returns:
        ``len(fractions) + 1`` lists of indices into ``folder``: the fractions' parts,
        then the rest (the training images).
    """
    parts = [[] for _ in range(len(fractions) + 1)]
    for label in range(len(folder.class_names)):
        members = np.flatnonzero(folder.labels == label)
        members = members[np.random.default_rng([seed, label]).permutation(len(members))]
        start = 0
        for part, fraction in zip(parts, fractions):
            count = int(len(members) * fraction + 0.5)
            part.extend(members[start:start + count].tolist())
            start += count
        if members.size and start >= len(members):
            raise DatasetError(f"split_by_fraction: class {folder.class_names[label]!r} has {len(members)} "
                               f"image(s), too few to hold out {' + '.join(map(str, fractions))} and keep one "
                               "for training; add images or lower the fractions")
        parts[-1].extend(members[start:].tolist())
    return parts


def _shuffled(folder: ImageFolder, seed: int, split_id: int) -> ImageFolder:
    return folder.subset(np.random.default_rng([seed, 7, split_id]).permutation(len(folder)))


def load_image_folder(root, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> FolderSplits:
    """Find the train/validation/test images under ``root``.

    Two layouts:

    * ``root/train/<class>/...`` exists: it is the training set; ``root/val`` (or
      ``root/validation``) the validation set, else ``val_fraction`` of the
      training images per class (seeded); ``root/test`` the test set if present.
      Classes come from ``root/train``; the other folders may lack some.
    * otherwise ``root/<class>/...``: ``val_fraction`` and ``test_fraction`` of
      each class's images are held out (seeded; see ``split_by_fraction``).

    Args:
        root: the data set folder.
        val_fraction, test_fraction: held-out fractions, in [0, 1).
        seed: seed of the split and of each split's order.

    Returns:
        FolderSplits.

    Raises:
        DatasetError: a missing or empty folder, a class too small to split, or
            an empty validation split.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"load_image_folder: {name} must be in [0, 1), got {value}")
    root = Path(root).expanduser()
    if (root / "train").is_dir():
        train = ImageFolder(root / "train")
        val_dir = next((root / n for n in ("val", "validation") if (root / n).is_dir()), None)
        test = ImageFolder(root / "test", train.class_names) if (root / "test").is_dir() else None
        if val_dir is not None:
            val = ImageFolder(val_dir, train.class_names)
        else:
            val_idx, train_idx = split_by_fraction(train, (val_fraction,), seed)
            train, val = train.subset(train_idx), train.subset(val_idx)
        layout, skipped = "folders", train.skipped + val.skipped + (test.skipped if test else [])
    else:
        everything = ImageFolder(root)
        val_idx, test_idx, train_idx = split_by_fraction(everything, (val_fraction, test_fraction), seed)
        train, val = everything.subset(train_idx), everything.subset(val_idx)
        test = everything.subset(test_idx) if test_idx else None
        layout, skipped = "fraction", everything.skipped
    if len(val) == 0:
        raise DatasetError(f"load_image_folder: no validation images under {root}; add a val/ folder or raise the "
                           f"validation fraction (now {val_fraction})")
    if test is not None and len(test) == 0:
        test = None
    return FolderSplits(root=root, class_names=list(train.class_names), train=_shuffled(train, seed, 0),
                        val=_shuffled(val, seed, 1), test=_shuffled(test, seed, 2) if test is not None else None,
                        layout=layout, skipped=skipped)
