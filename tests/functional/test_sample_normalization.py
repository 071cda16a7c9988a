"""layer_norm and group_norm, and their layers: against PyTorch forward and backward (every
group count, with and without affine parameters), finite differences, invariances, batch
independence, edge shapes, state_dict keys and clear errors."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.nn as nn
from minidl.gradcheck import check_gradients

from support.devices import DEVICES


def _leaves(*arrays):
    return [None if a is None else minidl.tensor(a, requires_grad=True) for a in arrays]


def _compare_with_torch(ours, theirs, x, weight, bias):
    """Run both on float64 copies of (x, weight, bias) with a random gy; compare outputs and every gradient."""
    torch = pytest.importorskip("torch")
    gy = np.random.default_rng(9).standard_normal(x.shape)
    mx, mw, mb = _leaves(x, weight, bias)
    y = ours(mx, mw, mb)
    y.backward(gy)
    tx, tw, tb = (None if a is None else torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    ty = theirs(tx, tw, tb)
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    for mine, their in ((mx, tx), (mw, tw), (mb, tb)):
        if mine is not None:
            np.testing.assert_allclose(mine.grad.numpy(), their.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape, groups", [((3, 6, 4, 5), 1), ((3, 6, 4, 5), 2), ((3, 6, 4, 5), 3), ((3, 6, 4, 5), 6),
                                           ((2, 4, 7), 2), ((5, 4), 2), ((1, 8, 3, 3), 4)])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_matches_pytorch(shape, groups, affine):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape) * 3 + 1
    c = shape[1]
    weight, bias = (rng.standard_normal(c), rng.standard_normal(c)) if affine else (None, None)
    _compare_with_torch(lambda t, w, b: F.group_norm(t, groups, w, b),
                        lambda t, w, b: torch.nn.functional.group_norm(t, groups, w, b), x, weight, bias)


@pytest.mark.parametrize("shape, normalized", [((3, 6, 4, 5), (4, 5)), ((3, 6, 4, 5), 5), ((2, 7), (7,)),
                                               ((2, 3, 4), (2, 3, 4)), ((4, 3, 1), (1,))])
@pytest.mark.parametrize("affine", ["both", "weight", "none"])
def test_layer_norm_matches_pytorch(shape, normalized, affine):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape) * 2 - 1
    pshape = (normalized,) if isinstance(normalized, int) else normalized
    weight = rng.standard_normal(pshape) if affine != "none" else None
    bias = rng.standard_normal(pshape) if affine == "both" else None
    _compare_with_torch(lambda t, w, b: F.layer_norm(t, normalized, w, b, eps=1e-3),
                        lambda t, w, b: torch.nn.functional.layer_norm(t, pshape, w, b, eps=1e-3), x, weight, bias)


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_match_finite_differences(device):
    rng = np.random.default_rng(3)
    x, w, b = (minidl.tensor(a, requires_grad=True, device=device)
               for a in (rng.standard_normal((2, 4, 3, 2)), rng.standard_normal(4), rng.standard_normal(4)))
    check_gradients(lambda x, w, b: F.group_norm(x, 2, w, b), [x, w, b])
    w2, b2 = (minidl.tensor(a, requires_grad=True, device=device) for a in (rng.standard_normal((3, 2)), rng.standard_normal((3, 2))))
    check_gradients(lambda x, w, b: F.layer_norm(x, (3, 2), w, b), [x, w2, b2])


def test_each_sample_alone_and_affine_invariance():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 6, 3, 3))
    whole = F.group_norm(minidl.tensor(x), 3).numpy()
    alone = F.group_norm(minidl.tensor(x[2:3]), 3).numpy()
    np.testing.assert_allclose(whole[2:3], alone, rtol=1e-12)        # no batch statistics
    exact, shifted = (F.group_norm(minidl.tensor(a), 3, eps=1e-12).numpy() for a in (x, 5 * x + 7))
    np.testing.assert_allclose(shifted, exact, atol=1e-9)              # scale and shift of x do not matter
    groups = whole.reshape(4, 3, -1)
    np.testing.assert_allclose(groups.mean(axis=2), 0, atol=1e-12)
    np.testing.assert_allclose(groups.var(axis=2), 1, rtol=1e-4)        # var / (var + eps)
    ln = F.layer_norm(minidl.tensor(x), (6, 3, 3)).numpy()
    np.testing.assert_allclose(ln, F.group_norm(minidl.tensor(x), 1).numpy(), rtol=1e-12)   # G = 1 is layer norm


def test_dtype_kept_and_empty_batches():
    x32 = np.random.default_rng(5).standard_normal((2, 4, 3)).astype(np.float32)
    assert F.group_norm(minidl.tensor(x32), 2).dtype == np.float32
    assert F.layer_norm(minidl.tensor(x32), 3).dtype == np.float32
    assert nn.LayerNorm(3)(minidl.tensor(x32)).dtype == np.float32
    empty = minidl.tensor(np.zeros((0, 4, 3)), requires_grad=True)
    y = F.group_norm(empty, 2) + F.layer_norm(empty, (4, 3))
    y.backward(np.zeros((0, 4, 3)))
    assert y.shape == (0, 4, 3) and empty.grad.shape == (0, 4, 3)


def test_layers_match_pytorch_state_dict_repr_and_output():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    pairs = [(nn.GroupNorm(2, 6), torch.nn.GroupNorm(2, 6)), (nn.GroupNorm(3, 6, affine=False), torch.nn.GroupNorm(3, 6, affine=False)),
             (nn.GroupNorm(2, 6, bias=False), torch.nn.GroupNorm(2, 6, bias=False)),
             (nn.LayerNorm((4, 5)), torch.nn.LayerNorm((4, 5))), (nn.LayerNorm(5, bias=False), torch.nn.LayerNorm(5, bias=False)),
             (nn.LayerNorm(5, elementwise_affine=False), torch.nn.LayerNorm(5, elementwise_affine=False))]
    x = rng.standard_normal((2, 6, 4, 5)).astype(np.float32)
    for mine, theirs in pairs:
        assert repr(mine) == repr(theirs)
        theirs_state = {k: v.numpy() for k, v in theirs.state_dict().items()}
        assert list(mine.state_dict()) == list(theirs_state)
        for key, value in theirs_state.items():   # random values, loaded by PyTorch's keys
            theirs_state[key] = rng.standard_normal(value.shape).astype(np.float32)
        mine.load_state_dict(theirs_state)
        theirs.load_state_dict({k: torch.tensor(v) for k, v in theirs_state.items()})
        np.testing.assert_allclose(mine(minidl.tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call, match", [
    (lambda x: F.group_norm(x, 4), "group_norm: num_groups must be a positive int dividing the 6 channels, got 4"),
    (lambda x: F.group_norm(x, 0), "group_norm: num_groups must be"),
    (lambda x: F.group_norm(x[0, 0, 0], 1), r"group_norm: expected input \(N, C, \*\)"),
    (lambda x: F.group_norm(x, 2, minidl.tensor(np.ones(3))), r"group_norm: weight must have shape \(6,\)"),
    (lambda x: F.group_norm(x, 2, eps=0), "group_norm: eps must be a positive number"),
    (lambda x: F.layer_norm(x, (4, 4)), r"layer_norm: expected input \(\*, 4, 4\)"),
    (lambda x: F.layer_norm(x, 3, bias=minidl.tensor(np.ones(2))), r"layer_norm: bias must have shape \(3,\)"),
    (lambda x: F.layer_norm(minidl.tensor(np.ones((2, 3), int)), 3), "layer_norm: expected a floating-point input"),
    (lambda x: nn.GroupNorm(4, 6), "GroupNorm: num_groups must be a positive int dividing num_channels"),
    (lambda x: nn.GroupNorm(2, 6)(minidl.tensor(np.ones((2, 4, 3)))), r"GroupNorm: expected input \(N, 6, \*\)"),
    (lambda x: nn.LayerNorm(0), "LayerNorm: normalized_shape must be a positive int"),
    (lambda x: nn.LayerNorm(3, eps=-1), "LayerNorm: eps must be a positive number"),
])
def test_bad_input_raises_value_error_naming_the_function(call, match):
    with pytest.raises(ValueError, match=match):
        call(minidl.tensor(np.ones((2, 6, 4, 3))))
