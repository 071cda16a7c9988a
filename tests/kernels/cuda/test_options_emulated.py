"""The GPU's paths with PyTorch's options and with empty batches, on the CPU.

NumPy arrays take the CUDA paths (dispatch sees "cuda") and the raw kernels run
compiled with g++ (tests/support/cuda_emulation.py), as in test_raw_kernels.py:
ceil_mode reaches the raw max-pooling kernels as extra padding, dilation and
return_indices run the reference, and N = 0 passes through conv2d, max_pool2d and
batch norm (synchronised too) without a launch.
"""
import contextlib

import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.kernels
from minidl import backend
from minidl.kernels import dispatch
from minidl.kernels.cuda import launches

from support.cuda_emulation import Emulator


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    if not Emulator.available():
        pytest.skip("g++ is not on PATH")
    return Emulator(tmp_path_factory.mktemp("cuda_emulation_options"))


@pytest.fixture
def emulate(emulator, monkeypatch):
    @contextlib.contextmanager
    def on():
        with monkeypatch.context() as patch:
            patch.setattr(backend, "raw_kernel", emulator.kernel)
            patch.setattr(dispatch, "device_type", lambda array: "cuda")
            patch.setattr(launches, "_BLOCK", 5)
            patch.setattr(launches, "_MAX_BLOCKS", 3)
            emulator.launches.clear()
            yield emulator
    return on


def run_both(emulate, fn):
    """fn() with the references, then on the emulated GPU paths; both results, and the kernels launched."""
    with minidl.kernels.use("reference"):
        expected = fn()
    with emulate() as emulator:
        got = fn()
        names = {name for name, _, _ in emulator.launches}
    return expected, got, names


def grads_of(y, *inputs):
    y.backward(np.linspace(-1, 1, y.size).reshape(y.shape))
    return [y.data] + [t.grad.data for t in inputs]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_ceil_mode_runs_the_raw_kernels(emulate, rng, dtype):
    x0 = rng.permutation(np.arange(2 * 3 * 8 * 9, dtype=dtype)).reshape(2, 3, 8, 9)

    def run():
        x = minidl.tensor(x0, requires_grad=True)
        return grads_of(F.max_pool2d(x, 3, 2, 1, ceil_mode=True), x)

    expected, got, names = run_both(emulate, run)
    assert names == {"minidl_max_pool2d_forward", "minidl_max_pool2d_backward"}
    assert got[0].shape == (2, 3, 5, 5)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_dilation_and_indices_run_the_reference(emulate, rng):
    x0 = rng.standard_normal((1, 2, 7, 7))

    def run():
        x, w = minidl.tensor(x0, requires_grad=True), minidl.tensor(np.ones((2, 2, 2, 2)), requires_grad=True)
        y = F.conv2d(x, w, padding="same", dilation=2)
        pooled, indices = F.max_pool2d(y, 2, dilation=2, return_indices=True)
        return grads_of(pooled, x, w) + [indices.data]

    expected, got, names = run_both(emulate, run)
    assert not names
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_empty_batches_take_the_gpu_paths_without_a_launch(emulate, rng):
    def run():
        x = minidl.tensor(np.zeros((0, 4, 9, 9)), requires_grad=True)
        w = minidl.tensor(rng.standard_normal((6, 2, 3, 3)), requires_grad=True)
        b = minidl.tensor(np.ones(6), requires_grad=True)
        y = F.max_pool2d(F.conv2d(x, w, b, stride=2, padding="same", groups=2), 3, 2, ceil_mode=True)
        g, beta = minidl.tensor(np.ones(6), requires_grad=True), minidl.tensor(np.zeros(6), requires_grad=True)
        y = F.batch_norm(y, g, beta, np.zeros(6), np.ones(6), training=False)
        return grads_of(y, x, w, b, g, beta)

    expected, got, names = run_both(emulate, run)
    assert not names
    assert got[0].shape == (0, 6, 2, 2) and got[1].shape == (0, 4, 9, 9)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_synchronised_batch_norm_with_no_rows(emulate, rng):
    """The GPU's passes take N = 0 too, and call the reduce as often as the reference does."""
    others = [np.concatenate([np.full(3, 6.0), [4.0]]), np.full(3, 8.0), np.full(6, 2.0)]

    def run():
        calls = []

        def reduce(values):
            calls.append(len(values))
            return values + others[len(calls) - 1]

        x = minidl.tensor(np.zeros((0, 3, 2, 2)), requires_grad=True)
        g, b = minidl.tensor(np.ones(3), requires_grad=True), minidl.tensor(np.zeros(3), requires_grad=True)
        rm, rv = np.zeros(3), np.ones(3)
        y = F.batch_norm(x, g, b, rm, rv, training=True, channel_reduce=reduce)
        return grads_of(y, x, g, b) + [rm, rv, np.array(calls)]

    expected, got, _ = run_both(emulate, run)
    np.testing.assert_array_equal(got[-1], [4, 3, 6])
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
