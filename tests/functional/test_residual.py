"""Residual additions (x + f(x)) are plain autograd: Add's backward hands one gradient array to both
branches, with no copy. That is only safe if no backward downstream writes into the gradient it
receives; this test would catch one that does, through a ResNet basic block of the fast kernels."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.kernels
from minidl import Function


class Probe(Function):
    """The identity; in backward it logs the gradient array it receives, and a copy of it."""

    def __init__(self, log):
        self.log = log

    def forward(self, x):
        return x.view()

    def backward(self, gy):
        self.log.append((gy, gy.copy()))
        return gy


def _basic_block_gradients(mode, dtype):
    """Gradients of a stem conv and one basic block, relu(bn(conv(relu(bn(conv(x))))) + x), in ``mode``."""
    rng = np.random.default_rng(0)
    c = 16   # enough channels for the CPU's Winograd convolution
    params = {
        "image": rng.standard_normal((4, 3, 8, 8)), "stem": rng.standard_normal((c, 3, 3, 3)) * 0.3,
        "w1": rng.standard_normal((c, c, 3, 3)) * 0.1, "w2": rng.standard_normal((c, c, 3, 3)) * 0.1,
        "g0": rng.uniform(0.5, 1.5, c), "g1": rng.uniform(0.5, 1.5, c), "g2": rng.uniform(0.5, 1.5, c),
        "b0": rng.normal(0, 0.1, c), "b1": rng.normal(0, 0.1, c), "b2": rng.normal(0, 0.1, c),
    }
    t = {k: minidl.tensor(v.astype(dtype), requires_grad=True) for k, v in params.items()}
    log = []

    def bn(h, i):
        return F.batch_norm(h, t[f"g{i}"], t[f"b{i}"], None, None, training=True)

    with minidl.kernels.use(mode):
        x = F.relu(bn(F.conv2d(t["image"], t["stem"], padding=1), 0))
        h = F.relu(bn(F.conv2d(x, t["w1"], padding=1), 1))
        h = bn(F.conv2d(h, t["w2"], padding=1), 2)
        # The probe after the sum logs the very array Add hands on; those on the branches, what each received.
        y = F.relu(Probe(log)(Probe(log)(h) + Probe(log)(x)))
        y.backward(rng.standard_normal(y.shape).astype(dtype))
    return {k: v.grad.numpy() for k, v in t.items()}, log


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_both_branches_share_one_gradient_that_nothing_overwrites(dtype):
    grads, log = _basic_block_gradients("fast", dtype)
    (summed, summed_copy), (first, _), (second, _) = log
    assert first is second is summed   # Add gave both branches the array it received: no copy
    # The array is as it arrived, after both branches' whole backward: neither wrote into it.
    np.testing.assert_array_equal(summed, summed_copy)
    reference, _ = _basic_block_gradients("reference", dtype)
    tol = 2e-4 if dtype == np.float32 else 1e-10
    for name, g in grads.items():
        np.testing.assert_allclose(g, reference[name], rtol=tol, atol=tol * np.abs(reference[name]).max(),
                                   err_msg=name)


def test_the_probe_would_see_an_in_place_write():
    # The check above can fail: a backward that scales its incoming gradient in place is caught.
    class ScaleInPlace(Function):
        def forward(self, x):
            return x * 2

        def backward(self, gy):
            gy *= 2
            return gy

    log = []
    x = minidl.tensor(np.ones((2, 2)), requires_grad=True)
    y = Probe(log)(ScaleInPlace()(x) + x)
    y.backward(np.ones((2, 2)))
    [(summed, summed_copy)] = log
    assert not np.array_equal(summed, summed_copy)
