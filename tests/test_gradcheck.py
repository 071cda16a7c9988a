"""check_gradients must pass on correct backwards and FAIL on wrong ones."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
from minidl import Function
from minidl.gradcheck import check_gradients


def leaf(rng, shape):
    return minidl.tensor(rng.standard_normal(shape), requires_grad=True)


class Cube(Function):
    def __init__(self, error=1.0):
        self.error = error

    def forward(self, x):
        self.save_for_backward(x)
        return x ** 3

    def backward(self, gy):
        (x,) = self.saved_arrays
        return gy * 3 * x ** 2 * self.error


class WeightedSum(Function):
    """y = 2a + 5b, with an optional bug that swaps the two input gradients."""

    def __init__(self, swap=False):
        self.swap = swap

    def forward(self, a, b):
        return 2 * a + 5 * b

    def backward(self, gy):
        ga, gb = 2 * gy, 5 * gy
        return (gb, ga) if self.swap else (ga, gb)


class SoftmaxZeroBackward(Function):
    def forward(self, x):
        z = np.exp(x - x.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)

    def backward(self, gy):
        return np.zeros_like(gy)


def test_passes_on_a_correct_backward(rng):
    assert check_gradients(lambda t: Cube()(t), [leaf(rng, (3, 4))])


def test_fails_on_a_backward_off_by_one_percent(rng):
    x = leaf(rng, (3, 4))
    with pytest.raises(AssertionError, match="input 0"):
        check_gradients(lambda t: Cube(error=1.01)(t), [x])


def test_fails_when_gradients_are_swapped_between_inputs(rng):
    a, b = leaf(rng, (2, 3)), leaf(rng, (2, 3))
    with pytest.raises(AssertionError, match="analytic .* numeric"):
        check_gradients(lambda p, q: WeightedSum(swap=True)(p, q), [a, b])
    a.grad = b.grad = None
    check_gradients(lambda p, q: WeightedSum()(p, q), [a, b])


def test_fails_on_softmax_whose_backward_returns_zeros(rng):
    # Summing softmax's outputs gives a constant 1, so a check with upstream gradient
    # of ones could not see this bug; the random upstream gradient does.
    x = leaf(rng, (2, 5))
    with pytest.raises(AssertionError):
        check_gradients(lambda t: SoftmaxZeroBackward()(t), [x])
    check_gradients(lambda t: F.softmax(t), [leaf(rng, (2, 5))])


def test_message_names_worst_element_and_both_values(rng):
    x = leaf(rng, (4,))
    with pytest.raises(AssertionError) as info:
        check_gradients(lambda t: Cube(error=1.5)(t), [x])
    message = str(info.value)
    assert "element" in message and "analytic" in message and "numeric" in message
    worst = int(np.argmax(np.abs(x.data) ** 2 * np.abs(np.random.default_rng(0).standard_normal(4))))
    assert f"({worst},)" in message


def test_checks_every_input_that_requires_grad_and_only_those(rng):
    a, b = leaf(rng, (3,)), minidl.tensor(rng.standard_normal(3))  # b is a constant
    check_gradients(lambda p, q: p * q, [a, b])
    with pytest.raises(ValueError, match="nothing to check"):
        check_gradients(lambda p: p * 2, [minidl.tensor(np.ones(2))])


def test_rejects_float32_inputs():
    x = minidl.tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(ValueError, match="float64"):
        check_gradients(lambda t: t * 2, [x])


def test_explicit_grad_output_is_used(rng):
    x = leaf(rng, (3,))
    check_gradients(lambda t: Cube()(t), [x], grad_output=np.array([1.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="grad_output shapes"):
        check_gradients(lambda t: Cube()(t), [leaf(rng, (3,))], grad_output=np.ones(4))


def test_multiple_outputs_are_all_checked(rng):
    class TwoOut(Function):
        def forward(self, x):
            return x * 2, x ** 2

        def backward(self, g1, g2):
            return g1 * 2  # forgets the second output's contribution

    with pytest.raises(AssertionError):
        check_gradients(lambda t: TwoOut()(t), [leaf(rng, (3,))])
