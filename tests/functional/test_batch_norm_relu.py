"""Training's batch norm + ReLU in one kernel against the two ops composed, bit for bit."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.kernels
from minidl.functional.fused import batch_norm_relu
from minidl.gradcheck import check_gradients
from minidl.kernels.cpu import channel_passes

from support.arrays import channels_last


def _inputs(shape, last, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) + 0.3).astype(dtype)
    x[:, 1] = 0.75                       # a constant channel: xhat = 0, so y = beta = 0 exactly (ReLU's kink)
    c = shape[1]
    gamma = rng.uniform(-1.5, 1.5, c).astype(dtype)   # negative scales flip which side is clipped
    beta = rng.uniform(-0.5, 0.5, c).astype(dtype)
    beta[1] = 0.0
    gy = rng.standard_normal(shape).astype(dtype)
    return (channels_last(x) if last else x), gamma, beta, gy


def _run(fn, x0, gamma0, beta0, gy, affine=(True, True), wants=(True, True, True), **kwargs):
    """y, x.grad, gamma.grad, beta.grad (None where not asked) and the running statistics after one step."""
    x = minidl.tensor(x0, requires_grad=wants[0])
    gamma = minidl.tensor(gamma0, requires_grad=wants[1]) if affine[0] else None
    beta = minidl.tensor(beta0, requires_grad=wants[2]) if affine[1] else None
    c = x0.shape[1]
    running = np.zeros(c, x0.dtype), np.ones(c, x0.dtype)
    y = fn(x, gamma, beta, *running, training=True, **kwargs)
    label = y.creator.label
    y.backward(gy)
    grads = [None if t is None or t.grad is None else t.grad.numpy() for t in (x, gamma, beta)]
    return label, [y.numpy()] + grads + list(running)


def _composed(x, gamma, beta, rm, rv, **kwargs):
    return F.relu(F.batch_norm(x, gamma, beta, rm, rv, **kwargs))


def _assert_same(got, want):
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if g is not None:
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,last", [((4, 6, 5, 7), True), ((4, 6, 5, 7), False), ((9, 6), False),
                                        ((3, 6, 11), False)])
@pytest.mark.parametrize("affine", [(True, True), (False, False), (True, False)])
@pytest.mark.parametrize("tiny_chunks", [False, True])
def test_fused_equals_composed_bit_for_bit(monkeypatch, dtype, shape, last, affine, tiny_chunks):
    x0, gamma0, beta0, gy = _inputs(shape, last, dtype)
    if tiny_chunks:   # chunks that start mid-image and mid-channel (3 rows of one pixel)
        monkeypatch.setattr(channel_passes, "CHANNEL_CHUNK_BYTES", 3 * 6 * np.dtype(dtype).itemsize)
        monkeypatch.setattr(channel_passes, "CHANNEL_ROW_VALUES", 6)
    with minidl.kernels.use("fast"):
        label, got = _run(batch_norm_relu, x0, gamma0, beta0, gy, affine)
        assert label == "BatchNormReLU [fused passes]"
        _, want = _run(_composed, x0, gamma0, beta0, gy, affine)
    _assert_same(got, want)
    assert (got[0] >= 0).all() and (got[0][:, 1] == 0).all() and (got[1][:, 1] == 0).all()
    assert got[0].strides == x0.strides   # the output keeps the input's layout


@pytest.mark.parametrize("wants", [(False, False, True), (False, True, False), (True, False, False)])
def test_only_some_gradients_asked_for(wants):
    # beta's gradient alone still needs the ReLU's mask: the kernel must not sum the unmasked gy
    x0, gamma0, beta0, gy = _inputs((4, 6, 5, 7), True, np.float64)
    with minidl.kernels.use("fast"):
        _, got = _run(batch_norm_relu, x0, gamma0, beta0, gy, wants=wants)
        _, want = _run(_composed, x0, gamma0, beta0, gy, wants=wants)
    _assert_same(got, want)


def test_synchronised_statistics_go_through_channel_reduce():
    x0, gamma0, beta0, gy = _inputs((4, 6, 5, 7), True, np.float64)
    calls = []

    def reduce(values):   # one process: the sum over processes is the values themselves
        calls.append(values.shape)
        return values

    with minidl.kernels.use("fast"):
        _, got = _run(batch_norm_relu, x0, gamma0, beta0, gy, channel_reduce=reduce)
        fused_calls, calls[:] = list(calls), []
        _, want = _run(_composed, x0, gamma0, beta0, gy, channel_reduce=reduce)
    _assert_same(got, want)
    assert fused_calls == calls and len(calls) == 3   # twice forward, once backward, as batch_norm's


def test_gradients_against_finite_differences(kernel_mode):
    rng = np.random.default_rng(3)
    x = minidl.tensor(channels_last(rng.standard_normal((3, 4, 5, 5))), requires_grad=True)
    gamma = minidl.tensor(rng.uniform(0.5, 1.5, 4), requires_grad=True)
    beta = minidl.tensor(rng.uniform(-0.3, 0.3, 4), requires_grad=True)
    check_gradients(lambda x, g, b: batch_norm_relu(x, g, b, training=True), [x, gamma, beta])


def test_evaluation_and_the_reference_mode_compose_the_two_ops():
    x0, gamma0, beta0, _ = _inputs((4, 6, 5, 7), True, np.float32)
    x, gamma, beta = minidl.tensor(x0, requires_grad=True), minidl.tensor(gamma0), minidl.tensor(beta0)
    rm, rv = np.full(6, 0.1, np.float32), np.full(6, 2.0, np.float32)
    with minidl.kernels.use("fast"):
        y = batch_norm_relu(x, gamma, beta, rm, rv, training=False)
        assert y.creator.label == "ReLU [chunked]"
        np.testing.assert_array_equal(y.numpy(), _composed(x, gamma, beta, rm, rv, training=False).numpy())
    with minidl.kernels.use("reference"):
        assert type(batch_norm_relu(x, gamma, beta, training=True).creator).__name__ == "ReLU"
    with pytest.raises(ValueError, match="batch_norm: expected weight of shape"):
        batch_norm_relu(x, minidl.tensor(np.ones(5, np.float32)), None, training=True)
