"""Arithmetic, reduction and shape ops: forward against NumPy, backward through check_gradients."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minidl
import minidl.functional as F
from minidl.functional.basic import sum_to
from minidl.gradcheck import check_gradients


def leaf(rng, shape, device="cpu", positive=False):
    values = rng.uniform(0.5, 2.0, shape) if positive else rng.standard_normal(shape)
    return minidl.tensor(values, requires_grad=True, device=device)


BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
}


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("shapes", [((2, 3), (2, 3)), ((2, 3), (3,)), ((4, 1, 3), (2, 1)), ((1,), (2, 2))])
def test_broadcasting_binary_ops(device, rng, op, shapes):
    fn, ref = BINARY[op]
    a, b = leaf(rng, shapes[0], device), leaf(rng, shapes[1], device, positive=True)
    np.testing.assert_allclose(fn(a, b).numpy(), ref(a.numpy(), b.numpy()), rtol=1e-12)
    check_gradients(fn, [a, b])


def test_unary_and_power(device, rng):
    x = leaf(rng, (3, 4), device, positive=True)
    np.testing.assert_allclose((x ** 3).numpy(), x.numpy() ** 3)
    for fn in (lambda t: -t, lambda t: t ** 3, lambda t: t ** -0.5, lambda t: t.exp(), lambda t: t.log(),
               lambda t: 2.0 - t, lambda t: 3.0 / t):
        x.grad = None
        check_gradients(fn, [x])


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (4, 2)), ((2, 3, 4), (2, 4, 5))])
def test_matmul(device, rng, shapes):
    a, b = leaf(rng, shapes[0], device), leaf(rng, shapes[1], device)
    np.testing.assert_allclose((a @ b).numpy(), a.numpy() @ b.numpy(), rtol=1e-12)
    check_gradients(lambda p, q: p @ q, [a, b])


def test_matmul_shape_mismatch_is_a_clear_error(rng):
    with pytest.raises(ValueError, match=r"matmul: .*\(3, 4\) @ \(5, 2\)"):
        leaf(rng, (3, 4)) @ leaf(rng, (5, 2))


def test_reshape_transpose_getitem(device, rng):
    x = leaf(rng, (2, 3, 4), device)
    np.testing.assert_array_equal(x.reshape(6, 4).numpy(), x.numpy().reshape(6, 4))
    np.testing.assert_array_equal(x.transpose(2, 0, 1).numpy(), x.numpy().transpose(2, 0, 1))
    np.testing.assert_array_equal(x.T.numpy(), x.numpy().T)
    for fn in (lambda t: t.reshape((4, 6)), lambda t: t.transpose(1, 2, 0), lambda t: t.T,
               lambda t: t[1, ::2], lambda t: t[np.array([0, 0, 1])]):
        x.grad = None
        check_gradients(fn, [x])


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), data=st.data())
@settings(max_examples=30, deadline=None)
def test_sum_and_mean_over_any_axes(shape, data):
    rng = np.random.default_rng(len(shape))
    x = leaf(rng, tuple(shape))
    axis = data.draw(st.one_of(st.none(), st.integers(0, len(shape) - 1)))
    keepdims = data.draw(st.booleans())
    np.testing.assert_allclose(x.sum(axis, keepdims).numpy(), x.numpy().sum(axis=axis, keepdims=keepdims))
    np.testing.assert_allclose(x.mean(axis, keepdims).numpy(), x.numpy().mean(axis=axis, keepdims=keepdims))
    check_gradients(lambda t: t.sum(axis, keepdims), [x])
    x.grad = None
    check_gradients(lambda t: t.mean(axis, keepdims), [x])


def test_concat_and_flatten(device, rng):
    a, b = leaf(rng, (2, 3, 2), device), leaf(rng, (2, 1, 2), device)
    np.testing.assert_array_equal(F.concat([a, b], 1).numpy(), np.concatenate([a.numpy(), b.numpy()], 1))
    check_gradients(lambda p, q: F.concat([p, q], axis=1), [a, b])
    x = leaf(rng, (2, 3, 2, 2), device)
    np.testing.assert_array_equal(F.flatten(x).numpy(), x.numpy().reshape(2, 12))  # (C, H, W) order
    check_gradients(F.flatten, [x])


def test_concat_and_flatten_reject_bad_shapes(rng):
    with pytest.raises(ValueError, match="concat"):
        F.concat([leaf(rng, (2, 3)), leaf(rng, (3, 3))], axis=1)
    with pytest.raises(ValueError, match="concat"):
        F.concat([], axis=0)
    with pytest.raises(ValueError, match=r"flatten: .*\(5,\)"):
        F.flatten(leaf(rng, (5,)))


def test_sum_to_inverts_broadcasting():
    g = np.ones((4, 2, 3))
    np.testing.assert_array_equal(sum_to(g, (2, 1)), np.full((2, 1), 12.0))
    np.testing.assert_array_equal(sum_to(g, (3,)), np.full((3,), 8.0))
    assert sum_to(g, (4, 2, 3)) is g


def test_getitem_gradients_for_basic_and_repeated_indices(rng):
    x = minidl.tensor(rng.standard_normal((2, 3, 5, 4)), requires_grad=True)
    check_gradients(lambda x: x[:, 1:, ::2, ::-3], [x])               # basic: one assignment
    x.grad = None
    check_gradients(lambda x: x[np.array([0, 1, 0, 0])], [x])          # repeated rows: gradients add up
    y = minidl.tensor(np.arange(4.0), requires_grad=True)
    y[np.array([2, 2, 2])].sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), [0, 0, 3, 0])
