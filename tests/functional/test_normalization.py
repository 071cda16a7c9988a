"""Batch norm and local response norm: forward vs loop references, backward via check_gradients,
running statistics, errors, and PyTorch (when importable) as a second opinion."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minidl
import minidl.functional as F
import minidl.kernels
from minidl import backend
from minidl.gradcheck import check_gradients


def leaf(values, device="cpu", requires_grad=True):
    return minidl.tensor(values, requires_grad=requires_grad, device=device)


# ---------------------------------------------------------------------------
# batch_norm
# ---------------------------------------------------------------------------

def bn_reference(x, gamma, beta, mean=None, var=None, eps=1e-5):
    """Per-channel loop; mean/var None means the batch's (fsum-exact, biased variance)."""
    y = np.empty_like(x, dtype=np.float64)
    for c in range(x.shape[1]):
        values = x[:, c].astype(np.float64).ravel()
        mu = math.fsum(values) / values.size if mean is None else mean[c]
        sigma2 = math.fsum((v - mu) ** 2 for v in values) / values.size if var is None else var[c]
        g = 1.0 if gamma is None else gamma[c]
        b = 0.0 if beta is None else beta[c]
        y[:, c] = g * (x[:, c] - mu) / math.sqrt(sigma2 + eps) + b
    return y


def bn_inputs(rng, shape, device, requires_grad=True):
    c = shape[1]
    x = leaf(rng.standard_normal(shape) * 2.0 + 0.5, device, requires_grad)
    gamma = leaf(rng.uniform(0.5, 1.5, c), device, requires_grad)
    beta = leaf(rng.standard_normal(c), device, requires_grad)
    running_mean = backend.to_device(rng.standard_normal(c), device)
    running_var = backend.to_device(rng.uniform(0.5, 2.0, c), device)
    return x, gamma, beta, running_mean, running_var


SHAPES = [(5, 3), (3, 2, 4), (2, 3, 4, 5)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_batch_norm_training_forward_matches_loop_reference(kernel_mode, device, rng, shape, affine):
    x, gamma, beta, rm, rv = bn_inputs(rng, shape, device)
    weight = gamma if affine in ("both", "weight") else None
    bias = beta if affine in ("both", "bias") else None
    y = F.batch_norm(x, weight, bias, rm, rv, training=True, eps=1e-3)
    expected = bn_reference(x.numpy(), None if weight is None else gamma.numpy(),
                            None if bias is None else beta.numpy(), eps=1e-3)
    assert y.shape == shape and y.dtype == np.float64
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm_eval_uses_running_stats_and_leaves_them(kernel_mode, device, rng, shape):
    x, gamma, beta, rm, rv = bn_inputs(rng, shape, device)
    rm_before, rv_before = backend.to_numpy(rm).copy(), backend.to_numpy(rv).copy()
    y = F.batch_norm(x, gamma, beta, rm, rv, training=False, eps=1e-3)
    expected = bn_reference(x.numpy(), gamma.numpy(), beta.numpy(), rm_before, rv_before, eps=1e-3)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(backend.to_numpy(rm), rm_before)
    np.testing.assert_array_equal(backend.to_numpy(rv), rv_before)


@pytest.mark.parametrize("shape", [(6, 3), (4, 2, 3, 3)])
def test_batch_norm_running_stats_follow_pytorch_rule(kernel_mode, device, rng, shape):
    c = shape[1]
    rm = backend.to_device(np.zeros(c), device)
    rv = backend.to_device(np.ones(c), device)
    expected_mean, expected_var = np.zeros(c), np.ones(c)
    momentum = 0.3
    for step in range(3):
        x = rng.standard_normal(shape) * (step + 1) + step
        F.batch_norm(leaf(x, device), None, None, rm, rv, training=True, momentum=momentum)
        per_channel = np.moveaxis(x, 1, 0).reshape(c, -1)
        expected_mean = (1 - momentum) * expected_mean + momentum * per_channel.mean(axis=1)
        expected_var = (1 - momentum) * expected_var + momentum * per_channel.var(axis=1, ddof=1)
    np.testing.assert_allclose(backend.to_numpy(rm), expected_mean, rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(rv), expected_var, rtol=1e-12)


def test_batch_norm_training_updates_float32_buffers_in_place(kernel_mode, rng):
    rm, rv = np.zeros(2, np.float32), np.ones(2, np.float32)
    x = rng.standard_normal((8, 2)).astype(np.float32)
    y = F.batch_norm(minidl.tensor(x), None, None, rm, rv, training=True, momentum=1.0)
    assert y.dtype == np.float32 and rm.dtype == np.float32
    np.testing.assert_allclose(rm, x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(rv, x.var(axis=0, ddof=1), rtol=1e-5)


def test_batch_norm_training_without_running_stats(rng):
    x = rng.standard_normal((4, 3))
    y = F.batch_norm(leaf(x), None, None, None, None, training=True)
    np.testing.assert_allclose(y.numpy(), bn_reference(x, None, None), rtol=1e-10)


def test_batch_norm_float32_variance_is_stable_for_large_offsets(kernel_mode, rng):
    # E[x^2] - E[x]^2 in float32 would lose every digit here (x ~ 1e4, std 1).
    x = (1e4 + rng.standard_normal((16, 2, 8, 8))).astype(np.float32)
    y = F.batch_norm(minidl.tensor(x), None, None, None, None, training=True)
    np.testing.assert_allclose(y.numpy(), bn_reference(x, None, None), atol=5e-3)


def channels_last(t):
    """A leaf with t's values in channels-last memory (the CPU's layout after a conv)."""
    data = backend.get_array_module(t.data).ascontiguousarray(t.data.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return minidl.Tensor(data, requires_grad=t.requires_grad)


@pytest.mark.parametrize("shape,last", [((4, 3), False), ((3, 2, 3), False), ((2, 2, 3, 2), False),
                                        ((2, 3, 3, 2), True)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradients(kernel_mode, device, rng, shape, last, training):
    x, gamma, beta, rm, rv = bn_inputs(rng, shape, device)
    x = channels_last(x) if last else x

    def fn(x, gamma, beta):
        # Copies: training mode would otherwise drift the buffers across the many calls.
        return F.batch_norm(x, gamma, beta, rm.copy(), rv.copy(), training, eps=1e-2)

    check_gradients(fn, [x, gamma, beta])
    x.grad = None
    check_gradients(lambda x: F.batch_norm(x, None, None, rm.copy(), rv.copy(), training), [x])


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradients_of_affine_only(kernel_mode, device, rng, training):
    x, gamma, beta, rm, rv = bn_inputs(rng, (3, 2, 2, 2), device)
    x.requires_grad = False
    check_gradients(lambda g, b: F.batch_norm(x, g, b, rm, rv, training), [gamma, beta])
    gamma.grad = None
    beta.requires_grad = False
    check_gradients(lambda g: F.batch_norm(x, g, beta, rm, rv, training), [gamma])


def test_batch_norm_eval_backward_uses_the_stats_of_its_forward(kernel_mode, rng):
    x, gamma, beta, rm, rv = bn_inputs(rng, (4, 3), "cpu")
    scale = gamma.numpy() / np.sqrt(rv + 1e-5)
    y = F.batch_norm(x, gamma, beta, rm, rv, training=False)
    F.batch_norm(leaf(rng.standard_normal((4, 3)) * 5), None, None, rm, rv, training=True)  # moves rm, rv
    gy = rng.standard_normal((4, 3))
    y.backward(gy)
    np.testing.assert_allclose(x.grad.numpy(), gy * scale, rtol=1e-12)


@given(n=st.integers(1, 4), c=st.integers(1, 3), spatial=st.lists(st.integers(1, 3), max_size=2),
       training=st.booleans(), seed=st.integers(0, 2 ** 16), mode=st.sampled_from(minidl.kernels.MODES))
@settings(max_examples=20, deadline=None)
def test_batch_norm_any_shape(n, c, spatial, training, seed, mode):
    shape = (n, c, *spatial)
    if training and n * int(np.prod(spatial)) < 2:
        shape = (n + 1, c, *spatial)
    rng = np.random.default_rng(seed)
    x, gamma, beta, rm, rv = bn_inputs(rng, shape, "cpu")
    x = channels_last(x) if len(shape) == 4 and seed % 2 else x
    with minidl.kernels.use(mode):
        y = F.batch_norm(x, gamma, beta, rm.copy(), rv.copy(), training, eps=1e-2)
        expected = bn_reference(x.numpy(), gamma.numpy(), beta.numpy(), None if training else rm,
                                None if training else rv, eps=1e-2)
        np.testing.assert_allclose(y.numpy(), expected, rtol=1e-9, atol=1e-12)
        check_gradients(lambda x, g, b: F.batch_norm(x, g, b, rm.copy(), rv.copy(), training, eps=1e-2),
                        [x, gamma, beta])


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_torch(kernel_mode, rng, shape, training):
    torch = pytest.importorskip("torch")
    x, gamma, beta, rm, rv = bn_inputs(rng, shape, "cpu")
    trm, trv = torch.tensor(rm.copy()), torch.tensor(rv.copy())
    y = F.batch_norm(x, gamma, beta, rm, rv, training, momentum=0.2, eps=1e-3)
    gy = rng.standard_normal(shape)
    y.backward(gy)
    tx, tg, tb = (torch.tensor(t.numpy(), requires_grad=True) for t in (x, gamma, beta))
    ty = torch.nn.functional.batch_norm(tx, trm, trv, tg, tb, training, 0.2, 1e-3)
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), atol=1e-6, rtol=0)
    for ours, theirs in ((x, tx), (gamma, tg), (beta, tb)):
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(rm, trm.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(rv, trv.numpy(), atol=1e-6, rtol=0)


BAD_BATCH_NORM_CALLS = {  # name -> (arguments from x (2,3,2,2), gamma (3,), rm, rv; words in the message)
    "rank 1": (lambda x, g, rm, rv: (x.reshape(-1), g, g, rm, rv, True), ["(24,)"]),
    "rank 5": (lambda x, g, rm, rv: (x.reshape(1, 2, 3, 2, 2), g, g, rm, rv, True), ["(1, 2, 3, 2, 2)"]),
    "weight": (lambda x, g, rm, rv: (x, g[:2], g, rm, rv, True), ["weight", "(2,)", "(2, 3, 2, 2)"]),
    "bias": (lambda x, g, rm, rv: (x, g, g[:1], rm, rv, True), ["bias", "(1,)", "(3,)"]),
    "running_mean": (lambda x, g, rm, rv: (x, g, g, np.zeros(4), rv, True), ["running_mean", "(4,)", "(3,)"]),
    "running_var": (lambda x, g, rm, rv: (x, g, g, rm, np.ones(2), False), ["running_var", "(2,)"]),
    "eval without stats": (lambda x, g, rm, rv: (x, g, g, None, None, False), ["running_mean"]),
    "one value": (lambda x, g, rm, rv: (x[:1, :, :1, :1], g, g, rm, rv, True), ["more than one value"]),
}


@pytest.mark.parametrize("case", sorted(BAD_BATCH_NORM_CALLS))
def test_batch_norm_rejects_bad_input(rng, case):
    make_args, words = BAD_BATCH_NORM_CALLS[case]
    x = leaf(rng.standard_normal((2, 3, 2, 2)))
    with pytest.raises(ValueError, match="batch_norm") as info:
        F.batch_norm(*make_args(x, leaf(np.ones(3)), np.zeros(3), np.ones(3)))
    for word in words:
        assert word in str(info.value)


# ---------------------------------------------------------------------------
# local_response_norm
# ---------------------------------------------------------------------------

def lrn_reference(x, size, alpha, beta, k):
    """The paper's formula with explicit loops over channels and window members."""
    n, c, h, w = x.shape
    y = np.empty_like(x)
    for ch in range(c):
        total = np.zeros((n, h, w))
        for j in range(ch - size // 2, ch + (size - 1) // 2 + 1):
            if 0 <= j < c:
                total += x[:, j] ** 2
        y[:, ch] = x[:, ch] / (k + alpha * total) ** beta
    return y


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 9])
@pytest.mark.parametrize("beta", [0.75, 0.5, 1.0, 0.6])
def test_lrn_forward_matches_loop_reference(device, rng, size, beta):
    x = rng.standard_normal((2, 6, 3, 2)) * 3
    y = F.local_response_norm(leaf(x, device), size, alpha=0.05, beta=beta, k=1.5)
    np.testing.assert_allclose(y.numpy(), lrn_reference(x, size, 0.05, beta, 1.5), rtol=1e-12)


def test_lrn_defaults_are_the_papers(rng):
    x = rng.standard_normal((1, 7, 2, 2)) * 30
    y = F.local_response_norm(leaf(x))
    np.testing.assert_allclose(y.numpy(), lrn_reference(x, 5, 1e-4, 0.75, 2.0), rtol=1e-12)


def test_lrn_keeps_float32(rng):
    x = (rng.standard_normal((2, 5, 3, 3)) * 10).astype(np.float32)
    y = F.local_response_norm(minidl.tensor(x), 3, alpha=0.01)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), lrn_reference(x.astype(np.float64), 3, 0.01, 0.75, 2.0), rtol=1e-5)


@pytest.mark.parametrize("size, beta", [(1, 0.75), (2, 0.75), (3, 0.6), (4, 1.0), (5, 0.75), (7, 0.5)])
def test_lrn_gradients(device, rng, size, beta):
    # alpha large enough that the cross-channel terms of the gradient matter.
    x = leaf(rng.standard_normal((2, 5, 2, 3)) * 1.5, device)
    check_gradients(lambda t: F.local_response_norm(t, size, alpha=0.3, beta=beta, k=1.0), [x])


@given(n=st.integers(1, 2), c=st.integers(1, 6), h=st.integers(1, 3), size=st.integers(1, 7),
       beta=st.sampled_from([0.5, 0.75, 0.9]), seed=st.integers(0, 2 ** 16))
@settings(max_examples=20, deadline=None)
def test_lrn_any_shape(n, c, h, size, beta, seed):
    x = np.random.default_rng(seed).standard_normal((n, c, h, 2))
    t = leaf(x)
    np.testing.assert_allclose(F.local_response_norm(t, size, 0.2, beta, 1.0).numpy(),
                               lrn_reference(x, size, 0.2, beta, 1.0), rtol=1e-12)
    check_gradients(lambda t: F.local_response_norm(t, size, 0.2, beta, 1.0), [t])


@pytest.mark.parametrize("size", [2, 3, 5, 8])
def test_lrn_matches_torch_with_alpha_times_size(rng, size):
    torch = pytest.importorskip("torch")
    x = leaf(rng.standard_normal((2, 7, 3, 3)) * 4)
    y = F.local_response_norm(x, size, alpha=0.02, beta=0.75, k=2.0)
    gy = rng.standard_normal(x.shape)
    y.backward(gy)
    tx = torch.tensor(x.numpy(), requires_grad=True)
    ty = torch.nn.functional.local_response_norm(tx, size, alpha=0.02 * size, beta=0.75, k=2.0)
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), atol=1e-10, rtol=0)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), atol=1e-10, rtol=0)


@pytest.mark.parametrize("shape, kwargs, word", [
    ((2, 3), {}, "(N, C, *S)"),
    ((1, 3, 2, 2), {"size": 0}, "size"),
    ((1, 3, 2, 2), {"size": 2.5}, "size"),
    ((1, 3, 2, 2), {"k": 0.0}, "k"),
    ((1, 3, 2, 2), {"alpha": -1.0}, "alpha"),
])
def test_lrn_rejects_bad_input(shape, kwargs, word):
    with pytest.raises(ValueError, match="local_response_norm") as info:
        F.local_response_norm(leaf(np.ones(shape)), **kwargs)
    assert word in str(info.value)


# ---- synchronised batch norm (data parallelism), simulated by threads ----------------

class _ThreadWorld:
    """Sums arrays over `size` threads, like an all-reduce over processes (in rank order)."""

    def __init__(self, size):
        import threading
        self.barrier, self.slots = threading.Barrier(size), [None] * size

    def reducer(self, rank):
        def reduce(values):
            self.slots[rank] = values.copy()
            self.barrier.wait()
            total = sum(self.slots[1:], self.slots[0].copy())
            self.barrier.wait()
            values[...] = total
            return values
        return reduce


def test_synchronised_batch_norm_over_uneven_slices_is_the_whole_batch_norm(kernel_mode):
    import threading
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, (5, 3, 4, 4))
    gamma, beta, gy = rng.normal(size=3), rng.normal(size=3), rng.normal(size=x.shape)

    def run(rows, reduce, scale):
        xt = minidl.tensor(x[rows], requires_grad=True)
        g, b = minidl.tensor(gamma, requires_grad=True), minidl.tensor(beta, requires_grad=True)
        rm, rv = np.zeros(3), np.ones(3)
        y = F.batch_norm(xt, g, b, rm, rv, training=True, channel_reduce=reduce)
        y.backward(gy[rows] * scale)
        return y.numpy(), xt.grad.numpy(), g.grad.numpy(), b.grad.numpy(), rm, rv

    whole = run(slice(0, 5), None, 1.0)
    # Each process scales its upstream gradient by the number of processes (its loss is
    # the mean over its slice); the reducer later divides the summed gradients by it.
    world, parts = _ThreadWorld(2), [None, None]
    slices = [slice(0, 3), slice(3, 5)]

    def worker(r):
        parts[r] = run(slices[r], world.reducer(r), 2.0)

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    np.testing.assert_allclose(np.concatenate([parts[0][0], parts[1][0]]), whole[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([parts[0][1], parts[1][1]]) / 2, whole[1], rtol=1e-10, atol=1e-12)
    for k in (2, 3):  # gamma, beta: local sums, whose mean over the processes is the whole's
        np.testing.assert_allclose((parts[0][k] + parts[1][k]) / 2, whole[k], rtol=1e-10)
    for k in (4, 5):  # running statistics from the global batch, equal on both
        np.testing.assert_allclose(parts[0][k], whole[k], rtol=1e-12)
        np.testing.assert_allclose(parts[1][k], whole[k], rtol=1e-12)
