"""Softmax cross-entropy: value vs a direct formula, gradient, stability at +-1000, label errors."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minidl
import minidl.functional as F
from minidl.gradcheck import check_gradients


def leaf(values, device="cpu"):
    return minidl.tensor(values, requires_grad=True, device=device)


def loss_reference(logits, labels):
    """mean_n [log(sum_k exp(z_nk)) - z_n,label], with math.fsum per row (moderate logits only)."""
    per_sample = [math.log(math.fsum(math.exp(z) for z in row)) - row[label] for row, label in zip(logits, labels)]
    return math.fsum(per_sample) / len(per_sample)


def test_value_and_gradient_match_direct_formulas(device, rng):
    logits = rng.standard_normal((5, 4)) * 2
    labels = np.array([0, 3, 1, 3, 2])
    z = leaf(logits, device)
    loss = F.softmax_cross_entropy(z, labels)
    assert loss.shape == ()
    np.testing.assert_allclose(loss.item(), loss_reference(logits, labels), rtol=1e-12)
    loss.backward()
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(z.grad.numpy(), (p - np.eye(4)[labels]) / 5, rtol=1e-10, atol=1e-15)
    z.grad = None
    check_gradients(lambda t: F.softmax_cross_entropy(t, labels), [z])


def test_is_the_mean_of_per_sample_losses(rng):
    logits = rng.standard_normal((6, 3))
    labels = rng.integers(0, 3, 6)
    batch = F.softmax_cross_entropy(leaf(logits), labels).item()
    singles = [F.softmax_cross_entropy(leaf(logits[i:i + 1]), labels[i:i + 1]).item() for i in range(6)]
    np.testing.assert_allclose(batch, np.mean(singles), rtol=1e-12)


def test_labels_may_be_a_tensor_or_a_list(device, rng):
    logits = rng.standard_normal((3, 4))
    expected = loss_reference(logits, [1, 0, 3])
    for labels in ([1, 0, 3], minidl.tensor(np.array([1, 0, 3]), device=device), np.array([1, 0, 3], np.uint8)):
        np.testing.assert_allclose(F.softmax_cross_entropy(leaf(logits, device), labels).item(), expected, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_stable_at_huge_logits(device, dtype):
    logits = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0], [1000.0, 1000.0, -1000.0]], dtype)
    labels = np.array([0, 2, 1])
    z = minidl.tensor(logits, requires_grad=True, device=device)
    loss = F.softmax_cross_entropy(z, labels)
    log1pe = math.log1p(math.exp(-1.0))
    expected = (0.0 + (1.0 + log1pe) + math.log(2.0)) / 3
    assert loss.dtype == dtype
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-6 if dtype == np.float32 else 1e-12)
    loss.backward()
    grad = z.grad.numpy()
    assert np.all(np.isfinite(grad))
    p1 = 1 / (1 + math.exp(-1.0))
    expected_grad = np.array([[0, 0, 0], [0, p1, -p1], [0.5, -0.5, 0]]) / 3
    np.testing.assert_allclose(grad, expected_grad, atol=1e-6 if dtype == np.float32 else 1e-12)


@given(n=st.integers(1, 5), k=st.integers(1, 5), seed=st.integers(0, 2 ** 16))
@settings(max_examples=20, deadline=None)
def test_any_shape(n, k, seed):
    rng = np.random.default_rng(seed)
    logits, labels = rng.standard_normal((n, k)) * 3, rng.integers(0, k, n)
    z = leaf(logits)
    np.testing.assert_allclose(F.softmax_cross_entropy(z, labels).item(), loss_reference(logits, labels),
                               rtol=1e-12, atol=1e-15)
    check_gradients(lambda t: F.softmax_cross_entropy(t, labels), [z])


def test_matches_torch(rng):
    torch = pytest.importorskip("torch")
    logits, labels = rng.standard_normal((7, 5)) * 3, rng.integers(0, 5, 7)
    z = leaf(logits)
    loss = F.softmax_cross_entropy(z, labels)
    loss.backward()
    tz = torch.tensor(logits, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tz, torch.tensor(labels))
    tloss.backward()
    np.testing.assert_allclose(loss.item(), tloss.item(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(z.grad.numpy(), tz.grad.numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("labels, word", [
    (np.array([0, 1, 3]), "[0, 3)"),               # out of range above
    (np.array([0, -1, 2]), "[0, 3)"),              # negative
    (np.array([0, 1]), "(3,)"),                    # wrong length
    (np.array([[0], [1], [2]]), "(3,)"),           # wrong rank
    (np.array([0.0, 1.0, 2.0]), "integer"),        # float labels
    (np.array([True, False, True]), "integer"),    # bool labels
])
def test_rejects_bad_labels(labels, word):
    with pytest.raises(ValueError, match="softmax_cross_entropy") as info:
        F.softmax_cross_entropy(leaf(np.zeros((3, 3))), labels)
    assert word in str(info.value)


def test_rejects_logits_that_are_not_2d():
    with pytest.raises(ValueError, match="softmax_cross_entropy.*\\(N, K\\)"):
        F.softmax_cross_entropy(leaf(np.zeros(3)), np.array([0, 1, 2]))


def test_an_empty_batch_is_a_clear_error_not_nan():
    with pytest.raises(ValueError, match="softmax_cross_entropy: got an empty batch"):
        F.softmax_cross_entropy(leaf(np.zeros((0, 3))), np.zeros(0, np.int64))

