#!/usr/bin/env python3
"""Image-folder loading speed: minidl's ImageFolderLoader against PyTorch's DataLoader.

    python benchmarks/bench_data.py --data-dir ../shared/data            # the full run (~2 min)
    python benchmarks/bench_data.py --data-dir ../shared/data --skip-train-check

The folder: ``--images`` photo-like JPEGs of 500x375 (CIFAR-10 training images
upscaled bilinearly with Gaussian noise, quality 90, one folder per CIFAR class),
written once to ``--folder`` and reused while its parameters match.

What is timed, in alternating rounds (minidl, torch, minidl, ...) after one warm-up
epoch each, as images/s over whole epochs (medians):

* minidl: ``ImageFolderLoader`` with ``RandomResizedCrop(size)`` (crop + flip),
  ``--workers`` decode threads, per-channel normalisation on the CPU "device";
  each batch arrives as float32 (B,3,S,S).
* PyTorch: ``torch.utils.data.DataLoader`` with ``--workers`` worker processes
  (persistent) over a Dataset that does what torchvision's ImageFolder and
  transforms do (torchvision itself does not load beside this CPU build of torch):
  PIL open, convert to RGB, random-resized crop (same box distribution: area
  0.08..1, aspect 3/4..4/3, 10 tries then a centre crop) as crop + bilinear resize,
  horizontal flip with p = 1/2, to a float tensor (/255, CHW), normalise.

``--train-check`` (on by default) shows whether the loader keeps up with training:
the seed AlexNet's training step (batch ``--train-batch``) timed fed by the
loader (decoding concurrently, on the same cores) and fed one ready batch.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (puts the repo root on sys.path)
from common import format_table, median  # noqa: E402

import numpy as np  # noqa: E402

from minidl.data import ImageFolder, ImageFolderLoader, RandomResizedCrop, load_cifar10  # noqa: E402

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PHOTO_SIZE = (500, 375)
NOISE_SIGMA = 6.0
JPEG_QUALITY = 90


def make_photo_folder(folder, count: int, cifar_dir, seed: int = 0) -> Path:
    """Write ``count`` 500x375 JPEGs made from CIFAR-10 training images into ``folder/<class>/``.

    Reused as is when ``folder/.made.json`` records the same parameters.
    """
    from PIL import Image

    folder = Path(folder)
    params = {"count": count, "size": list(PHOTO_SIZE), "noise": NOISE_SIGMA, "quality": JPEG_QUALITY, "seed": seed}
    marker = folder / ".made.json"
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return folder
    data = load_cifar10(data_dir=cifar_dir, download=False, val_size=0, progress=False)
    if len(data.train_images) < count:
        raise SystemExit(f"bench_data: the CIFAR-10 copy has {len(data.train_images)} training images, "
                         f"fewer than --images {count}")
    rng = np.random.default_rng(seed)
    for i in range(count):
        label = data.label_names[data.train_labels[i]]
        (folder / label).mkdir(parents=True, exist_ok=True)
        small = Image.fromarray(np.ascontiguousarray(data.train_images[i].transpose(1, 2, 0)))
        big = np.asarray(small.resize(PHOTO_SIZE, Image.Resampling.BILINEAR), dtype=np.float32)
        noisy = np.clip(big + rng.normal(0.0, NOISE_SIGMA, big.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / label / f"{i:05d}.jpg", quality=JPEG_QUALITY)
    marker.write_text(json.dumps(params))
    return folder


def torch_dataset(torch, folder: ImageFolder, size: int):
    """A torch Dataset doing what torchvision's ImageFolder + RandomResizedCrop/Flip/ToTensor/Normalize do."""
    from PIL import Image

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def crop_box(width, height):
        area = width * height
        for _ in range(10):
            target = area * random.uniform(0.08, 1.0)
            aspect = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
            w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top, left = random.randint(0, height - h), random.randint(0, width - w)
                return left, top, left + w, top + h
        w, h = width, height  # no try fitted: the central box, its aspect clamped to 3/4..4/3
        if width / height < 3 / 4:
            h = int(round(width / (3 / 4)))
        elif width / height > 4 / 3:
            w = int(round(height * 4 / 3))
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    class FolderDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(folder.paths)

        def __getitem__(self, index):
            with open(folder.paths[index], "rb") as f:
                image = Image.open(f).convert("RGB")
            image = image.crop(crop_box(*image.size)).resize((size, size), Image.Resampling.BILINEAR)
            if random.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            x = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).contiguous().float().div(255)
            return x.sub_(mean).div_(std), int(folder.labels[index])

    return FolderDataset()


def epoch_rate(batches) -> float:
    """Images per second over one pass of ``batches`` (each batch's images are touched)."""
    start, seen = time.perf_counter(), 0
    for x, y in batches:
        seen += int(y.shape[0])
    return seen / (time.perf_counter() - start)


def measure_loaders(args, folder: ImageFolder, torch) -> dict:
    loader = ImageFolderLoader(folder, args.batch_size, RandomResizedCrop(args.size), seed=0,
                               mean=IMAGENET_MEAN, std=IMAGENET_STD, workers=args.workers, name="bench")
    cases = [("minidl", lambda epoch: epoch_rate(loader.epoch_batches(epoch)))]
    if torch is not None:
        torch_loader = torch.utils.data.DataLoader(torch_dataset(torch, folder, args.size), args.batch_size,
                                                   shuffle=True, num_workers=args.workers,
                                                   persistent_workers=args.workers > 0)
        cases.append(("torch", lambda epoch: epoch_rate(torch_loader)))
    rates = {name: [] for name, _ in cases}
    for epoch in range(args.rounds + 1):  # epoch 0 warms up (files in the page cache, workers started)
        for name, run in cases:
            rate = run(epoch)
            if epoch:
                rates[name].append(rate)
            print(f"  round {epoch}{' (warm-up)' if not epoch else ''}: {name} {rate:.0f} img/s", flush=True)
    result = {name: {"images_per_s": median(r), "rounds": r} for name, r in rates.items()}
    if torch is not None:
        result["ratio_minidl_over_torch"] = result["minidl"]["images_per_s"] / result["torch"]["images_per_s"]
        result["paired_ratio"] = median([m / t for m, t in zip(rates["minidl"], rates["torch"])])
    return result


def train_check(args, folder: ImageFolder) -> dict:
    """The seed AlexNet's training step fed by the loader vs fed one ready batch."""
    import minidl.functional as F
    from minidl.models import AlexNet
    from minidl.optim import SGD

    model = AlexNet(num_classes=len(folder.class_names), variant="seed", seed=0)
    optimizer = SGD(model.parameters(), lr=0.001, momentum=0.9)

    def step(x, y):
        loss = F.softmax_cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    loader = ImageFolderLoader(folder, args.train_batch, RandomResizedCrop(224), seed=1, mean=IMAGENET_MEAN,
                               std=IMAGENET_STD, workers=args.workers, name="bench")
    steps = args.train_steps
    batches = loader.epoch_batches(0)
    step(*next(batches))  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step(*next(batches))
    fed = (time.perf_counter() - start) / steps
    batches.close()
    x, y = loader.make_batch(1, 0)
    step(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    ready = (time.perf_counter() - start) / steps
    return {"batch": args.train_batch, "steps": steps, "step_s_fed_by_loader": fed, "step_s_ready_batch": ready,
            "train_images_per_s_fed": args.train_batch / fed, "train_images_per_s_ready": args.train_batch / ready,
            "slowdown": fed / ready}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(common.ROOT.parent / "shared" / "data"),
                   help="a folder holding cifar-10-batches-py/ (the images' source)")
    p.add_argument("--folder", default=str(common.ROOT / "runs" / "bench_data_folder"),
                   help="where the JPEG folder is written (and reused)")
    p.add_argument("--images", type=int, default=2000, help="JPEGs in the folder (default 2000)")
    p.add_argument("--size", type=int, default=224, help="crop side (default 224)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="decode threads (minidl) / worker processes (torch)")
    p.add_argument("--rounds", type=int, default=3, help="timed epochs per loader, alternating (default 3)")
    p.add_argument("--train-batch", type=int, default=32, help="batch of the seed training check (default 32)")
    p.add_argument("--train-steps", type=int, default=5, help="timed steps of each training case (default 5)")
    p.add_argument("--skip-train-check", action="store_true")
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument("--json", help="output file (default benchmarks/results/data_cpu.json)")
    return p


def run(args) -> dict:
    torch = common.torch_or_none(args.skip_torch)
    folder_path = make_photo_folder(args.folder, args.images, args.data_dir)
    folder = ImageFolder(folder_path)
    payload = {"benchmark": "data", "images": len(folder), "photo_size": PHOTO_SIZE, "size": args.size,
               "batch_size": args.batch_size, "workers": args.workers, "rounds": args.rounds,
               "torch": getattr(torch, "__version__", None),
               "machine": common.machine_info(common.backend.parse_device("cpu"))}
    print(f"{len(folder)} JPEGs {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} in {folder_path}; random-resized crop {args.size} + "
          f"flip, batch {args.batch_size}, {args.workers} workers; {args.rounds} alternating epochs after a warm-up")
    payload["loaders"] = measure_loaders(args, folder, torch)
    rows = [[name, r["images_per_s"]] for name, r in payload["loaders"].items() if isinstance(r, dict)]
    print(format_table(["loader", "img/s"], rows))
    if "ratio_minidl_over_torch" in payload["loaders"]:
        print(f"minidl/PyTorch: {payload['loaders']['ratio_minidl_over_torch']:.2f}x (median of per-round ratios "
              f"{payload['loaders']['paired_ratio']:.2f}x)")
    if not args.skip_train_check:
        check = train_check(args, folder)
        payload["train_check"] = check
        print(f"seed AlexNet training step, batch {check['batch']}: {check['train_images_per_s_fed']:.1f} img/s fed "
              f"by the loader, {check['train_images_per_s_ready']:.1f} img/s on a ready batch "
              f"(x{check['slowdown']:.2f} time per step); the loader alone: "
              f"{payload['loaders']['minidl']['images_per_s']:.0f} img/s")
    payload["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    path = common.write_json(args.json or common.RESULTS_DIR / "data_cpu.json", payload)
    print(f"wrote {path}")
    return payload


def main(argv=None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
