"""Two epochs of ResNet-20 through the Trainer, data-parallel or not, in float64.

    mpiexec -n 2 python resnet_dp.py OUT.npz   # rank 0 writes every parameter, buffer and the history
    from resnet_dp import train; train(None)   # the one-process reference, in-process

24 training images of 8x8 (global batches of 8: 3 steps an epoch, 4 images per process),
random crops and flips, SGD with Nesterov momentum and weight decay, a validation pass:
the residual blocks' synchronised batch norm, zero-padding shortcuts and global average
pooling under data parallelism. (A CIFAR ResNet takes any image size; 8x8 keeps it quick.)
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from minidl import distributed as dist  # noqa: E402
from minidl.data import DataLoader  # noqa: E402
from minidl.data.transforms import random_crop, random_horizontal_flip  # noqa: E402
from minidl.models import resnet20  # noqa: E402
from minidl.optim import SGD  # noqa: E402
from minidl.train import Trainer  # noqa: E402


def augment(x, rng, rows=None):
    x = random_horizontal_flip(random_crop(x, 2, rng, rows), rng, rows=rows)
    return (x.astype(np.float64) - 128.0) / 64.0


def train(world):
    """Train 2 epochs; returns ({name: array} of every parameter and buffer, history metrics)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 3, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 10, 32)
    model = resnet20(seed=1).to(dtype=np.float64)
    parallel = None if world is None else dist.DataParallel(model, world, sync_bn=True, bucket_bytes=100_000)
    shard = None if parallel is None else parallel.shard
    loader = DataLoader(images[:24], labels[:24], 8, seed=5, transform=augment, shard=shard, prefetch=False)
    val = DataLoader(images[24:], labels[24:], 4, shuffle=False, transform=augment, shard=shard, prefetch=False)
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True)
    trainer = Trainer(model, optimizer, loader, val, epochs=2, progress=False, plots=False, parallel=parallel,
                      log=lambda *a: None)
    history = trainer.fit()
    state = {name: np.array(p.data) for name, p in model.named_parameters()}
    state.update({name: np.array(b) for name, b in model.named_buffers()})
    metrics = np.array([[row[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc", "val_top5")]
                        for row in history])
    return state, metrics


if __name__ == "__main__":
    world = dist.init()
    state, metrics = train(world)
    if world.is_main:
        np.savez(sys.argv[1], metrics=metrics, **state)
    print(f"ok {world.rank}", flush=True)
