"""Every op on an empty batch (N = 0), forward and backward, with the fast kernels and the references.

A data-parallel step can hand a process no rows: each op must then return an empty
result of the right shape, give empty input gradients and zero parameter gradients,
and (synchronised batch norm, dropout with batch_slice) keep in step with the other
processes.
"""
import numpy as np
import pytest

import minidl
import minidl.functional as F

from support.arrays import channels_last


def leaf(values):
    return minidl.tensor(values, requires_grad=True)


def run_backward(y, *inputs):
    """Backward from a random upstream gradient; every input's gradient (zeros where N = 0 leaves nothing)."""
    y.backward(np.random.default_rng(0).standard_normal(y.shape))
    return [t.grad.numpy() for t in inputs]


@pytest.mark.parametrize("algorithm", ["auto", "reference", "im2col", "winograd"])
@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv2d(kernel_mode, rng, algorithm, last, with_bias):
    x0 = rng.standard_normal((0, 16, 6, 5))
    x, w, b = leaf(channels_last(x0) if last else x0), leaf(rng.standard_normal((4, 16, 3, 3))), leaf(np.ones(4))
    args = [x, w, b] if with_bias else [x, w]
    y = F.conv2d(*args, padding=1, algorithm=algorithm)
    assert y.shape == (0, 4, 6, 5)
    grads = run_backward(y, *args)
    assert grads[0].shape == (0, 16, 6, 5)
    for g, t in zip(grads[1:], args[1:]):
        np.testing.assert_array_equal(g, np.zeros(t.shape))


def test_conv2d_dilated_and_strided(kernel_mode, rng):
    x, w = leaf(rng.standard_normal((0, 2, 9, 9))), leaf(rng.standard_normal((3, 2, 3, 3)))
    y = F.conv2d(x, w, stride=2, padding="same", dilation=2)
    assert y.shape == (0, 3, 5, 5)
    gx, gw = run_backward(y, x, w)
    assert gx.shape == x.shape and not gw.any()


@pytest.mark.parametrize("options", [{}, {"padding": 1, "ceil_mode": True}, {"dilation": 2},
                                     {"return_indices": True}])
@pytest.mark.parametrize("last", [False, True])
def test_max_pool2d(kernel_mode, rng, options, last):
    x0 = rng.standard_normal((0, 3, 7, 7))
    x = leaf(channels_last(x0) if last else x0)
    out = F.max_pool2d(x, 3, 2, **options)
    y = out[0] if options.get("return_indices") else out
    if options.get("return_indices"):
        assert out[1].shape == y.shape and out[1].dtype == np.int64
    assert y.shape[:2] == (0, 3)
    (gx,) = run_backward(y, x)
    assert gx.shape == x.shape


def test_batch_norm_in_evaluation(kernel_mode, rng):
    for shape in [(0, 3), (0, 3, 4), (0, 3, 4, 4), (0, 3, 2, 2, 2)]:
        x, g, b = leaf(rng.standard_normal(shape)), leaf(np.ones(3)), leaf(np.zeros(3))
        y = F.batch_norm(x, g, b, np.zeros(3), np.ones(3), training=False)
        assert y.shape == shape
        gx, gg, gb = run_backward(y, x, g, b)
        assert gx.shape == shape and not gg.any() and not gb.any()


def test_batch_norm_unsynchronised_training_follows_pytorch(kernel_mode, rng):
    # PyTorch: an empty batch gives an empty result and leaves the running statistics
    # alone; one value per channel is an error.
    x, g, b = leaf(rng.standard_normal((0, 3, 4, 4))), leaf(np.ones(3)), leaf(np.zeros(3))
    rm, rv = np.full(3, 0.5), np.full(3, 2.0)
    y = F.batch_norm(x, g, b, rm, rv, training=True)
    assert y.shape == (0, 3, 4, 4)
    np.testing.assert_array_equal(rm, 0.5)
    np.testing.assert_array_equal(rv, 2.0)
    gx, gg, gb = run_backward(y, x, g, b)
    assert gx.shape == x.shape and not gg.any() and not gb.any()
    with pytest.raises(ValueError, match="batch_norm: training needs more than one value per channel"):
        F.batch_norm(leaf(np.ones((1, 3, 1, 1))), g, b, rm, rv, training=True)


class CountingReduce:
    """A stand-in for the other processes: adds their per-channel totals, counting the calls."""

    def __init__(self, others):
        self.others, self.calls = others, 0

    def __call__(self, values):
        total = values + self.others[self.calls]
        self.calls += 1
        return total


@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 4, 4)])
def test_synchronised_batch_norm_with_no_rows_matches_the_collectives(kernel_mode, rng, shape):
    """A process with no rows sends zeros and a count of 0, as often as the others call."""
    c, spatial = shape[1], shape[2:]
    other = rng.standard_normal((5, c) + spatial)            # the rows of the other processes
    axes = (0,) + tuple(range(2, other.ndim))
    m = other.size // c
    mean, var = other.mean(axis=axes), other.var(axis=axes)
    per_channel = (1, c) + (1,) * len(spatial)
    gy_other = rng.standard_normal(other.shape)
    xhat = (other - mean.reshape(per_channel)) / np.sqrt(var + 1e-5).reshape(per_channel)
    others = [np.concatenate([other.sum(axis=axes), [m]]),                  # forward: sums and count
              ((other - mean.reshape(per_channel)) ** 2).sum(axis=axes),      # forward: squared deviations
              np.concatenate([gy_other.sum(axis=axes), (gy_other * xhat).sum(axis=axes)])]   # backward
    reduce = CountingReduce(others)
    x, g, b = leaf(rng.standard_normal(shape)), leaf(np.ones(c)), leaf(np.zeros(c))
    rm, rv = np.zeros(c), np.ones(c)
    y = F.batch_norm(x, g, b, rm, rv, training=True, momentum=0.5, channel_reduce=reduce)
    assert y.shape == shape and reduce.calls == 2
    np.testing.assert_allclose(rm, 0.5 * mean, rtol=1e-12)                          # the global batch's
    np.testing.assert_allclose(rv, 0.5 + 0.5 * var * m / (m - 1), rtol=1e-12)
    gx, gg, gb = run_backward(y, x, g, b)
    assert reduce.calls == 3                                    # as many calls as a process with rows
    assert gx.shape == shape and not gg.any() and not gb.any()  # no rows: no share of gamma's and beta's


def test_linear(kernel_mode, rng):
    for x_shape in [(0, 3), (2, 0, 3), (0, 5, 3)]:
        x, w, b = leaf(rng.standard_normal(x_shape)), leaf(rng.standard_normal((4, 3))), leaf(np.ones(4))
        y = F.linear(x, w, b)
        assert y.shape == x_shape[:-1] + (4,)
        gx, gw, gb = run_backward(y, x, w, b)
        assert gx.shape == x_shape and not gw.any() and not gb.any()


def test_relu_softmax_lrn(kernel_mode, rng):
    for fn, shape in [(F.relu, (0, 3, 4, 4)), (F.softmax, (0, 5)), (F.log_softmax, (4, 0)),
                      (lambda t: F.softmax(t, dim=1), (2, 0, 3)), (F.local_response_norm, (0, 3, 4, 4))]:
        x = leaf(rng.standard_normal(shape))
        y = fn(x)
        assert y.shape == shape
        (gx,) = run_backward(y, x)
        assert gx.shape == shape


@pytest.mark.parametrize("batch_slice", [None, (2, 4)])
def test_dropout(kernel_mode, batch_slice):
    x = leaf(np.ones((0, 3)))
    y = F.dropout(x, 0.5, rng=np.random.default_rng(0), batch_slice=batch_slice)
    assert y.shape == (0, 3)
    (gx,) = run_backward(y, x)
    assert gx.shape == (0, 3)


def test_dropout_with_no_rows_keeps_the_generator_in_step():
    """Every process draws the global batch's numbers, rows or not, so the next masks still agree."""
    empty, full = np.random.default_rng(3), np.random.default_rng(3)
    F.dropout(leaf(np.ones((0, 3))), 0.5, rng=empty, batch_slice=(4, 4))
    F.dropout(leaf(np.ones((4, 3))), 0.5, rng=full, batch_slice=(0, 4))
    assert empty.random() == full.random()


@pytest.mark.parametrize("reduction, expected", [("mean", np.nan), ("sum", 0.0)])
def test_cross_entropy_reductions_of_nothing(kernel_mode, rng, reduction, expected):
    """PyTorch's values: a mean over no samples is NaN, a sum 0; no gradient to give."""
    for probabilities in (False, True):
        x = leaf(rng.standard_normal((0, 4)))
        target = np.zeros((0, 4)) if probabilities else np.zeros(0, np.int64)
        loss = F.cross_entropy(x, target, weight=np.ones(4), reduction=reduction, label_smoothing=0.1)
        assert loss.shape == ()
        np.testing.assert_array_equal(loss.numpy(), expected)
        (gx,) = run_backward(loss, x)
        assert gx.shape == (0, 4)
    none = F.cross_entropy(leaf(rng.standard_normal((0, 4, 2))), np.zeros((0, 2), np.int64), reduction="none")
    assert none.shape == (0, 2)


def test_softmax_cross_entropy_keeps_its_clear_error():
    with pytest.raises(ValueError, match="softmax_cross_entropy: got an empty batch"):
        F.softmax_cross_entropy(leaf(np.zeros((0, 3))), np.zeros(0, np.int64))
