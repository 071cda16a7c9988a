"""k SGD steps of a small BN + dropout convnet, data-parallel or not, in float64.

    mpiexec -n 2 python dp_exactness.py OUT_DIR   # writes OUT_DIR/<config>.npz from rank 0
    from dp_exactness import train; train(None)    # the one-process reference, in-process

Every step sees a global batch of 8 (21 images: the last batch of 5 splits 2 + 3),
with random crops and flips, dropout, momentum and weight decay, and a validation
pass, so every piece that makes N processes equal one is exercised.

The ``factors`` configs form both dense layers' weight gradients from shared factors
(``minidl/distributed/factors.py``; its size threshold lowered to reach these small
layers), the others all-reduce every gradient in buckets.

``short=True`` (the SHORT configs): 17 images, so the last global batch holds 1
image and one of 2 processes gets none, in training and in validation; the model
has no BatchNorm1d (batch norm over 1 value per channel is undefined).
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import minidl.nn as nn  # noqa: E402
from minidl import distributed as dist  # noqa: E402
from minidl.data import DataLoader  # noqa: E402
from minidl.data.transforms import random_crop, random_horizontal_flip  # noqa: E402
from minidl.distributed import factors  # noqa: E402
from minidl.optim import SGD  # noqa: E402
from minidl.train import Trainer  # noqa: E402

CONFIGS = {"sync_overlap": dict(sync_bn=True, overlap=True, bucket_bytes=2000, share_factors=False),
           "sync_no_overlap": dict(sync_bn=True, overlap=False, share_factors=False),
           "no_sync_bn": dict(sync_bn=False, overlap=True, bucket_bytes=2000, share_factors=False),
           "factors": dict(sync_bn=True, overlap=True, bucket_bytes=2000, share_factors=True),
           "factors_no_overlap": dict(sync_bn=True, overlap=False, share_factors=True)}
SHORT = {"short_last_batch": dict(sync_bn=True, overlap=True, bucket_bytes=2000, share_factors=False),
         "short_factors": dict(sync_bn=True, overlap=True, bucket_bytes=2000, share_factors=True)}


def augment(x, rng, rows=None):
    x = random_horizontal_flip(random_crop(x, 2, rng, rows), rng, rows=rows)
    return x.astype(np.float64) / 255.0


def train(parallel_options, world=None, short=False):
    """Train 2 epochs; returns {name: array} of every parameter and buffer, and the history."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (29, 3, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 10, 29)
    features = [nn.Linear(96, 16, rng=np.random.default_rng(2))] + ([] if short else [nn.BatchNorm1d(16)])
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, rng=np.random.default_rng(1)), nn.BatchNorm2d(6),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), *features, nn.ReLU(),
                          nn.Dropout(0.5, rng=np.random.default_rng(3)),
                          nn.Linear(16, 10, rng=np.random.default_rng(4))).to(dtype=np.float64)
    factors.FACTOR_MIN_WEIGHTS = 1   # both dense layers, where shared factors are on
    parallel = None if parallel_options is None else dist.DataParallel(model, world, **parallel_options)
    if parallel is not None:
        shared = {type(m).__name__ for m in model.modules()} & {"FactorSharedLinear"}
        assert bool(shared) == parallel_options["share_factors"], shared
    shard = None if parallel is None else parallel.shard
    # short: 17 training images (8 + 8 + 1) and 9 validation images (4 + 4 + 1)
    n_train, first_val, val_batch = (17, 20, 4) if short else (21, 21, 3)
    loader = DataLoader(images[:n_train], labels[:n_train], 8, seed=5, transform=augment, shard=shard,
                        prefetch=False)
    val = DataLoader(images[first_val:], labels[first_val:], val_batch, shuffle=False, transform=augment, shard=shard,
                     prefetch=False)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
    trainer = Trainer(model, optimizer, loader, val, epochs=2, progress=False, plots=False, parallel=parallel,
                      log=lambda *a: None)
    history = trainer.fit()
    state = {name: np.array(p.data) for name, p in model.named_parameters()}
    state.update({name: np.array(b) for name, b in model.named_buffers()})
    metrics = np.array([[row[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc", "val_top5")]
                        for row in history])
    return state, metrics


if __name__ == "__main__":
    out = Path(sys.argv[1])
    world = dist.init()
    runs = [(name, options, False) for name, options in CONFIGS.items()]
    for name, options, short in runs + [(name, options, True) for name, options in SHORT.items()]:
        state, metrics = train(options, world, short)
        if world.is_main:
            np.savez(out / f"{name}.npz", metrics=metrics, **state)
    print(f"ok {world.rank}", flush=True)
