"""Mini-batches from host arrays: reproducible shuffling, transforms on the device, prefetch.

Reproducibility is by construction, not by carrying generator state around:

* the order of epoch ``e`` is a permutation drawn from ``default_rng([seed, e])``;
* the augmentation of batch ``b`` of epoch ``e`` uses ``default_rng([seed, e, b, 1])``;
* with ``alternate_flips`` (airbench's), image i is mirrored in epoch e when
  ``first_flips[i] != (e is odd)``, ``first_flips`` drawn once from ``default_rng([seed, 0, 0, 2])``:
  a random half in the first epoch, then every image alternately the other way round, so
  each sees both orientations in every two epochs instead of at random.

So any batch can be rebuilt from (seed, epoch, batch index) alone: resuming at
(epoch, start_batch) yields exactly the batches an uninterrupted run would have
seen, and prefetching changes nothing but timing.

Data parallelism: with ``shard=(rank, size)`` the loader serves process ``rank``
its contiguous slice of every global batch (``batch_rows`` says which rows), and
the transform draws its random choices for the global batch and applies this
slice's, so the N processes together see exactly the batches of one process.

Prefetching runs batch preparation (gather uint8 rows on the host, copy them to
the device, transform there) in a background thread while the consumer trains on
the current batch. The thread stops when the epoch ends, when the consumer stops
early (the generator is closed or garbage collected, or raises), and an exception
inside it is re-raised in the consumer.

On a GPU the thread makes the loader's GPU its current device once and queues its
copies and transforms on a CUDA stream of its own, so they overlap the training
kernels. Each batch comes with an event: the consumer's stream waits for it (also
under ``CUPY_CUDA_PER_THREAD_DEFAULT_STREAM=1``, where the two threads' default
streams are not ordered at all), copies the batch into its own stream's memory, and
hands the thread's memory back only after that copy (CuPy's pool gives memory freed
by the consumer back to the thread's stream, which must not overwrite it early).
"""
from __future__ import annotations

import queue
import threading

import numpy as np

from .. import backend
from ..autograd import Tensor

PREFETCH_DEPTH = 2  # batches ready ahead of the consumer; each is one batch of device memory
_POLL_S = 0.05  # how often a blocked worker checks whether the consumer has gone


def _check_labels(labels: np.ndarray, n: int, num_classes) -> None:
    """Raise ValueError, naming DataLoader, unless labels are n integer class indices (< num_classes)."""
    if labels.shape != (n,):
        raise ValueError(f"DataLoader: expected labels of shape ({n},), got {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"DataLoader: labels must be integer class indices, got dtype {labels.dtype}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or (num_classes is not None and high >= num_classes):
        expected = ">= 0" if num_classes is None else f"in [0, {num_classes})"
        raise ValueError(f"DataLoader: labels must be {expected}, got values from {low} to {high}")


class SeededBatches:
    """The batch arithmetic every minidl loader shares: epochs of batches in a seeded order.

    A subclass sets ``batch_size``, ``shuffle``, ``seed``, ``drop_last``, ``shard``
    (None or (rank, size)) and ``epoch``, and has ``num_samples`` and
    ``epoch_batches(epoch, start_batch)``.
    """

    def __len__(self) -> int:
        """Number of batches per epoch."""
        full, rest = divmod(self.num_samples, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch that ``iter(loader)`` runs (its order and augmentation)."""
        self.epoch = int(epoch)

    def __iter__(self):
        return self.epoch_batches(self.epoch)

    def order(self, epoch: int) -> np.ndarray:
        """The sample indices of ``epoch`` in the order they are served."""
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_samples)

    def batch_rows(self, batch_index: int) -> tuple:
        """(start, stop, total): this process's rows of global batch ``batch_index`` of ``total``.

        Unsharded (``shard`` None), all rows: (0, total, total). Sharded over ``size``
        processes, the rows are split into contiguous slices whose sizes differ by at
        most one (a short last batch may leave a process none).
        """
        total = min(self.batch_size, self.num_samples - batch_index * self.batch_size)
        if self.shard is None:
            return 0, total, total
        rank, size = self.shard
        return total * rank // size, total * (rank + 1) // size, total

    def batch_rng(self, epoch: int, batch_index: int) -> np.random.Generator:
        """The generator of batch ``batch_index``'s augmentation in ``epoch``."""
        return np.random.default_rng([self.seed, int(epoch), int(batch_index), 1])

    def _parse_shard(self, shard):
        """None, or (rank, size) as ints with 0 <= rank < size; else a ValueError naming the loader."""
        if shard is not None and not (len(shard) == 2 and 0 <= shard[0] < shard[1]):
            raise ValueError(f"{type(self).__name__}: expected shard=(rank, size) with 0 <= rank < size, got "
                             f"{shard!r}")
        return None if shard is None else (int(shard[0]), int(shard[1]))

    def _check_start(self, start_batch: int) -> None:
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"{type(self).__name__}.epoch_batches: expected 0 <= start_batch <= {len(self)}, got "
                             f"{start_batch}")


class DataLoader(SeededBatches):
    """Iterate over (images, labels) in mini-batches on a device.

    Args:
        images: host array (N,C,H,W), usually uint8.
        labels: host array (N,) of class indices.
        batch_size: samples per batch.
        shuffle: a fresh, reproducible permutation every epoch; False keeps order.
        seed: base seed for shuffling and augmentation.
        device: where batches are delivered ("cpu", "cuda", "cuda:N").
        transform: ``transform(x_uint8_on_device, rng) -> float array`` (see
            ``build_transform``); None casts to float32.
        drop_last: drop the final, smaller batch.
        prefetch: prepare the next batches in a background thread.
        shard: None, or (rank, size) to serve only process ``rank``'s slice of each
            global batch of ``batch_size`` (data parallelism); the transform is
            then called as ``transform(x, rng, rows=(start, total))``.
        num_classes: when given, every label must lie in [0, num_classes).
        alternate_flips: mirror each image in every other epoch (module doc), after the
            transform (which should then not flip: ``Transform(flip=False)``).

    The labels are checked here, once, on the host: integers, >= 0 and (with
    ``num_classes``) below it. So the loss need not read them back from a GPU every
    batch (see ``minidl.functional.loss``). A loader needs at least one image.

    Yields (per batch):
        x: Tensor (B,C,H',W') float32 on ``device``; y: int64 array (B,) on ``device``
        (B is this process's share of the batch when sharded).
    """

    def __init__(self, images, labels, batch_size: int, shuffle: bool = True, seed: int = 0, device="cpu",
                 transform=None, drop_last: bool = False, prefetch: bool = True, shard=None,
                 num_classes: int | None = None, alternate_flips: bool = False):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim != 4:
            raise ValueError(f"DataLoader: expected images of shape (N,C,H,W), got {images.shape}")
        if images.shape[0] == 0:
            raise ValueError("DataLoader: got no images; a loader needs at least one")
        if int(batch_size) != batch_size or batch_size <= 0:
            raise ValueError(f"DataLoader: expected a positive integer batch_size, got {batch_size!r}")
        _check_labels(labels, images.shape[0], num_classes)
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.device = backend.parse_device(device)
        self.transform = transform
        self.drop_last = bool(drop_last)
        self.prefetch = bool(prefetch)
        self.shard = self._parse_shard(shard)
        self.epoch = 0
        self.alternate_flips = bool(alternate_flips)
        self._first_flips = None   # drawn on first use (a bool per image)

    @property
    def num_samples(self) -> int:
        return self.images.shape[0]

    def make_batch(self, epoch: int, batch_index: int, order: np.ndarray | None = None):
        """Build batch ``batch_index`` of ``epoch``: a pure function of (seed, epoch, batch_index).

        Returns:
            (x, y): Tensor (B,C,H',W') float32 and int64 array (B,), both on the device.
        """
        # images[idx] (B,C,H,W) uint8 on host -> device -> transform -> x (B,C,H',W') float32
        order = self.order(epoch) if order is None else order
        idx = order[batch_index * self.batch_size:(batch_index + 1) * self.batch_size]
        start, stop, total = self.batch_rows(batch_index)
        x = backend.to_device(self.images[idx[start:stop]], self.device)
        y = backend.to_device(self.labels[idx[start:stop]], self.device)
        if self.transform is None:
            x = x.astype(np.float32)
        else:
            rng = self.batch_rng(epoch, batch_index)
            x = self.transform(x, rng) if self.shard is None else self.transform(x, rng, rows=(start, total))
        if self.alternate_flips:
            x = self._flip_alternately(x, idx[start:stop], epoch)
        return Tensor(x), y

    def flips(self, epoch: int, indices) -> np.ndarray:
        """Whether ``alternate_flips`` mirrors the images ``indices`` in ``epoch`` (a bool per image)."""
        if self._first_flips is None:
            self._first_flips = np.random.default_rng([self.seed, 0, 0, 2]).random(self.num_samples) < 0.5
        return self._first_flips[indices] != bool(int(epoch) % 2)

    def _flip_alternately(self, x, indices, epoch: int):
        # x (B,C,H,W), flips (B,) -> (B,1,1,1) -> x mirrored where set
        xp = backend.get_array_module(x)
        flip = backend.to_device(self.flips(epoch, indices)[:, None, None, None], backend.device_of(x))
        return xp.where(flip, x[:, :, :, ::-1], x)

    def epoch_batches(self, epoch: int, start_batch: int = 0):
        """The batches of ``epoch`` from ``start_batch`` on (for resuming mid-epoch).

        Returns:
            an iterator of (x, y) as in ``make_batch``; closing it early (``break``)
            also stops the prefetch thread.
        """
        self._check_start(start_batch)
        order = self.order(epoch)
        indices = range(start_batch, len(self))
        if self.prefetch:
            return self._prefetched(epoch, indices, order)
        return self._serial(epoch, indices, order)

    def _serial(self, epoch: int, indices: range, order: np.ndarray):
        for b in indices:
            with backend.device_context(self.device):  # entered per batch, never held across a yield
                batch = self.make_batch(epoch, b, order)
            yield batch

    def _prefetched(self, epoch: int, indices: range, order: np.ndarray):
        """The same batches, built ahead in a worker thread; the thread never outlives this generator."""
        ready: queue.Queue = queue.Queue(maxsize=PREFETCH_DEPTH)
        stop = threading.Event()
        stream = backend.new_stream(self.device) if self.device.type == "cuda" else None

        def put(item) -> bool:
            # a bounded put that gives up once the consumer is gone, so the worker cannot hang
            while not stop.is_set():
                try:
                    ready.put(item, timeout=_POLL_S)
                    return True
                except queue.Full:
                    continue
            return False

        def work():
            try:
                # CuPy's current device is per thread: this thread's is the loader's, for good
                backend.use_device(self.device)
                with backend.stream_context(stream):
                    for b in indices:
                        batch = self.make_batch(epoch, b, order)
                        done = None if stream is None else backend.record_event(stream)
                        if stop.is_set() or not put(("batch", (batch, done))):
                            return
                put(("done", None))
            except BaseException as exc:  # hand every failure to the consumer
                put(("error", exc))

        worker = threading.Thread(target=work, name="minidl-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                kind, payload = ready.get()
                if kind == "done":
                    return
                if kind == "error":
                    raise payload
                batch, done = payload
                yield batch if done is None else self._take_over(batch, done, stream)
        finally:
            stop.set()
            worker.join()

    def _take_over(self, batch, done, stream):
        """A batch the worker built on ``stream``, on the consumer's current stream and in its memory.

        The consumer's stream waits for the worker's copies and transform (``done``);
        the copies land in memory of the consumer's stream; the worker's stream waits
        for the copies before it may reuse the memory they read.
        """
        x, y = batch
        with backend.device_context(self.device):
            backend.wait_event(done)
            x, y = x.data.copy(), y.copy()
            backend.wait_event(backend.record_event(), stream)
        return Tensor(x), y
