"""Inverted dropout: identity cases, scaling, reproducible masks, backward, errors."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.nn as nn
from minidl.gradcheck import check_gradients


def leaf(values, device="cpu"):
    return minidl.tensor(values, requires_grad=True, device=device)


def test_identity_in_eval_and_with_p_zero(device, rng):
    x = rng.standard_normal((3, 4))
    for kwargs in ({"training": False, "p": 0.5}, {"training": True, "p": 0.0, "rng": np.random.default_rng(0)},
                   {"training": False, "p": 0.9, "rng": None}):
        t = leaf(x, device)
        y = F.dropout(t, **kwargs)
        np.testing.assert_array_equal(y.numpy(), x)
        gy = rng.standard_normal(x.shape)
        y.backward(gy)
        np.testing.assert_array_equal(t.grad.numpy(), gy)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_inverted_scaling_and_mask(device, p):
    x = np.random.default_rng(1).uniform(1.0, 2.0, (20, 50))
    y = F.dropout(leaf(x, device), p=p, rng=np.random.default_rng(7)).numpy()
    kept = y != 0
    # every survivor is scaled by exactly 1/(1-p); everything else is exactly 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-15)
    # the dropped fraction is p within 5 standard deviations of a binomial count
    n = x.size
    assert abs((~kept).sum() - p * n) <= 5 * np.sqrt(n * p * (1 - p))


def test_expectation_is_preserved(device):
    p, n = 0.4, 200_000
    y = F.dropout(minidl.tensor(np.ones(n), device=device), p=p, rng=np.random.default_rng(3)).numpy()
    std_of_mean = np.sqrt(p / (1 - p) / n)  # each element is 1/(1-p) w.p. 1-p, else 0
    assert abs(y.mean() - 1.0) < 5 * std_of_mean


def test_same_seed_same_mask_other_seed_other_mask(device, rng):
    x = rng.uniform(1.0, 2.0, (8, 16))
    masks = [F.dropout(leaf(x, device), 0.5, rng=np.random.default_rng(seed)).numpy() != 0 for seed in (5, 5, 6)]
    np.testing.assert_array_equal(masks[0], masks[1])
    assert (masks[0] != masks[2]).any()
    # the mask is drawn on the host, so a seed gives the same mask on every device
    cpu_mask = F.dropout(leaf(x), 0.5, rng=np.random.default_rng(5)).numpy() != 0
    np.testing.assert_array_equal(masks[0], cpu_mask)


def test_consecutive_calls_draw_fresh_masks(rng):
    generator = np.random.default_rng(11)
    x = rng.uniform(1.0, 2.0, (8, 16))
    first = F.dropout(leaf(x), 0.5, rng=generator).numpy() != 0
    second = F.dropout(leaf(x), 0.5, rng=generator).numpy() != 0
    assert (first != second).any()


def test_backward_uses_the_forward_mask(device, rng):
    p = 0.3
    x = rng.uniform(1.0, 2.0, (6, 7))
    t = leaf(x, device)
    y = F.dropout(t, p=p, rng=np.random.default_rng(2))
    gy = rng.standard_normal(x.shape)
    y.backward(gy)
    kept = y.numpy() != 0
    np.testing.assert_allclose(t.grad.numpy(), np.where(kept, gy / (1 - p), 0.0), rtol=1e-15)
    t.grad = None
    check_gradients(lambda t: F.dropout(t, p=p, rng=np.random.default_rng(2)), [t])


def test_keeps_float32(rng):
    y = F.dropout(minidl.tensor(rng.standard_normal((4, 4)).astype(np.float32)), 0.5, rng=np.random.default_rng(0))
    assert y.dtype == np.float32


@pytest.mark.parametrize("p", [-0.1, 1.0001, 1.5, float("nan")])
def test_rejects_p_outside_unit_interval(p):
    with pytest.raises(ValueError, match="dropout"):
        F.dropout(leaf(np.ones(3)), p=p, rng=np.random.default_rng(0))


def test_training_needs_an_rng():
    with pytest.raises(ValueError, match="dropout.*rng"):
        F.dropout(leaf(np.ones(3)), p=0.5, training=True)


def test_batch_slices_of_a_global_batch_apply_the_one_process_mask():
    # Two "processes" holding rows 0..2 and 3..4 of a 5-row batch, each with its own
    # copy of the same generator, together apply exactly the whole batch's mask.
    x = minidl.tensor(np.arange(1.0, 31.0).reshape(5, 6))
    whole = F.dropout(x, 0.5, rng=np.random.default_rng(7)).numpy()
    top = F.dropout(x[0:3], 0.5, rng=np.random.default_rng(7), batch_slice=(0, 5)).numpy()
    bottom = F.dropout(x[3:5], 0.5, rng=np.random.default_rng(7), batch_slice=(3, 5)).numpy()
    np.testing.assert_array_equal(np.concatenate([top, bottom]), whole)
    with pytest.raises(ValueError, match="batch_slice"):
        F.dropout(x, 0.5, rng=np.random.default_rng(7), batch_slice=(2, 5))


def test_mask_is_kept_as_bytes_and_backward_uses_it(rng):
    # The saved mask is bool (1 byte per element); gradients are gy / (1 - p) where kept, else 0.
    x = leaf(rng.uniform(1.0, 2.0, (6, 10)).astype(np.float32))
    y = F.dropout(x, 0.25, rng=np.random.default_rng(2))
    (mask,) = y.creator.saved_arrays
    assert mask.dtype == np.bool_ and mask.shape == (6, 10)
    gy = rng.standard_normal((6, 10)).astype(np.float32)
    y.backward(gy)
    np.testing.assert_array_equal(x.grad.numpy(), np.where(mask, gy * np.float32(1 / 0.75), 0))
    np.testing.assert_array_equal(y.numpy(), np.where(mask, x.numpy() * np.float32(1 / 0.75), 0))


def test_dropout2d_keeps_or_zeros_whole_channels_and_backward_uses_the_same_mask(device):
    x = minidl.tensor(np.random.default_rng(5).uniform(1, 2, (6, 8, 3, 4)), requires_grad=True, device=device)
    y = F.dropout2d(x, 0.5, rng=np.random.default_rng(0))
    gy = np.ones(x.shape)
    y.backward(minidl.tensor(gy, device=device).data)
    ratio = y.numpy() / x.numpy()
    per_channel = ratio.reshape(6, 8, -1)
    assert np.all(per_channel == per_channel[:, :, :1])                 # one decision per (image, channel)
    assert set(np.unique(per_channel)) == {0.0, 2.0}                    # zeroed, or scaled by 1 / (1 - p)
    np.testing.assert_array_equal(x.grad.numpy(), ratio)                 # gy = 1: the gradient is the mask


def test_dropout2d_layer_statistics_eval_slices_and_errors():
    layer = nn.Dropout2d(0.25, rng=np.random.default_rng(1))
    x = minidl.tensor(np.ones((400, 50, 2, 2)))
    kept = (layer(x).numpy()[:, :, 0, 0] > 0).mean()
    assert abs(kept - 0.75) < 0.01 and repr(layer) == "Dropout2d(p=0.25, inplace=False)"
    assert layer.eval()(x) is x
    whole = F.dropout2d(x[:6], 0.5, rng=np.random.default_rng(2)).numpy()
    parts = [F.dropout2d(x[s:s + 3], 0.5, rng=np.random.default_rng(2), batch_slice=(s, 6)).numpy() for s in (0, 3)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)          # data parallel: the one-process mask
    with pytest.raises(ValueError, match=r"dropout2d: expected input \(N, C, H, W\), got \(4, 5\)"):
        F.dropout2d(minidl.tensor(np.ones((4, 5))), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"dropout2d: p must be in \[0, 1\]"):
        F.dropout2d(x, 1.5, rng=np.random.default_rng(0))
