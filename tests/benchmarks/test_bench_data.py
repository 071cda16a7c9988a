"""Smoke test of benchmarks/bench_data.py at a trivially small size (the real run takes minutes).

Checks the generated folder (photo-sized JPEGs from CIFAR images, one folder per
class, reused while its parameters match), the PyTorch Dataset standing in for
torchvision's (same crop size, normalised floats), and the report's arithmetic.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_data  # noqa: E402
from support.cifar_fixture import write_cifar10  # noqa: E402

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.mark.parametrize("with_torch", [False, pytest.param(True, marks=pytest.mark.skipif(
    not HAS_TORCH, reason="PyTorch not installed (optional 'bench' extra)"))])
def test_bench_data_runs_and_reports(tmp_path, with_torch):
    fx = write_cifar10(tmp_path / "cifar", n_per_batch=4, n_test=2)
    folder = tmp_path / "photos"
    out = tmp_path / "data.json"
    argv = ["--data-dir", str(fx.root), "--folder", str(folder), "--images", "10", "--size", "16", "--batch-size",
            "4", "--workers", "1", "--rounds", "2", "--train-batch", "2", "--train-steps", "1", "--json", str(out)]
    argv.append("--skip-train-check" if with_torch else "--skip-torch")  # each case once keeps it short
    payload = bench_data.run(bench_data.build_parser().parse_args(argv))
    paths = sorted(folder.glob("*/*.jpg"))
    assert len(paths) == 10 and {p.parent.name for p in paths} <= set(fx.label_names)
    with Image.open(paths[0]) as image:
        assert image.size == (500, 375) and image.format == "JPEG"
    saved = json.loads(out.read_text())
    minidl = saved["loaders"]["minidl"]
    assert len(minidl["rounds"]) == 2 and minidl["images_per_s"] == pytest.approx(np.median(minidl["rounds"]))
    if not with_torch:
        check = saved["train_check"]
        assert check["slowdown"] == pytest.approx(check["step_s_fed_by_loader"] / check["step_s_ready_batch"])
    else:
        torch_rate = saved["loaders"]["torch"]["images_per_s"]
        assert saved["loaders"]["ratio_minidl_over_torch"] == pytest.approx(minidl["images_per_s"] / torch_rate)
    stamp = (folder / ".made.json").stat().st_mtime_ns
    bench_data.make_photo_folder(folder, 10, fx.root)  # same parameters: reused, not rewritten
    assert (folder / ".made.json").stat().st_mtime_ns == stamp and payload["images"] == 10


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch not installed (optional 'bench' extra)")
def test_torch_dataset_gives_normalised_crops(tmp_path):
    import torch

    from minidl.data import ImageFolder

    fx = write_cifar10(tmp_path / "cifar", n_per_batch=2, n_test=2)
    folder = ImageFolder(bench_data.make_photo_folder(tmp_path / "photos", 4, fx.root))
    dataset = bench_data.torch_dataset(torch, folder, 24)
    x, label = dataset[1]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and label == folder.labels[1]
    pixels = x * torch.tensor(bench_data.IMAGENET_STD).view(3, 1, 1) + torch.tensor(bench_data.IMAGENET_MEAN).view(
        3, 1, 1)
    assert 0.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0 + 1e-6
