"""adaptive_avg_pool2d and adaptive_max_pool2d: PyTorch's windows by hand and against PyTorch
(values, gradients, indices), output sizes with None, finite differences in both kernel modes and
layouts, unbatched and empty inputs, and clear errors. (The CPU fast paths: tests/kernels/cpu.)"""
import numpy as np
import pytest

import minidl
import minidl.functional as F
from minidl.gradcheck import check_gradients
from minidl.window import adaptive_bounds

from support.arrays import channels_last, shuffled_linspace
from support.devices import DEVICES


def test_windows_follow_pytorchs_rule():
    assert adaptive_bounds(5, 3) == [(0, 2), (1, 4), (3, 5)]     # overlapping by one
    assert adaptive_bounds(8, 4) == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert adaptive_bounds(3, 5) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]   # more outputs than cells
    assert adaptive_bounds(7, 1) == [(0, 7)]


def test_by_hand(kernel_mode):
    x = np.arange(10.0).reshape(1, 1, 2, 5)
    y = F.adaptive_avg_pool2d(minidl.tensor(x), (1, 3))
    # rows [0, 2); columns [0, 2), [1, 4), [3, 5)
    np.testing.assert_allclose(y.numpy().ravel(), [x[..., 0:2].mean(), x[..., 1:4].mean(), x[..., 3:5].mean()])
    y, index = F.adaptive_max_pool2d(minidl.tensor(x), (1, 3), return_indices=True)
    np.testing.assert_array_equal(y.numpy().ravel(), [6.0, 8.0, 9.0])
    np.testing.assert_array_equal(index.numpy().ravel(), [6, 8, 9])
    assert index.dtype == np.int64 and not index.requires_grad


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("name", ["adaptive_avg_pool2d", "adaptive_max_pool2d"])
@pytest.mark.parametrize("in_hw,output_size", [((8, 8), 1), ((7, 9), (3, 4)), ((5, 6), (None, 4)), ((3, 4), 5),
                                               ((6, 6), (2, 3)), ((4, 5), (4, None))])
@pytest.mark.parametrize("last", [False, True])
def test_matches_pytorch(torch, kernel_mode, name, in_hw, output_size, last):
    rng = np.random.default_rng(4)
    x = shuffled_linspace((2, 3) + in_hw, rng)   # no ties: the maximum is unique
    tx = torch.tensor(x, requires_grad=True)
    ty = getattr(torch.nn.functional, name)(tx, output_size)
    gy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(gy))
    mx = minidl.tensor(channels_last(x) if last else x, requires_grad=True)
    my = getattr(F, name)(mx, output_size)
    my.backward(gy)
    assert my.shape == tuple(ty.shape)
    np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    if name == "adaptive_max_pool2d":
        _, t_index = torch.nn.functional.adaptive_max_pool2d(torch.tensor(x), output_size, return_indices=True)
        _, m_index = F.adaptive_max_pool2d(mx, output_size, return_indices=True)
        np.testing.assert_array_equal(m_index.numpy(), t_index.numpy())


def test_ties_go_to_the_first_maximum_in_row_major_order(torch):
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 2] = x[0, 0, 2, 0] = 1.0
    _, ours = F.adaptive_max_pool2d(x, 1, return_indices=True)
    _, theirs = torch.nn.functional.adaptive_max_pool2d(torch.tensor(x), 1, return_indices=True)
    assert int(ours.numpy().item()) == int(theirs.item()) == 6


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("output_size", [1, (2, 3), (4, None)])
@pytest.mark.parametrize("last", [False, True])
def test_gradients_match_finite_differences(kernel_mode, device, output_size, last):
    x = shuffled_linspace((2, 2, 5, 7), np.random.default_rng(6))
    x = minidl.tensor(channels_last(x) if last else x, requires_grad=True, device=device)
    check_gradients(lambda t: F.adaptive_avg_pool2d(t, output_size), [x])
    x.grad = None
    check_gradients(lambda t: F.adaptive_max_pool2d(t, output_size), [x])


def test_unbatched_and_empty_inputs(kernel_mode):
    x = np.random.default_rng(8).standard_normal((3, 5, 6))
    for fn in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
        xt = minidl.tensor(x, requires_grad=True)
        y = fn(xt, (2, 4))
        assert y.shape == (3, 2, 4)
        np.testing.assert_array_equal(y.numpy(), fn(minidl.tensor(x[None]), (2, 4)).numpy()[0])
        y.backward(np.ones(y.shape))
        assert xt.grad.shape == x.shape
        empty = minidl.tensor(np.zeros((0, 3, 5, 6), np.float32), requires_grad=True)
        y = fn(empty, 1)
        assert y.shape == (0, 3, 1, 1) and y.dtype == np.float32
        y.backward(np.zeros(y.shape, np.float32))
        assert empty.grad.shape == (0, 3, 5, 6)
    y, index = F.adaptive_max_pool2d(x, 2, return_indices=True)
    assert y.shape == index.shape == (3, 2, 2)


@pytest.mark.parametrize("fn", [F.adaptive_avg_pool2d, F.adaptive_max_pool2d])
@pytest.mark.parametrize("shape,output_size,match", [
    ((2, 3), 1, r"expected input \(N, C, H, W\) or \(C, H, W\), got shape \(2, 3\)"),
    ((1, 2, 4, 4), 0, r"output_size must be a positive int or a pair of positive ints or None, got 0"),
    ((1, 2, 4, 4), (2, 2, 2), r"output_size must be .* got \(2, 2, 2\)"),
    ((1, 2, 4, 4), True, r"output_size must be .* got True"),
    ((1, 2, 0, 4), 1, r"expected non-empty channel and spatial axes, got shape \(1, 2, 0, 4\)"),
])
def test_bad_input_raises_value_error(fn, shape, output_size, match):
    with pytest.raises(ValueError, match=fn.__name__ + ": " + match):
        fn(minidl.tensor(np.zeros(shape)), output_size)
