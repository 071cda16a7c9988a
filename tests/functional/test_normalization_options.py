"""batch_norm and local_response_norm on PyTorch's shapes and keywords: (N, C, *S) of any rank,
PyTorch's keyword call, size-1 dimensions; against PyTorch and by finite differences."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
from minidl.gradcheck import check_gradients

torch = pytest.importorskip("torch")
tf = torch.nn.functional


def leaf(values):
    return minidl.tensor(values, requires_grad=True)


@pytest.mark.parametrize("shape", [(4, 3, 2, 3, 2), (2, 3, 1, 1), (1, 3, 5), (3, 2, 1, 1, 1)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_on_any_rank_matches_pytorch(kernel_mode, rng, shape, training):
    c = shape[1]
    x, gamma, beta = rng.standard_normal(shape) * 2 + 1, rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    t_rm, t_rv = torch.tensor(rm), torch.tensor(rv)
    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    ty = tf.batch_norm(tx, t_rm, t_rv, tg, tb, training=training, momentum=0.3, eps=1e-3)
    gy = rng.standard_normal(shape)
    ty.backward(torch.tensor(gy))
    mx, mg, mb = leaf(x), leaf(gamma), leaf(beta)
    # PyTorch's keyword call means the same in minidl (the positional orders differ).
    my = F.batch_norm(mx, running_mean=rm, running_var=rv, weight=mg, bias=mb, training=training,
                      momentum=0.3, eps=1e-3)
    my.backward(gy)
    np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(rm, t_rm.numpy(), rtol=1e-12)
    np.testing.assert_allclose(rv, t_rv.numpy(), rtol=1e-12)
    for m, t in ((mx, tx), (mg, tg), (mb, tb)):
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-9, atol=1e-10)


def test_batch_norm_defaults_are_pytorchs(rng):
    """weight, bias None and training=False by default: evaluation with the running statistics."""
    x, rm, rv = rng.standard_normal((3, 2, 4)), rng.standard_normal(2), rng.uniform(0.5, 2, 2)
    expected = tf.batch_norm(torch.tensor(x), torch.tensor(rm), torch.tensor(rv)).numpy()
    np.testing.assert_allclose(F.batch_norm(minidl.tensor(x), running_mean=rm, running_var=rv).numpy(), expected,
                               rtol=1e-12)


def test_batch_norm_gradients_on_5d_input(kernel_mode, rng):
    x, g, b = leaf(rng.standard_normal((2, 2, 2, 3, 2))), leaf(rng.uniform(0.5, 1.5, 2)), leaf(rng.standard_normal(2))
    check_gradients(lambda x, g, b: F.batch_norm(x, g, b, None, None, training=True), [x, g, b])


@pytest.mark.parametrize("shape", [(2, 6, 5), (1, 4, 2, 3, 2), (2, 3, 1, 1), (2, 1, 3)])
@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_lrn_on_any_rank_matches_pytorch_with_alpha_times_size(rng, shape, size):
    """A 3-D x is (N, C, L), as in PyTorch; minidl's alpha is PyTorch's alpha / size."""
    x = rng.standard_normal(shape) * 2
    tx = torch.tensor(x, requires_grad=True)
    ty = tf.local_response_norm(tx, size, alpha=1e-2 * size, beta=0.75, k=2.0)
    gy = rng.standard_normal(shape)
    ty.backward(torch.tensor(gy))
    mx = leaf(x)
    my = F.local_response_norm(mx, size, alpha=1e-2, beta=0.75, k=2.0)
    my.backward(gy)
    np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_lrn_gradients_and_empty_inputs(rng):
    for shape in [(2, 5, 3), (1, 3, 2, 2, 2)]:
        x = leaf(rng.standard_normal(shape))
        check_gradients(lambda x: F.local_response_norm(x, 3, alpha=0.1, beta=0.6, k=1.5), [x])
    for shape in [(0, 3, 4), (2, 0, 4, 4), (2, 3, 0)]:
        assert F.local_response_norm(leaf(np.zeros(shape)), 3).shape == shape
