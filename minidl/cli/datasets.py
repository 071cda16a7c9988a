"""The data side of ``minidl train``: CIFAR-10 or a folder of images (--dataset folder).

The folder's flags, settings, loading and summary, and for both data sets the
loaders and the fingerprint that data-parallel processes compare; the data work
itself is minidl's (``minidl.data.load_cifar10``, ``load_image_folder``,
``channel_mean_std``, ``folder_loaders``). A folder run stores in its settings
(checkpoint.npz, results.json) what a later resume or ``minidl predict`` needs to
see images exactly as training did: ``class_names``, ``normalize`` with
``mean``/``std`` (0..1 scale), and ``folder_digest``, which a resume checks so
that it trains on the same files.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys

import numpy as np

from ..data import (DataLoader, DatasetError, FolderSplits, build_transform, channel_mean_std, folder_loaders,
                         load_cifar10, load_image_folder)
from ..distributed.launch import rank0_first
from .models import input_size

# run settings of folder runs and their defaults (a resume must not change them)
FOLDER_SETTINGS = {"val_fraction": 0.1, "test_fraction": 0.1, "normalize": "channel", "mean": None, "std": None}
WHITENING_IMAGES = 5000   # airbench94's whitening layer starts from the first 5,000 training images


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a float, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _three_floats(text):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected 3 comma-separated numbers (R,G,B), got {text!r}")
    return values


def _workers(text):
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text!r}")
    return int(text)


def add_arguments(parser) -> None:
    """The flags of --dataset folder, in a group of their own."""
    group = parser.add_argument_group("your own images (--dataset folder --data-dir PATH)")
    group.add_argument("--dataset", choices=["cifar10", "folder"], help="cifar10 (default), or folder: --data-dir "
                       "holds <class>/<image> folders, or train/ and val/ (and test/) folders of them")
    group.add_argument("--val-fraction", type=_fraction, help="share of each class held out for validation when "
                       "there is no val/ folder (default 0.1)")
    group.add_argument("--test-fraction", type=_fraction, help="share of each class held out for testing when "
                       "there is no train/ folder (default 0.1; 0 tests on the validation images)")
    group.add_argument("--normalize", choices=["channel", "image"], help="per-channel mean/std (measured on the "
                       "training images unless --mean/--std; default), or per-image standardisation")
    group.add_argument("--mean", type=_three_floats, help="per-channel mean R,G,B on the 0..1 scale")
    group.add_argument("--std", type=_three_floats, help="per-channel std R,G,B on the 0..1 scale")
    group.add_argument("--workers", type=_workers, help="image decoding threads (default: one per core, at most 8)")
    group.add_argument("--on-bad-image", choices=["skip", "raise"], default="skip", help="an image that does not "
                       "decode is reported and skipped (default), or stops the run with an error (raise)")


def settings_problem(given: dict, settings: dict) -> str | None:
    """Add the folder defaults to a new run's ``settings``; returns what is wrong with the flags, if anything."""
    if given["dataset"] != "folder":
        wrong = [key for key in FOLDER_SETTINGS if given[key] is not None]
        return f"--{wrong[0].replace('_', '-')} applies to --dataset folder only" if wrong else None
    if given["val_size"] is not None:
        return "--val-size applies to --dataset cifar10; use --val-fraction (or a val/ folder)"
    del settings["val_size"]
    settings.update({key: default if given[key] is None else given[key] for key, default in FOLDER_SETTINGS.items()})
    if (settings["mean"] is None) != (settings["std"] is None):
        return "--mean and --std go together"
    return None


def load_folder(args, settings: dict, main: bool = True):
    """The folder's splits; records (new run) or checks (resume) its classes, files and channel statistics.

    ``main``: this process reports (the others of a data-parallel run stay quiet).

    Returns:
        a ``FolderSplits``.
    Raises:
        DatasetError: no --data-dir, an unusable folder, or (on resume) other files than the run's.
    """
    if not args.data_dir:
        raise DatasetError("--dataset folder needs --data-dir PATH: a folder of <class>/<image> folders")
    splits = load_image_folder(args.data_dir, settings["val_fraction"], settings["test_fraction"], settings["seed"])
    if "folder_digest" in settings and settings["folder_digest"] != splits.digest():
        raise DatasetError(f"the images under {args.data_dir} are not the ones the run started with (classes "
                           f"{settings['class_names']} then, {splits.class_names} now); resume needs the same "
                           "files, or start a new run in another --out")
    settings["class_names"], settings["folder_digest"] = splits.class_names, splits.digest()
    if splits.skipped and main:
        print(f"skipped {len(splits.skipped)} file(s) under {args.data_dir} that are hidden or not images (e.g. "
              f"{splits.skipped[0]})", file=sys.stderr, flush=True)
    if settings["normalize"] == "channel" and settings["mean"] is None:
        mean, std = channel_mean_std(splits.train, input_size(settings), seed=settings["seed"],
                                     workers=args.workers, on_bad_image=args.on_bad_image,
                                     bad_paths=splits.unreadable, **({} if main else {"log": _quiet}))
        settings["mean"], settings["std"] = [round(v, 6) for v in mean], [round(v, 6) for v in std]
    return splits


def _quiet(message: str) -> None:
    pass


def describe(settings: dict, test) -> list:
    """The summary line of a folder run (none for CIFAR-10)."""
    if settings.get("dataset") != "folder":
        return []
    names = settings["class_names"]
    norm = (f"mean {settings['mean']} std {settings['std']}" if settings["normalize"] == "channel" else
            "per-image standardisation")
    return [f"  folder: {len(names)} classes ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''}); {norm}"
            + ("" if test.name == "test" else "; no test images: testing on the validation images")]


def make_loaders(settings: dict, data, device, shard=None, **folder_options):
    """Train, validation and test loaders; the transform resizes to the model's input size.

    ``shard=(rank, size)`` serves this process its slice of every global batch.
    ``folder_options`` (workers, on_bad_image) go to the loaders of a folder; CIFAR-10 has none.
    The validation loader is None when there are no validation images (``--val-size 0``).
    """
    size = input_size(settings)
    if isinstance(data, FolderSplits):
        return folder_loaders(data, size, settings["batch_size"], augment=settings["augment"], seed=settings["seed"],
                              device=device, shard=shard, mean=settings["mean"], std=settings["std"],
                              limits=[settings[f"limit_{s}"] for s in ("train", "val", "test")], **folder_options)

    def first(images, labels, limit):
        return (images, labels) if limit is None else (images[:limit], labels[:limit])

    batch, seed = settings["batch_size"], settings["seed"]
    # labels checked once, here on the host, so the loss never reads them back from a GPU
    common = dict(seed=seed, device=device, shard=shard, num_classes=len(data.label_names))
    train_images, train_labels = first(data.train_images, data.train_labels, settings["limit_train"])
    normalisation = cifar_normalisation(settings, train_images)
    alternate = settings["augment"] and settings.get("flip") == "alternate"
    augmentation = dict(crop_padding=settings.get("crop_padding", 4), flip=not alternate,
                        padding_mode=settings.get("padding_mode", "constant"))
    train = DataLoader(train_images, train_labels, batch, shuffle=True, alternate_flips=alternate,
                       transform=build_transform(size, augment=settings["augment"], **augmentation, **normalisation),
                       **common)
    evaluation = build_transform(size, augment=False, **normalisation)
    val_images, val_labels = first(data.val_images, data.val_labels, settings["limit_val"])
    val = DataLoader(val_images, val_labels, batch, shuffle=False, transform=evaluation, **common) \
        if len(val_images) else None
    test = DataLoader(*first(data.test_images, data.test_labels, settings["limit_test"]), batch, shuffle=False,
                      transform=evaluation, **common)
    return train, val, test


def cifar_normalisation(settings: dict, train_images=None) -> dict:
    """``build_transform``'s normalisation options for a CIFAR-10 run (``preprocess``).

    "standardize": none (per-image standardisation, the default); "subtract-mean": the
    training images' per-channel means in pixel units (``pixel_mean``); "channel": their
    per-channel mean and std on the 0..1 scale (``mean``, ``std``). The statistics are
    measured once, on the images this run trains on, and kept in the settings
    (``pixel_mean``, ``channel_mean``/``channel_std``) for resumes and ``minidl predict``.
    """
    if settings["preprocess"] == "subtract-mean":  # the paper's: centred pixel values, in pixel units
        if "pixel_mean" not in settings:
            settings["pixel_mean"] = [round(float(v), 4) for v in train_images.mean(axis=(0, 2, 3))]
        return {"pixel_mean": settings["pixel_mean"]}
    if settings["preprocess"] == "channel":
        if "channel_mean" not in settings:
            mean, std = _channel_statistics(train_images)
            settings["channel_mean"], settings["channel_std"] = [round(v, 6) for v in mean], [round(v, 6) for v in std]
        return {"mean": settings["channel_mean"], "std": settings["channel_std"]}
    return {}


def _channel_statistics(images, chunk: int = 5000):
    """Per-channel mean and std of uint8 images (N, C, H, W) on the 0..1 scale, in float64, a chunk at a time."""
    total = np.zeros(images.shape[1])
    squares = np.zeros(images.shape[1])
    for start in range(0, len(images), chunk):   # float64 copies of all 50,000 images would take 1.2 GB
        x = images[start:start + chunk].astype(np.float64) / 255.0
        total += x.sum(axis=(0, 2, 3))
        squares += (x * x).sum(axis=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    return mean.tolist(), np.sqrt(np.maximum(squares / count - mean * mean, 0.0)).tolist()


def whitening_images(settings: dict, data):
    """The first 5,000 training images of the run (after --limit-train), normalised as training normalises them.

    airbench94's whitening layer is initialised from their 2x2 patches.
    """
    limit = min(WHITENING_IMAGES, settings["limit_train"] or WHITENING_IMAGES)
    normalisation = cifar_normalisation(settings, data.train_images[:settings["limit_train"]])
    return build_transform(input_size(settings), augment=False, **normalisation)(data.train_images[:limit], None)


def load(args, settings: dict, world):
    """CIFAR-10 or the folder on every process; rank 0 first, so that only it downloads into a shared cache."""
    def work():
        if settings["dataset"] == "folder":
            return load_folder(args, settings, world.is_main)
        url = os.environ.get("MINIDL_CIFAR10_URL")  # lets tests point the download at a local server
        return load_cifar10(data_dir=args.data_dir, cache_dir=args.data_dir, val_size=settings["val_size"],
                            progress=not args.no_progress and world.is_main, **({"url": url} if url else {}))
    return rank0_first(world, work, errors=(DatasetError,))


def fingerprint(data) -> str:
    """A short hash of the labels and some images (of a folder: its files): processes must train on the same data."""
    if isinstance(data, FolderSplits):
        return data.digest()
    digest = hashlib.blake2b(digest_size=8)
    for array in (data.train_labels, data.val_labels, data.test_labels, data.train_images[:64]):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
