"""Mini-batches from image files: parallel decoding, bounded prefetch, bad files skipped.

``ImageFolderLoader`` serves the same (x, y) batches as ``DataLoader`` (so the
trainer takes either), built from files:

    files of batch b --(decode threads: open, draft, crop, resize, flip)--> uint8 (B,3,S,S) on the host
        --> device --> float32, normalised there (per channel, or per image)

Reproducible by construction, like ``DataLoader``: the order of epoch ``e`` is a
permutation from ``default_rng([seed, e])`` and the crops of batch ``b`` come from
``default_rng([seed, e, b, 1])`` (``plan.draws`` uniforms per image, drawn before
any thread starts). No result depends on which thread decodes which image, on the
number of threads or on timing, so resuming at (epoch, batch) gives bit for bit the
batches an uninterrupted run would have seen. With ``shard=(rank, size)`` (data
parallelism) a process decodes only its rows of each global batch, with the
uniforms those rows get in the global batch.

Why threads: Pillow releases the GIL while it decodes and resizes, so the threads
decode in parallel, and their output lands straight in the batch buffer: no
pickling, no inter-process copies (``benchmarks/bench_data.py`` measures it against
PyTorch's process-based DataLoader).

Bounded memory: at most ``prefetch`` batches are being decoded ahead of the one the
consumer waits for, each a (B,3,S,S) uint8 buffer; nothing else grows.

Failure handling:
* a file that does not decode is reported once by path, left out of its batch,
  and counted at the end of the pass (``on_bad_image="skip"``), or stops the
  loader with a DatasetError naming it (``"raise"``);
* any other exception in a decode thread reaches the consumer through its job's
  Future and is raised there; no worker dies silently;
* a decode that makes no progress for ``stall_timeout`` seconds (a hung network
  drive, a FIFO named like an image) raises a DatasetError naming the file. The
  threads are daemons, so a stuck one cannot keep the process alive.
"""
from __future__ import annotations

import collections
import os
import queue
import sys
import threading
import types
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from .. import backend
from ..autograd import Tensor
from .errors import DatasetError
from .image_ops import RandomResizedCrop, ResizeCenterCrop, UnreadableImage, decode_crop, require_pillow
from .loader import SeededBatches
from .transforms import normalize, per_image_standardization

PREFETCH_DEPTH = 2  # batches decoding ahead of the one the consumer waits for
STALL_TIMEOUT_S = 300.0  # no decoded image for this long: report the file a thread is stuck on
MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """Decode threads by default: one per core this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_WORKERS, cores))


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Stalled(DatasetError):
    """No image finished decoding in time: a thread is stuck, so it is not joined."""


class _DecodePool:
    """``workers`` daemon threads running jobs from one queue; each job's outcome goes to its Future.

    ``busy`` maps a thread to the file it is decoding, for the stall message.
    ``workers=0`` runs each job at once in the caller's thread.
    """

    def __init__(self, workers: int):
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.busy: dict = {}
        self.threads = [threading.Thread(target=self._serve, name=f"minidl-decode-{i}", daemon=True)
                        for i in range(workers)]
        for thread in self.threads:
            thread.start()

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        if self.threads:
            self.jobs.put((future, fn, args))
        else:
            self._run(future, fn, args)
        return future

    def _serve(self) -> None:
        while True:
            item = self.jobs.get()
            if item is None:
                return
            self._run(*item)

    def _run(self, future: Future, fn, args) -> None:
        if not future.set_running_or_notify_cancel():
            return  # cancelled while queued: the consumer has gone
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # every failure reaches the consumer
            future.set_exception(exc)

    def close(self, wait: bool = True) -> None:
        """Stop the threads after their current job; ``wait`` joins them."""
        for _ in self.threads:
            self.jobs.put(None)
        if wait:
            for thread in self.threads:
                thread.join()


class ImageFolderLoader(SeededBatches):
    """Iterate over (images, labels) of an ``ImageFolder`` in mini-batches on a device.

    Args:
        folder: an ``ImageFolder`` (or anything with ``paths`` and ``labels``).
        batch_size: images per batch (fewer when a file is skipped).
        plan: the per-image crop, ``RandomResizedCrop(size)`` for training or
            ``ResizeCenterCrop(size)`` for evaluation.
        shuffle: a fresh, reproducible permutation every epoch.
        seed: base seed of the order and the crops.
        device: where batches are delivered.
        mean, std: per-channel normalisation on the 0..1 scale (see
            ``normalize``); None for the tutorial's per-image standardisation.
        drop_last: drop the final, smaller batch.
        workers: decode threads (default ``default_workers()``; 0 decodes in the
            consumer's thread).
        prefetch: batches decoded ahead of the one being consumed.
        on_bad_image: "skip" (report once, leave out) or "raise" (DatasetError).
        stall_timeout: seconds without a finished image before a DatasetError.
        shard: None, or (rank, size): serve only process ``rank``'s contiguous slice of
            every global batch of ``batch_size`` (``batch_rows``), for data parallelism.
        name: how messages name this loader ("train", "validation", ...).
        log: where messages go (default: stderr).
        bad_paths: a dict (path -> reason) of unreadable files already reported,
            shared by loaders that should report each file once between them.

    Yields (per batch):
        x: Tensor (B,3,S,S) float32 on ``device``; y: int64 array (B,) on ``device``.
    """

    def __init__(self, folder, batch_size: int, plan, *, shuffle: bool = True, seed: int = 0, device="cpu",
                 mean=None, std=None, drop_last: bool = False, workers: int | None = None,
                 prefetch: int = PREFETCH_DEPTH, on_bad_image: str = "skip", stall_timeout: float = STALL_TIMEOUT_S,
                 shard=None, name: str = "images", log=_stderr, bad_paths: dict | None = None):
        if int(batch_size) != batch_size or batch_size <= 0:
            raise ValueError(f"ImageFolderLoader: expected a positive integer batch_size, got {batch_size!r}")
        if on_bad_image not in ("skip", "raise"):
            raise ValueError(f"ImageFolderLoader: on_bad_image must be 'skip' or 'raise', got {on_bad_image!r}")
        if (mean is None) != (std is None):
            raise ValueError("ImageFolderLoader: give both mean and std, or neither (per-image standardisation)")
        workers = default_workers() if workers is None else int(workers)
        if workers < 0 or prefetch < 0 or stall_timeout <= 0:
            raise ValueError(f"ImageFolderLoader: expected workers >= 0, prefetch >= 0 and stall_timeout > 0, got "
                             f"{workers}, {prefetch} and {stall_timeout}")
        require_pillow()
        self.paths = list(folder.paths)
        self.labels = np.asarray(folder.labels, dtype=np.int64)
        if self.labels.shape != (len(self.paths),):
            raise ValueError(f"ImageFolderLoader: {len(self.paths)} paths but labels of shape {self.labels.shape}")
        self.batch_size, self.plan = int(batch_size), plan
        self.shuffle, self.seed, self.drop_last, self.epoch = bool(shuffle), int(seed), bool(drop_last), 0
        self.device = backend.parse_device(device)
        self.shard = self._parse_shard(shard)
        self.mean = None if mean is None else [float(v) for v in mean]
        self.std = None if std is None else [float(v) for v in std]
        self.workers, self.prefetch = workers, int(prefetch)
        self.on_bad_image, self.stall_timeout, self.name, self.log = on_bad_image, float(stall_timeout), name, log
        self.bad_paths = {} if bad_paths is None else bad_paths  # path -> reason; each is reported once

    @property
    def num_samples(self) -> int:
        return len(self.paths)

    # ---- one batch ---------------------------------------------------------------
    def _uniforms(self, epoch: int, batch_index: int, count: int):
        if not self.plan.draws:
            return np.zeros((count, 0))
        return self.batch_rng(epoch, batch_index).random((count, self.plan.draws))

    def _decode(self, indices, uniforms, out, busy) -> list:
        """Decode ``indices`` into ``out`` (their rows of the batch); returns [(row, path, reason)] of bad files."""
        failures = []
        me = threading.get_ident()
        try:
            for row, (index, u) in enumerate(zip(indices, uniforms)):
                path = self.paths[index]
                busy[me] = path
                try:
                    decode_crop(path, self.plan, u, out[row])
                except UnreadableImage as exc:
                    failures.append((row, path, exc.reason))
        finally:
            busy.pop(me, None)
        return failures

    def _submit(self, pool: _DecodePool, epoch: int, batch_index: int, order: np.ndarray):
        """Queue batch ``batch_index``'s files as a few jobs writing into one uint8 buffer."""
        indices = order[batch_index * self.batch_size:(batch_index + 1) * self.batch_size]
        start, stop, _ = self.batch_rows(batch_index)  # the uniforms are drawn for the global batch
        indices, uniforms = indices[start:stop], self._uniforms(epoch, batch_index, len(indices))[start:stop]
        images = np.empty((len(indices), 3, self.plan.size, self.plan.size), dtype=np.uint8)
        # a few images per job: the pool stays balanced and a job's overhead stays small
        step = max(1, -(-len(indices) // (2 * max(1, len(pool.threads)))))
        jobs = [(first, pool.submit(self._decode, indices[first:first + step], uniforms[first:first + step],
                                    images[first:first + step], pool.busy))
                for first in range(0, len(indices), step)]
        return batch_index, indices, images, jobs

    def _finish(self, submitted, pool: _DecodePool):
        """Wait for a submitted batch; returns (uint8 images, labels, skipped count) without its bad files."""
        batch_index, indices, images, jobs = submitted
        failures = []
        for first, job in jobs:
            try:
                failures += [(first + row, path, reason) for row, path, reason in job.result(self.stall_timeout)]
            except FutureTimeout:
                stuck = sorted(set(pool.busy.values())) or ["(unknown)"]
                raise _Stalled(f"{self.name}: no image finished decoding in {self.stall_timeout:g} s; a decode "
                               f"thread is stuck reading {', '.join(stuck)}") from None
        if not failures:
            return images, self.labels[indices], 0
        for _, path, reason in failures:
            if self.on_bad_image == "raise":
                raise DatasetError(f"unreadable image {path}: {reason}")
            if path not in self.bad_paths:
                self.bad_paths[path] = reason
                self.log(f"{self.name}: skipping unreadable image {path} ({reason})")
        keep = np.ones(len(indices), dtype=bool)
        keep[[row for row, _, _ in failures]] = False
        if not keep.any():
            raise DatasetError(f"{self.name}: none of the {len(indices)} images of batch {batch_index + 1} could be "
                               f"read (e.g. {failures[0][1]}: {failures[0][2]})")
        return images[keep], self.labels[indices[keep]], len(failures)

    def _to_device(self, images, labels):
        """uint8 (B,3,S,S) host -> float32 on the device, normalised there."""
        with backend.device_context(self.device):
            x = backend.to_device(images, self.device)
            y = backend.to_device(labels, self.device)
            x = per_image_standardization(x) if self.mean is None else normalize(x, self.mean, self.std)
        return Tensor(x), y

    def make_batch(self, epoch: int, batch_index: int, order: np.ndarray | None = None):
        """Build batch ``batch_index`` of ``epoch`` in this thread: a pure function of (seed, epoch, batch_index)."""
        pool = _DecodePool(0)
        submitted = self._submit(pool, epoch, batch_index, self.order(epoch) if order is None else order)
        images, labels, _ = self._finish(submitted, pool)
        return self._to_device(images, labels)

    # ---- an epoch ------------------------------------------------------------------
    def host_batches(self, epoch: int, start_batch: int = 0):
        """The uint8 host batches of ``epoch`` from ``start_batch`` on, decoded ahead in the threads.

        Returns:
            an iterator of (images (B,3,S,S) uint8, labels (B,) int64, skipped
            count); closing it early stops and joins the threads.
        """
        self._check_start(start_batch)
        return self._pipeline(epoch, range(start_batch, len(self)))

    def _pipeline(self, epoch: int, batch_indices: range):
        order = self.order(epoch)
        pool = _DecodePool(self.workers)
        upcoming, window = iter(batch_indices), collections.deque()
        stalled = False

        def submit_next():
            batch_index = next(upcoming, None)
            if batch_index is not None:
                window.append(self._submit(pool, epoch, batch_index, order))

        try:
            for _ in range(self.prefetch + 1):
                submit_next()
            while window:
                submitted = window.popleft()
                try:
                    batch = self._finish(submitted, pool)
                except _Stalled:
                    stalled = True
                    raise
                submit_next()  # keeps ``prefetch`` batches decoding while this one is consumed
                yield batch
        finally:
            for _, _, _, jobs in window:
                for _, job in jobs:
                    job.cancel()
            pool.close(wait=not stalled)

    def epoch_batches(self, epoch: int, start_batch: int = 0):
        """The batches of ``epoch`` from ``start_batch`` on (for resuming mid-epoch), on the device.

        Returns:
            an iterator of (x, y) as in ``make_batch``; the number of files skipped
            in the pass is logged when it ends.
        """
        host = self.host_batches(epoch, start_batch)
        return self._device_batches(host)

    def _device_batches(self, host):
        skipped = 0
        try:
            for images, labels, bad in host:
                skipped += bad
                yield self._to_device(images, labels)
        finally:
            host.close()
        if skipped:
            self.log(f"{self.name}: {skipped} unreadable image(s) skipped in this pass "
                     f"({len(self.bad_paths)} different file(s) so far)")


def folder_loaders(splits, image_size: int, batch_size: int, *, augment: bool = True, limits=(None, None, None),
                   **loader_kw):
    """Train, validation and test loaders over a ``FolderSplits``, the way the paper and torchvision do it.

    Training images get ``RandomResizedCrop(image_size)`` (with flips) when
    ``augment``, else the evaluation crop; validation and test images get
    ``ResizeCenterCrop(image_size)``. Without test images the test loader reads the
    validation images (and is named so in its messages).

    Args:
        splits: from ``load_image_folder``.
        image_size, batch_size: crop side and images per batch.
        augment: random crops and flips for training.
        limits: (train, val, test) image counts to keep (None: all); each split
            is already in a seeded random order, so the first N are a random sample.
        loader_kw: passed to every ``ImageFolderLoader`` (seed, device, mean, std,
            workers, on_bad_image, log...); ``bad_paths`` defaults to
            ``splits.unreadable``, so the three report each bad file once.

    Returns:
        (train, val, test) ``ImageFolderLoader``s; train shuffles, the others do not.
    """
    loader_kw.setdefault("bad_paths", splits.unreadable)

    def loader(split, limit, plan, name, shuffle):
        part = split if limit is None else split.subset(range(min(int(limit), len(split))))
        return ImageFolderLoader(part, batch_size, plan, shuffle=shuffle, name=name, **loader_kw)

    evaluation = ResizeCenterCrop(image_size)
    test, test_name = (splits.test, "test") if splits.test is not None else (splits.val, "test (the validation images)")
    return (loader(splits.train, limits[0], RandomResizedCrop(image_size) if augment else evaluation, "train", True),
            loader(splits.val, limits[1], evaluation, "validation", False),
            loader(test, limits[2], evaluation, test_name, False))


def channel_mean_std(folder, size: int, max_images: int = 1000, seed: int = 0, **loader_kw):
    """Per-channel mean and std (0..1 scale) of ``folder``'s images, centre-cropped to ``size``.

    Over a seeded sample of at most ``max_images`` images (all of them when fewer),
    decoded like evaluation images (``ResizeCenterCrop(size)``). Sums run in float64.

    Args:
        folder: an ``ImageFolder`` (the training images).
        size: the crop side the model sees.
        max_images: sample size; the statistics of 1,000 photos are within a
            fraction of a percent of the whole set's.
        seed: seed of the sample.
        loader_kw: passed to ``ImageFolderLoader`` (workers, on_bad_image, log...).

    Returns:
        (mean, std): lists of 3 floats.
    """
    count = len(folder.paths)
    if count == 0:
        raise DatasetError("channel_mean_std: the folder has no images")
    pick = np.sort(np.random.default_rng([seed, 11]).permutation(count)[:max_images])
    sample = types.SimpleNamespace(paths=[folder.paths[i] for i in pick], labels=np.asarray(folder.labels)[pick])
    loader = ImageFolderLoader(sample, 64, ResizeCenterCrop(size), shuffle=False, seed=seed,
                               **{"name": "statistics", **loader_kw})
    total, total_sq, pixels = np.zeros(3), np.zeros(3), 0
    for images, _, _ in loader.host_batches(0):
        values = images.astype(np.float64)
        total += values.sum(axis=(0, 2, 3))
        total_sq += np.square(values).sum(axis=(0, 2, 3))
        pixels += values.shape[0] * values.shape[2] * values.shape[3]
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - mean ** 2, 0.0))
    return (mean / 255.0).tolist(), (np.maximum(std, 1e-3 * 255) / 255.0).tolist()
