"""airbench94's recipe in PyTorch on the CPU: the twin of ``minidl train --model airbench94`` (issue 20).

Issue 20 asks for minidl's wall time against "the same recipe in PyTorch 2.13 on the same
CPU". This script is that recipe, written with torch's own layers, optimizer and
tensor ops, ingredient for ingredient as minidl's (``minidl/cli/recipes.py`` AIRBENCH94,
``minidl/models/airbench.py``, ``minidl/optim``, ``minidl/metrics.tta_logits``):

    python benchmarks/airbench_torch.py --data-dir ../shared/data --json benchmarks/results/airbench_torch.json

* data: CIFAR-10 read by ``minidl.data.load_cifar10`` (the same arrays), all 50,000
  training images (``--limit-train``: the first N), per-channel normalisation with the
  training images' mean and std (float64, rounded to 6 decimals as minidl's settings keep them);
* the network: whitening 2x2 conv (frozen weight from the second-moment eigenvectors of
  the 2x2 patches of the first 5,000 training images, eps 5e-4, v and -v), GELU, three
  blocks conv-pool-BN-GELU-conv-BN-GELU at 64/256/256 with dirac init of the first
  min(in, out) filters, batch norms that only shift (weight 1 frozen, eps 1e-12, momentum
  0.4), a global max pool, a bias-free head times 1/9; the rest at torch's default init;
* the optimizer: torch.optim.SGD, Nesterov, momentum 0.85, lr 1.5 on the batch's mean loss,
  coupled weight decay 1.33e-3 on every trained parameter; batch-norm shifts at 64x the lr
  with wd / 64; the whitening bias in a group of its own, lr 0 from epoch 3 (0-based) on;
  label smoothing 0.2; batch 1024, the last short batch kept;
* the schedule: lr factor 0.2 -> 1 over int(0.23 T) steps, then down to 0.07 at step T
  (T = epochs x batches per epoch), set before every step;
* lookahead: after every 5th optimizer step, slow += alpha (fast - slow), fast = slow, for
  every parameter in the optimizer and the batch norms' running statistics, alpha =
  1 - 0.95^5 (step / T)^3; the slow copies start from the initial weights;
* augmentation: translations by up to 2 pixels with the border reflected and alternating
  flips, drawn from the very generators minidl's DataLoader uses (order
  ``default_rng([seed, epoch])``, offsets ``default_rng([seed, epoch, batch, 1])``, first
  flips ``default_rng([seed, 0, 0, 2])``), so both see the same images in the same order;
  the pixel work is torch's;
* test: eval mode, TTA level 2 (the mean of the image and its mirror, averaged half and
  half with the same over 1-pixel translations down-right and up-left, reflected), in
  batches of 1024; loss (label-smoothed, as minidl reports it), top-1 and top-5.

The constants come from minidl's modules, and ``tests/benchmarks/test_airbench_torch.py``
holds the mechanics to minidl's: the same whitening filters, dirac init and parameter groups,
the same batches bit for bit, the same logits from minidl's weights and, in float64 from the
same weights, the same weights after every step of a 12-step run of minidl's recipe.

Unavoidable or deliberate differences (none changes the mathematics):
* the initial random weights come from torch's generator, not minidl's, and LAPACK may
  choose another sign for a whitening eigenvector (its filter and its negative swap
  places); the runs are alike in distribution, not in their digits;
* minidl builds batches in a background thread and writes a checkpoint after every epoch;
  here batches are built in the training loop (a few tens of ms per 1024 images, inside
  the epoch's time) and nothing is written but the JSON;
* minidl evaluates a copy with the batch norms folded into the convolutions
  (``nn.fuse_for_inference``); torch evaluates the model as it is (the same function to
  float32 rounding);
* torch's default NCHW memory format and thread count (``--threads`` sets it).
"""
from __future__ import annotations

import time

STARTED = time.perf_counter()   # the whole command's wall time starts before the imports

import argparse  # noqa: E402
import datetime  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as TF  # noqa: E402

from common import machine_info, top1_top5_hits, write_json  # noqa: E402  (also puts the checkout on sys.path)
import minidl  # noqa: E402
from minidl import backend  # noqa: E402
from minidl.cli.datasets import WHITENING_IMAGES  # noqa: E402
from minidl.cli.recipes import AIRBENCH94, LOOKAHEAD_STEPS  # noqa: E402
from minidl.data import DatasetError, load_cifar10  # noqa: E402
from minidl.models.airbench import BN_EPS, BN_MOMENTUM, HEAD_SCALE, WHITEN_EPS, WHITEN_KERNEL, WIDTHS  # noqa: E402

R = AIRBENCH94
WARMUP_SHARE, START_FACTOR, END_FACTOR = 0.23, 0.2, 0.07   # minidl's make_schedule for "linear"
EXIT_NONFINITE = 3


# ---- the network ------------------------------------------------------------------------
def shift_only_norm(channels: int) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
    norm.weight.requires_grad_(False)
    return norm


class Block(nn.Sequential):
    """conv 3x3 -> max pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU; the convs dirac-initialised."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1, self.act1 = shift_only_norm(cout), nn.GELU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2, self.act2 = shift_only_norm(cout), nn.GELU()
        for conv in (self.conv1, self.conv2):
            with torch.no_grad():
                k = min(conv.in_channels, conv.out_channels)
                nn.init.dirac_(conv.weight[:k])


class Airbench94(nn.Module):
    """minidl's airbench94 in torch.nn, with minidl's state_dict keys (plus num_batches_tracked)."""

    def __init__(self, num_classes: int = 10, widths=WIDTHS):
        super().__init__()
        self.whiten = nn.Conv2d(3, 2 * 3 * WHITEN_KERNEL ** 2, WHITEN_KERNEL, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.act = nn.GELU()
        self.block1 = Block(self.whiten.out_channels, widths[0])
        self.block2 = Block(widths[0], widths[1])
        self.block3 = Block(widths[1], widths[2])
        self.pool = nn.MaxPool2d(3)
        self.head = nn.Linear(widths[2], num_classes, bias=False)

    def init_whitening(self, images: torch.Tensor) -> None:
        with torch.no_grad():
            self.whiten.weight.copy_(whitening_filters(images).to(self.whiten.weight.dtype))

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.act(self.whiten(x)))))
        return self.head(torch.flatten(self.pool(x), 1)) * HEAD_SCALE


def whitening_filters(images: torch.Tensor, k: int = WHITEN_KERNEL, eps: float = WHITEN_EPS, chunk: int = 500):
    """Eigenvectors v of E[p p^T] over all k x k patches p, as v / sqrt(lambda + eps), largest first, then -v.

    Shapes: images (N, C, H, W) -> (2 C k k, C, k, k) float64.
    """
    n, c = images.shape[:2]
    moment, count = torch.zeros(c * k * k, c * k * k, dtype=torch.float64), 0
    for start in range(0, n, chunk):
        patches = TF.unfold(images[start:start + chunk].double(), k)     # (n, C k k, L), C slowest as in OIHW
        moment += torch.einsum("npl,nql->pq", patches, patches)
        count += patches.shape[0] * patches.shape[2]
    values, vectors = torch.linalg.eigh(moment / count)                  # ascending
    values, vectors = values.flip(0), vectors.flip(1)
    filters = (vectors.T / torch.sqrt(values.clamp(min=0) + eps)[:, None]).reshape(-1, c, k, k)
    return torch.cat([filters, -filters])


def build_model(whitening_images: torch.Tensor, seed: int, num_classes: int = 10) -> Airbench94:
    torch.manual_seed(seed)
    model = Airbench94(num_classes)
    model.init_whitening(whitening_images)
    return model


# ---- the data ---------------------------------------------------------------------------
def channel_statistics(images: np.ndarray):
    """Per-channel mean and (population) std of uint8 images on the 0..1 scale, rounded as minidl keeps them."""
    total, squares = np.zeros(images.shape[1]), np.zeros(images.shape[1])
    for start in range(0, len(images), 5000):
        x = images[start:start + 5000].astype(np.float64) / 255.0
        total += x.sum(axis=(0, 2, 3))
        squares += (x * x).sum(axis=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return np.round(mean, 6), np.round(std, 6)


class Batches:
    """Mini-batches of uint8 host images as normalised float32 tensors, in minidl's seeded order.

    Args:
        images, labels: (N, 3, 32, 32) uint8 and (N,) int arrays.
        mean, std: per-channel statistics on the 0..1 scale.
        augment: shuffle, translate (reflect) and flip alternately (training); else in order.
        dtype: of the batches (float64 for exact comparisons; normalised in float32 all the same,
            with minidl's arithmetic).
    """

    def __init__(self, images, labels, batch_size: int, mean, std, *, seed: int = 0, augment: bool = False,
                 dtype=torch.float32):
        self.images, self.labels = images, torch.from_numpy(np.asarray(labels, np.int64))
        self.dtype = dtype
        self.batch_size, self.seed, self.augment = int(batch_size), int(seed), bool(augment)
        # minidl's normalize: x * (1 / (255 std)) - mean / std, both constants float32
        self.scale = torch.from_numpy((1.0 / (255.0 * std)).astype(np.float32)).view(1, -1, 1, 1)
        self.shift = torch.from_numpy((mean / std).astype(np.float32)).view(1, -1, 1, 1)
        self.first_flips = np.random.default_rng([self.seed, 0, 0, 2]).random(len(images)) < 0.5

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def normalise(self, images: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(images) * self.scale - self.shift).to(self.dtype)

    def epoch(self, epoch: int):
        """Yield (x (B, 3, 32, 32) float32, y (B,) int64) for ``epoch`` (0-based)."""
        n, pad = len(self.images), R["crop_padding"]
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.augment else np.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.normalise(self.images[idx])
            if self.augment:
                offsets = np.random.default_rng([self.seed, epoch, b, 1]).integers(0, 2 * pad + 1, size=(len(idx), 2))
                x = translate(x, torch.from_numpy(offsets), pad)
                flips = torch.from_numpy(self.first_flips[idx] != bool(epoch % 2))
                x = torch.where(flips[:, None, None, None], x.flip(3), x)
            yield x, self.labels[idx]


def translate(x: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    """Crop each image of x, padded by ``pad`` (reflected), at its (dy, dx) offset: one gather."""
    # x (N,C,H,W) -> padded (N,C,H+2p,W+2p) -> rows (N,1,H,1), cols (N,1,1,W) -> (N,C,H,W)
    n, c, h, w = x.shape
    padded = TF.pad(x, (pad, pad, pad, pad), mode="reflect")
    rows = (offsets[:, :1] + torch.arange(h))[:, None, :, None]
    cols = (offsets[:, 1:] + torch.arange(w))[:, None, None, :]
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


# ---- training -----------------------------------------------------------------------------
def lr_factor(t: int, total: int, warmup: int) -> float:
    """minidl's LinearWarmupDecayLR: the factor of the base lr for step t (0-based)."""
    if t < warmup:
        return START_FACTOR + (1.0 - START_FACTOR) * t / warmup
    return 1.0 + (END_FACTOR - 1.0) * min((t - warmup) / (total - warmup), 1.0)


def parameter_groups(model: Airbench94) -> list:
    """The rest, the batch norms' shifts (64x lr, wd / 64), the whitening bias (frozen later): minidl's order."""
    shifts = [m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    taken = {id(p) for p in shifts} | {id(model.whiten.bias)}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    scale = R["bias_lr_scale"]
    return [{"params": rest}, {"params": shifts, "lr": R["lr"] * scale, "weight_decay": R["weight_decay"] / scale},
            {"params": [model.whiten.bias]}]


class Lookahead:
    """Every k-th step: slow += alpha (fast - slow), fast = slow, over the parameters and float buffers."""

    def __init__(self, tensors, total_steps: int, k: int = LOOKAHEAD_STEPS):
        self.tensors, self.total, self.k = list(tensors), max(1, total_steps), k
        self.slow = [t.detach().clone() for t in self.tensors]
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps % self.k:
            return
        alpha = 1.0 - 0.95 ** 5 * min(self.steps / self.total, 1.0) ** 3
        with torch.no_grad():
            for fast, slow in zip(self.tensors, self.slow):
                slow += alpha * (fast - slow)
                fast.copy_(slow)


class NonFiniteLoss(Exception):
    pass


def train(model: Airbench94, batches: Batches, epochs: int, log=print, on_step=None) -> list:
    """The recipe's training loop; returns one row per epoch (lr, train loss and accuracy, seconds).

    ``on_step(optimizer)``, if given, is called after every step (and lookahead's pull), for tests.
    """
    groups = parameter_groups(model)
    optimizer = torch.optim.SGD(groups, lr=R["lr"], momentum=R["momentum"], nesterov=R["nesterov"],
                                weight_decay=R["weight_decay"])
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    steps_per_epoch = len(batches)
    total = max(2, epochs * steps_per_epoch)
    warmup = int(WARMUP_SHARE * total)
    trained = [p for g in optimizer.param_groups for p in g["params"]]
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    lookahead = Lookahead(trained + buffers, epochs * steps_per_epoch)
    rows, step = [], 0
    for epoch in range(epochs):
        model.train()
        started, loss_sum, correct, seen, first_lr = time.perf_counter(), 0.0, 0, 0, None
        for x, y in batches.epoch(epoch):
            factor = lr_factor(step, total, warmup)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor
            if epoch >= R["whiten_bias_epochs"]:
                optimizer.param_groups[2]["lr"] = 0.0
            first_lr = optimizer.param_groups[0]["lr"] if first_lr is None else first_lr
            logits = model(x)
            loss = TF.cross_entropy(logits, y, label_smoothing=R["label_smoothing"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            value = loss.item()
            if not math.isfinite(value):
                raise NonFiniteLoss(f"the training loss became {value} at epoch {epoch + 1}, batch "
                                    f"{step - epoch * steps_per_epoch + 1}")
            optimizer.step()
            lookahead.step()
            step += 1
            if on_step is not None:
                on_step(optimizer)
            loss_sum += value * len(y)
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += len(y)
        seconds = time.perf_counter() - started
        row = {"epoch": epoch + 1, "lr": first_lr, "train_loss": loss_sum / seen, "train_acc": correct / seen,
               "seconds": seconds, "images_per_s": seen / seconds}
        rows.append(row)
        log(f"epoch {epoch + 1}/{epochs}: train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}% | "
            f"lr {first_lr:.4g} | {seconds:.1f} s, {row['images_per_s']:.0f} img/s")
    return rows


def tta_logits(model, x: torch.Tensor, level: int = R["tta"]) -> torch.Tensor:
    """minidl.metrics.tta_logits: level 0 plain, 1 with the mirror image, 2 also two 1-pixel translations."""
    def mirrored(v):
        return (model(v) + model(v.flip(3))) * 0.5
    if level == 0:
        return model(x)
    logits = mirrored(x)
    if level == 2:
        h, w = x.shape[2:]
        padded = TF.pad(x, (1, 1, 1, 1), mode="reflect")
        logits = (logits + (mirrored(padded[:, :, :h, :w]) + mirrored(padded[:, :, 2:, 2:])) * 0.5) * 0.5
    return logits


def evaluate(model, batches: Batches) -> dict:
    """Label-smoothed loss, top-1 and top-5 accuracy with test-time augmentation, in eval mode."""
    model.eval()
    loss_sum, top1, top5, seen = 0.0, 0, 0, 0
    with torch.no_grad():
        for x, y in batches.epoch(0):
            logits = tta_logits(model, x)
            loss_sum += float(TF.cross_entropy(logits, y, label_smoothing=R["label_smoothing"])) * len(y)
            hits = top1_top5_hits(logits, y)
            top1, top5 = top1 + hits[0], top5 + hits[1]
            seen += len(y)
    return {"loss": loss_sum / seen, "acc": top1 / seen, "top5": top5 / seen}


# ---- the command ----------------------------------------------------------------------------
def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="airbench94's recipe in PyTorch on the CPU (minidl's twin, issue 20)")
    p.add_argument("--data-dir", default="../shared/data", help="holds cifar-10-batches-py/ (default ../shared/data)")
    p.add_argument("--epochs", type=positive, default=R["epochs"], help=f"default {R['epochs']}")
    p.add_argument("--seed", type=int, default=0, help="torch's initialisation and the data's order and "
                   "augmentation (minidl's generators) (default 0)")
    p.add_argument("--limit-train", type=positive, help="train on the first N training images")
    p.add_argument("--limit-test", type=positive, help="test on the first N test images")
    p.add_argument("--batch-size", type=positive, default=R["batch_size"], help=f"default {R['batch_size']} (the "
                   "recipe's; other values for tests)")
    p.add_argument("--threads", type=positive, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--json", metavar="OUT", help="write the results (accuracy, wall times, versions, date) here")
    return p


def load_data(args):
    """(train Batches, test Batches, whitening images) as minidl's run would see them."""
    data = load_cifar10(data_dir=args.data_dir, cache_dir=args.data_dir, download=False, val_size=0,
                        progress=False)
    train_images, train_labels = data.train_images[:args.limit_train], data.train_labels[:args.limit_train]
    mean, std = channel_statistics(train_images)
    train = Batches(train_images, train_labels, args.batch_size, mean, std, seed=args.seed, augment=True)
    test = Batches(data.test_images[:args.limit_test], data.test_labels[:args.limit_test], args.batch_size, mean, std)
    return train, test, train.normalise(train_images[:WHITENING_IMAGES])


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        train_batches, test_batches, whitening_images = load_data(args)
    except DatasetError as exc:
        print(f"airbench_torch.py: error: {exc}", file=sys.stderr)
        return 1
    model = build_model(whitening_images, args.seed)
    print(f"airbench94 in PyTorch {torch.__version__} ({torch.get_num_threads()} threads): "
          f"{len(train_batches.images)} training images, {len(test_batches.images)} test images, "
          f"{args.epochs} epochs of {len(train_batches)} batches of {args.batch_size}, seed {args.seed}", flush=True)
    setup_s = time.perf_counter() - STARTED
    try:
        rows = train(model, train_batches, args.epochs, log=lambda line: print(line, flush=True))
    except NonFiniteLoss as exc:
        print(f"airbench_torch.py: error: {exc}", file=sys.stderr)
        return EXIT_NONFINITE
    test_started = time.perf_counter()
    results = evaluate(model, test_batches)
    test_s, wall_s = time.perf_counter() - test_started, time.perf_counter() - STARTED
    train_s = sum(row["seconds"] for row in rows)
    print(f"test: loss {results['loss']:.4f}, accuracy {100 * results['acc']:.2f}%, top-5 {100 * results['top5']:.2f}%"
          f" (tta {R['tta']}) | training {train_s:.1f} s, test {test_s:.1f} s, whole command {wall_s:.1f} s",
          flush=True)
    if args.json:
        settings = {key: R[key] for key in ("lr", "momentum", "weight_decay", "nesterov", "label_smoothing",
                                            "bias_lr_scale", "whiten_bias_epochs", "crop_padding", "tta")}
        payload = {"script": "benchmarks/airbench_torch.py", "argv": sys.argv[1:] if argv is None else list(argv),
                   "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "torch": torch.__version__, "numpy": np.__version__, "minidl": minidl.__version__,
                   "threads": torch.get_num_threads(), "machine": machine_info(backend.parse_device("cpu")),
                   "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                   "train_images": len(train_batches.images), "test_images": len(test_batches.images),
                   "recipe": settings, "test_loss": results["loss"], "test_acc": results["acc"],
                   "test_top5": results["top5"], "wall_s": wall_s, "setup_s": setup_s, "train_s": train_s,
                   "test_s": test_s, "history": rows}
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
