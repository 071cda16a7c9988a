"""minidl.kernels.cpu.threads: slicing, items in parallel with single-threaded BLAS, and the fast paths through it."""
import threading

import numpy as np
import pytest

import minidl
import minidl.functional as F
from minidl.gradcheck import check_gradients
from minidl.kernels.cpu import channel_passes, elementwise, slices, threads
from minidl.kernels.cpu import spatial as cpu_spatial
from minidl.kernels.cpu import conv as cpu_conv
from minidl.kernels.cpu import winograd as cpu_winograd

threadpoolctl = pytest.importorskip("threadpoolctl")  # a runtime dependency; parallel needs it


@pytest.fixture
def two_workers(monkeypatch):
    monkeypatch.setenv("MINIDL_NUM_THREADS", "2")
    assert threads.workers() == 2


def test_num_threads_reads_the_environment(monkeypatch):
    monkeypatch.setenv("MINIDL_NUM_THREADS", "3")
    assert threads.num_threads() == 3
    monkeypatch.delenv("MINIDL_NUM_THREADS")
    assert threads.num_threads() >= 1
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("MINIDL_NUM_THREADS", bad)
        with pytest.raises(ValueError, match=f"MINIDL_NUM_THREADS must be a positive integer, got '{bad}'"):
            threads.num_threads()


@pytest.mark.parametrize("n,per_item,budget", [(32, 10, 70), (7, 1, 100), (5, 100, 1), (1, 1, 1), (33, 3, 10)])
def test_balanced_slices_cover_the_batch_evenly(two_workers, n, per_item, budget):
    parts = slices.balanced_slices(n, per_item, budget)
    assert parts[0].start == 0 and parts[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
    sizes = [s.stop - s.start for s in parts]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    assert max(sizes) <= max(1, budget // per_item)          # each slice fits the budget
    if n >= 2:
        assert len(parts) % 2 == 0 or len(parts) == n      # even per worker, unless one item each


def test_empty_batch_has_no_slices_and_kernels_accept_it(two_workers):
    assert slices.balanced_slices(0, 10, 100) == []
    x = minidl.tensor(np.zeros((0, 2, 5, 5)), requires_grad=True)
    y = F.max_pool2d(F.conv2d(x, minidl.tensor(np.ones((3, 2, 3, 3)), requires_grad=True), padding=1), 2)
    assert y.shape == (0, 3, 2, 2)
    y.sum().backward()
    assert x.grad.shape == (0, 2, 5, 5)


def test_parallel_map_uses_both_workers_with_blas_single_threaded(two_workers):
    seen, both_started = [], threading.Barrier(2, timeout=10)

    def fn(i):
        if i < 2:
            both_started.wait()  # items 0 and 1 run at the same time, in two threads
        blas = [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
        seen.append((threading.get_ident(), blas, threads.workers()))
        return i * 10

    assert threads.parallel_map(fn, range(7)) == [0, 10, 20, 30, 40, 50, 60]   # in item order
    assert len({ident for ident, _, _ in seen}) == 2          # two different threads
    assert threading.get_ident() in {ident for ident, _, _ in seen}   # the caller takes items too
    assert all(blas == [1] * len(blas) for _, blas, _ in seen)  # BLAS limited to one thread inside
    assert all(inner == 1 for _, _, inner in seen)            # nested regions would run serially


def _blas_threads():
    return [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]


def test_first_parallel_region_pins_blas_to_one_thread(two_workers, monkeypatch):
    if not _blas_threads():
        pytest.skip("threadpoolctl sees no BLAS library")
    monkeypatch.setattr(threads, "_blas_pinned", False)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):  # restores the original on exit
        threads.parallel_map(lambda i: i, range(2))
        assert _blas_threads() == [1] * len(_blas_threads())   # kept after the region
    monkeypatch.setenv("MINIDL_NUM_THREADS", "1")
    monkeypatch.setattr(threads, "_blas_pinned", False)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        threads.parallel_map(lambda i: i, range(2))          # serial: BLAS left alone
        assert _blas_threads() == [2] * len(_blas_threads())


def test_region_limits_blas_again_only_when_the_caller_raised_it(two_workers):
    if not _blas_threads():
        pytest.skip("threadpoolctl sees no BLAS library")
    threads.pin_blas_to_one_thread()
    assert threads.parallel_map(lambda i: _blas_threads(), range(2)) == [[1] * len(_blas_threads())] * 2
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):   # raised after the pin
        assert threads.parallel_map(lambda i: _blas_threads(), range(2)) == [[1] * len(_blas_threads())] * 2
        assert _blas_threads() == [2] * len(_blas_threads())            # the caller's setting is back


@pytest.mark.parametrize("shape", [(6, 50, 40), (40, 50, 6), (3, 4, 5)])
def test_matmul_splits_the_longer_side_and_matches(two_workers, monkeypatch, shape):
    m, k, n = shape
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    calls = []
    original = threads.parallel_map
    monkeypatch.setattr(threads, "parallel_map", lambda fn, items: calls.append(list(items)) or original(fn, items))
    monkeypatch.setattr(threads, "_SPLIT_MACS", 10)
    np.testing.assert_allclose(threads.matmul(a, b), a @ b, rtol=1e-13)
    np.testing.assert_allclose(threads.matmul(b.T, a.T), (a @ b).T, rtol=1e-13)  # transposed views
    blocks = calls[0]
    assert len(blocks) == min(4, max(m, n)) and blocks[0].start == 0 and blocks[-1].stop == max(m, n)
    monkeypatch.setattr(threads, "_SPLIT_MACS", 2**22)
    calls.clear()
    np.testing.assert_allclose(threads.matmul(a, b), a @ b, rtol=1e-13)
    assert calls == []                                          # small: one plain product


def test_parallel_map_balances_when_one_worker_is_slow(two_workers):
    # Workers pull items: while one is stuck on item 0, the other takes all the rest.
    release, done = threading.Event(), []

    def fn(i):
        if i == 0:
            assert release.wait(timeout=10)
        else:
            done.append(i)
            if len(done) == 9:
                release.set()
        return threading.get_ident()

    owners = threads.parallel_map(fn, range(10))
    assert len(set(owners[1:])) == 1 and owners[0] != owners[1]


def test_parallel_map_serial_with_one_worker_and_errors_propagate(monkeypatch, two_workers):
    ran = []

    def boom(i):
        ran.append(i)
        if i == 1:
            raise RuntimeError("item 1 failed")
        return i

    with pytest.raises(RuntimeError, match="item 1 failed"):
        threads.parallel_map(boom, range(1000))
    assert len(ran) < 1000                                     # the others stopped taking items
    assert threads.parallel_map(lambda i: -i, [0, 1]) == [0, -1]  # the pool still works after an error
    monkeypatch.setenv("MINIDL_NUM_THREADS", "1")
    main = threading.get_ident()
    assert threads.parallel_map(lambda i: threading.get_ident() == main, [0, 1, 2]) == [True] * 3


def test_parallel_map_workers_see_the_callers_errstate(two_workers):
    # NumPy's error state is context-local; kernels run inside np.errstate(...) must
    # behave the same in the worker threads (the CLI relies on it to stay quiet).
    big = np.full(4, 1e308)
    with np.errstate(over="raise"):
        with pytest.raises(FloatingPointError):
            threads.parallel_map(lambda i: big * 10.0, range(4))
    with np.errstate(over="ignore"):
        assert all(np.isinf(r).all() for r in threads.parallel_map(lambda i: big * 10.0, range(4)))


_CONV_SHAPES = [  # stride, padding, groups, c, o
    (1, 1, 1, 3, 4),    # gx by correlation
    (2, 1, 2, 4, 6),    # gx by col2im
    (1, 2, 1, 2, 8),    # O > C: col2im at stride 1
]
_CONV_PATHS = [("im2col", False), ("im2col", True), ("winograd_4x4", False), ("winograd_2x2", True)]


@pytest.mark.parametrize("stride,padding,groups,c,o,algorithm,channels_last,kernel", [
    shape + path + (3,) for shape in _CONV_SHAPES for path in _CONV_PATHS
    if shape[0] == 1 or path[0] == "im2col"]    # Winograd: stride 1 only
    + [(1, "same", 2, 4, 6, "winograd_2x2", True, 5),    # F(2x2, 5x5): 3 bands of tile rows
       (1, 2, 1, 2, 8, "winograd_4x4", False, 5)])
def test_conv2d_in_parallel_slices_matches_serial(monkeypatch, stride, padding, groups, c, o, algorithm,
                                                  channels_last, kernel):
    rng = np.random.default_rng(5)
    x_data = rng.standard_normal((7, c, 6, 6))
    if channels_last:
        x_data = np.ascontiguousarray(x_data.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    x = minidl.tensor(x_data, requires_grad=True)
    w = minidl.tensor(rng.standard_normal((o, c // groups, kernel, kernel)), requires_grad=True)
    b = minidl.tensor(rng.standard_normal(o), requires_grad=True)
    # One image per slice: 7 slices.
    monkeypatch.setattr(cpu_conv, "CONV_COLUMN_BYTES", 1)
    monkeypatch.setattr(cpu_conv, "CONV_MIN_PIXELS", 1)
    monkeypatch.setattr(cpu_winograd, "WINOGRAD_BYTES", 1)
    monkeypatch.setattr(cpu_winograd, "WINOGRAD_MIN_TILES", 1)

    def conv(x, w, b=None):
        return F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups, algorithm=algorithm)
    gy = rng.standard_normal(conv(x, w, b).shape)

    def run(workers):
        monkeypatch.setenv("MINIDL_NUM_THREADS", str(workers))
        for t in (x, w, b):
            t.grad = None
        y = conv(x, w, b)
        y.backward(gy)
        return y.numpy(), x.grad.numpy(), w.grad.numpy(), b.grad.numpy()

    serial, parallel = run(1), run(2)
    for got, expected in zip(parallel, serial):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(parallel[2], serial[2])    # gw summed in slice order either way
    check_gradients(conv, [x, w])


def test_max_pool2d_in_parallel_slices_matches_serial(monkeypatch):
    rng = np.random.default_rng(6)
    x = minidl.tensor(rng.standard_normal((5, 3, 9, 9)), requires_grad=True)
    gy = rng.standard_normal((5, 3, 4, 4))
    monkeypatch.setattr(cpu_spatial, "POOLING_BYTES", 1)    # one image per slice
    monkeypatch.setattr(threads, "SERIAL_BYTES", -1)        # small as it is, on the workers

    def run(workers):
        monkeypatch.setenv("MINIDL_NUM_THREADS", str(workers))
        x.grad = None
        y = F.max_pool2d(x, 3, stride=2)
        y.backward(gy)
        return y.numpy(), x.grad.numpy()

    for got, expected in zip(run(2), run(1)):
        np.testing.assert_array_equal(got, expected)



@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_in_parallel_chunks_matches_serial(monkeypatch, training):
    rng = np.random.default_rng(9)
    x = minidl.tensor(rng.standard_normal((5, 3, 4, 4)) * 3 + 1, requires_grad=True)
    gamma = minidl.tensor(rng.uniform(0.5, 1.5, 3), requires_grad=True)
    beta = minidl.tensor(rng.standard_normal(3), requires_grad=True)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    gy = rng.standard_normal((5, 3, 4, 4))
    monkeypatch.setattr(channel_passes, "CHANNEL_CHUNK_BYTES", 2 * 16 * 8)  # two rows per chunk: 8 chunks
    monkeypatch.setattr(threads, "SERIAL_BYTES", -1)                 # small as it is, on the workers

    def run(workers):
        monkeypatch.setenv("MINIDL_NUM_THREADS", str(workers))
        for t in (x, gamma, beta):
            t.grad = None
        y = F.batch_norm(x, gamma, beta, rm.copy(), rv.copy(), training)
        y.backward(gy)
        return y.numpy(), x.grad.numpy(), gamma.grad.numpy(), beta.grad.numpy()

    for got, expected in zip(run(2), run(1)):
        np.testing.assert_array_equal(got, expected)


def test_map_pieces_runs_small_work_in_the_calling_thread(two_workers, monkeypatch):
    regions = []
    original = threads.parallel_map
    monkeypatch.setattr(threads, "parallel_map", lambda fn, items: regions.append(1) or original(fn, items))
    a = np.zeros(1000)
    assert threads.map_pieces(a, lambda i: i * i, range(4), nbytes=threads.SERIAL_BYTES) == [0, 1, 4, 9]
    assert not regions
    assert threads.map_pieces(a, lambda i: i * i, range(4), nbytes=threads.SERIAL_BYTES + 1) == [0, 1, 4, 9]
    assert threads.map_pieces(a, lambda i: i * i, range(4)) == [0, 1, 4, 9]   # size unknown: workers
    assert len(regions) == 2


def test_small_activations_give_the_same_results_in_the_calling_thread(two_workers, monkeypatch):
    # ReLU, batch norm and pooling up to SERIAL_BYTES run their chunks in this thread:
    # bit for bit what the workers give on the same chunks.
    rng = np.random.default_rng(12)
    x_data = np.ascontiguousarray((rng.standard_normal((6, 4, 8, 8)) * 2 + 1).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    gy = rng.standard_normal((6, 4, 4, 4))
    monkeypatch.setattr(cpu_spatial, "POOLING_BYTES", 1)                    # one image per slice
    monkeypatch.setattr(elementwise, "ELEMENTWISE_CHUNK_BYTES", 256 * 8)    # ReLU: 6 chunks
    monkeypatch.setattr(channel_passes, "CHANNEL_ROW_VALUES", 8)            # batch norm: rows of 2 pixels
    monkeypatch.setattr(channel_passes, "_chunks", lambda rows: [slice(i, i + 16) for i in range(0, len(rows), 16)])

    def run(serial_bytes):
        monkeypatch.setattr(threads, "SERIAL_BYTES", serial_bytes)
        x = minidl.tensor(x_data, requires_grad=True)
        gamma = minidl.tensor(np.linspace(0.5, 1.5, 4), requires_grad=True)
        beta = minidl.tensor(np.linspace(-1, 1, 4), requires_grad=True)
        y = F.max_pool2d(F.relu(F.batch_norm(x, gamma, beta, None, None, True)), 3, stride=2, padding=1)
        y.backward(gy)
        return y.numpy(), x.grad.numpy(), gamma.grad.numpy(), beta.grad.numpy()

    for got, expected in zip(run(2**40), run(-1)):
        np.testing.assert_array_equal(got, expected)
