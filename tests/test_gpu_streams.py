"""Work on CUDA streams of its own is ordered by events: shown on a fake CuPy that checks every kernel.

minidl runs two things beside the stream that computes: the data prefetch thread
(copies to the GPU and transforms, on a stream of its own) and NCCL's collectives
(on a communicator's stream, so that a bucket's all-reduce overlaps backward). On a
GPU nothing orders kernels of different streams but events (and the legacy default
stream's implicit waits, which a non-blocking stream does not take part in), so a
missing event means reading an array before it is written. The fake CuPy
(``support/fake_cuda_streams.py``) stamps every array with the kernel that wrote it
and records each unordered read; each test also runs once with the events removed
to show that it can fail.
"""
import contextlib

import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.kernels
import minidl.nn as nn
from minidl import backend
from minidl.data import DataLoader
from minidl.distributed import DataParallel
from minidl.distributed.world import World
from minidl.optim import SGD
from minidl.train import Trainer

from support import fake_cupy

STREAMS = [False, True]
STREAM_IDS = ["legacy-default-stream", "per-thread-default-streams"]


@pytest.fixture(autouse=True)
def references():
    with minidl.kernels.use("reference"):   # the raw kernels' emulation has no streams
        yield


def _no_events(monkeypatch):
    monkeypatch.setattr(backend, "wait_event", lambda event, stream=None: None)


def test_the_fake_catches_a_read_that_no_event_orders(monkeypatch):
    fake = fake_cupy.install(monkeypatch)
    backend.use_device("cuda:0")
    side = backend.new_stream(backend.Device("cuda:0"))
    with side:
        x = fake.asarray(np.arange(3.0)) * 2          # written on the side stream
    _ = x + 1                                         # read on the legacy stream: nothing orders it
    assert [(op, w.kind, r.kind) for op, w, r, _ in fake.streams.unordered] == [("add.__call__", "non_blocking",
                                                                                 "legacy")]
    fake.streams.unordered.clear()
    backend.wait_event(backend.record_event(side))    # now the legacy stream waits for the side stream
    _ = x + 1
    assert fake.streams.unordered == []
    blocking = fake.cuda.Stream()                     # a blocking stream and the legacy one wait for each other
    with blocking:
        y = fake.asarray(np.arange(3.0)) * 2
    _ = y + 1
    assert fake.streams.unordered == []


def _loader(device="cuda:1"):
    images = np.random.default_rng(0).integers(0, 256, (10, 3, 4, 4), dtype=np.uint8)
    return DataLoader(images, np.arange(10) % 3, 4, device=device, seed=1)


@pytest.mark.parametrize("per_thread", STREAMS, ids=STREAM_IDS)
@pytest.mark.parametrize("events", [True, False], ids=["events", "no-events"])
def test_prefetched_batches_are_ordered_before_the_consumer_reads_them(monkeypatch, per_thread, events):
    fake = fake_cupy.install(monkeypatch, per_thread_streams=per_thread)
    if not events:
        _no_events(monkeypatch)
    backend.use_device("cuda:1")   # the process's GPU, as launch.device_for makes it
    sums = [float(backend.to_numpy((x.data * 2).sum())) + float(backend.to_numpy(y.sum())) for x, y in _loader()]
    expected = [float(_loader("cpu").make_batch(0, b)[0].data.sum() * 2 + _loader("cpu").make_batch(0, b)[1].sum())
                for b in range(3)]
    np.testing.assert_allclose(sums, expected)
    worker = {s.kind for op, s in fake.streams.launches if op == "asarray"}
    assert worker == {"non_blocking"}, worker   # the copies to the GPU ran beside the consumer's stream
    if events:
        assert fake.streams.unordered == [], fake.streams.unordered[0][3]
        # each batch's memory goes back to the worker's stream only after the consumer's copies
        handed_back = [(s.kind, e.stream.kind) for s, e in fake.streams.waits if s.kind == "non_blocking"]
        assert len(handed_back) == 3 and {k for _, k in handed_back} == {"per_thread" if per_thread else "legacy"}
    else:
        assert fake.streams.unordered, "the consumer read batches that no event ordered after their copies"
    assert fake.cross_device == [] and fake.contexts == {1}


def _model(seed=0):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, rng=np.random.default_rng(seed)), nn.BatchNorm2d(4),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3, rng=np.random.default_rng(seed + 1)))


def test_a_run_on_cuda_1_never_makes_a_context_on_gpu_0(monkeypatch):
    """Trainer.fit makes the model's GPU current for good; the prefetch thread does too.

    (Moving the model there before, in a thread with no GPU chosen, switched back to
    GPU 0 at the end of ``to``: a process calls ``backend.use_device`` first, as
    ``launch.device_for`` does for the command line.)
    """
    fake = fake_cupy.install(monkeypatch)
    model = _model().to("cuda:1")
    fake.contexts.clear()
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1), _loader(), None, epochs=1, progress=False,
                      plots=False, log=lambda *a: None)
    trainer.fit()
    assert fake.contexts == {1} and fake.cross_device == [] and fake.streams.unordered == []


def _step(model, x, labels, parallel=None, total=None, after_backward=lambda: None):
    """One SGD step; returns the gradients (read after ``after_backward()``)."""
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimizer.zero_grad()
    with parallel.batch(0, total) if parallel is not None else contextlib.nullcontext():
        out = model(x)
    loss = F.softmax_cross_entropy(out, labels)
    if parallel is None:
        loss.backward()
    else:
        parallel.backward(loss, out, len(labels), total)
    after_backward()
    grads = [backend.to_numpy(p.grad.data) for p in model.parameters()]
    optimizer.step()
    return grads


@pytest.mark.parametrize("per_thread", STREAMS, ids=STREAM_IDS)
@pytest.mark.parametrize("events", [True, False], ids=["events", "no-events"])
def test_nccl_runs_on_its_own_stream_ordered_after_the_gradients_and_before_the_step(monkeypatch, per_thread, events):
    """Two processes with the same rows (the fake NCCL sums 2 copies): the gradients of one process's batch.

    Every NCCL kernel (the start's broadcasts, sync batch norm's sums, the gradient
    buckets) runs on the communicator's non-blocking stream; events order it after
    the kernels that wrote its arrays and before the kernels that read them, and
    the host never waits for it in backward.
    """
    fake = fake_cupy.install(monkeypatch, per_thread_streams=per_thread, nccl=True)
    backend.use_device("cuda:1")
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal((4, 3, 4, 4))
    labels0 = np.array([0, 2, 1, 2])
    one = _model().to("cuda:1", dtype=np.float64)
    expected = _step(one, minidl.tensor(x0, device="cuda:1"), backend.to_device(labels0, "cuda:1"))
    fake.streams.unordered.clear()
    if not events:
        _no_events(monkeypatch)
    model = _model().to("cuda:1", dtype=np.float64)
    world = World(rank=0, size=2, local_size=1, gpu_comm="nccl")
    parallel = DataParallel(model, world, bucket_bytes=200)
    waits_before = len(fake.streams.waits)
    host_syncs, in_backward = [], []
    real_host_waits = fake.streams.host_waits
    monkeypatch.setattr(fake.streams, "host_waits", lambda clock: host_syncs.append(clock) or real_host_waits(clock))
    grads = _step(model, minidl.tensor(x0, device="cuda:1"), backend.to_device(labels0, "cuda:1"), parallel, 8,
                  after_backward=lambda: in_backward.append(len(host_syncs)))
    assert in_backward == [0]   # backward and the reducer's wait never made the host wait for the GPU
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    comm = {s for _, s in fake.cuda.nccl.calls}
    assert len(comm) == 1 and next(iter(comm)).kind == "non_blocking"
    assert {"allReduce", "bcast"} <= {name for name, _ in fake.cuda.nccl.calls}
    assert parallel.reducer.stats["started_in_backward"] >= 1
    if events:
        assert fake.streams.unordered == [], fake.streams.unordered[0][3]
        assert len(fake.streams.waits) > waits_before
    else:
        assert any(op.startswith("nccl") for op, _, _, _ in fake.streams.unordered)
    assert fake.cross_device == [] and fake.contexts == {1}
