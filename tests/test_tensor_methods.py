"""Tensor's PyTorch-style methods: the same results and gradients as torch's, and clear errors."""
import numpy as np
import pytest

import minidl
from minidl import no_grad
from minidl.gradcheck import check_gradients

torch = pytest.importorskip("torch")

SHAPE = (2, 1, 3, 4)


def _pair(rng, shape=SHAPE):
    data = rng.standard_normal(shape)
    return minidl.tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)


CASES = [
    ("transpose(0, 1)", lambda t: t.transpose(0, 1)),
    ("transpose(-1, 1)", lambda t: t.transpose(-1, 1)),
    ("permute(3, 0, 2, 1)", lambda t: t.permute(3, 0, 2, 1)),
    ("permute((1, 0, 3, 2))", lambda t: t.permute((1, 0, 3, 2))),
    ("view(2, -1)", lambda t: t.view(2, -1)),
    ("squeeze()", lambda t: t.squeeze()),
    ("squeeze(1)", lambda t: t.squeeze(1)),
    ("squeeze(2) keeps a dim of size 3", lambda t: t.squeeze(2)),
    ("unsqueeze(-1)", lambda t: t.unsqueeze(-1)),
    ("unsqueeze(0)", lambda t: t.unsqueeze(0)),
    ("flatten()", lambda t: t.flatten()),
    ("flatten(1)", lambda t: t.flatten(1)),
    ("flatten(1, 2)", lambda t: t.flatten(1, 2)),
    ("sum(dim=2)", lambda t: t.sum(dim=2)),
    ("sum(dim=(0, 3), keepdim=True)", lambda t: t.sum(dim=(0, 3), keepdim=True)),
    ("mean(dim=-1)", lambda t: t.mean(dim=-1)),
    ("mean(dim=1, keepdim=True)", lambda t: t.mean(dim=1, keepdim=True)),
    ("abs()", lambda t: t.abs()),
    ("sqrt() of |t| + 1", lambda t: (t.abs() + 1.0).sqrt()),
    ("clone() * 2", lambda t: t.clone() * 2.0),
]


@pytest.mark.parametrize("name, fn", CASES, ids=[c[0] for c in CASES])
def test_methods_match_torch_forward_and_backward(name, fn):
    rng = np.random.default_rng(0)
    mine, theirs = _pair(rng)
    y, y_torch = fn(mine), fn(theirs)
    assert y.shape == tuple(y_torch.shape)
    np.testing.assert_allclose(y.numpy(), y_torch.detach().numpy(), rtol=1e-12, atol=1e-12)
    gy = rng.standard_normal(y.shape)
    y.backward(gy)
    y_torch.backward(torch.tensor(gy))
    np.testing.assert_allclose(mine.grad.numpy(), theirs.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, fn", CASES[:4] + CASES[10:13] + CASES[17:19],
                         ids=[c[0] for c in CASES[:4] + CASES[10:13] + CASES[17:19]])
def test_methods_pass_the_gradient_check(name, fn):
    x = minidl.tensor(np.random.default_rng(1).standard_normal(SHAPE) + 0.1, requires_grad=True)
    assert check_gradients(fn, [x])


def test_transpose_keeps_numpys_permutations_and_reverse():
    x = minidl.tensor(np.arange(24.0).reshape(2, 3, 4))
    assert x.transpose().shape == (4, 3, 2) and x.T.shape == (4, 3, 2)
    assert x.transpose(1, 2, 0).shape == (3, 4, 2) and x.transpose((2, 0, 1)).shape == (4, 2, 3)
    m = minidl.tensor(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(m.transpose(0, 1).numpy(), m.numpy().T)   # PyTorch's swap, not identity


def test_argmax_comparisons_and_facts_match_torch():
    rng = np.random.default_rng(2)
    data = rng.standard_normal((3, 5))
    x, t = minidl.tensor(data), torch.tensor(data)
    assert x.argmax().item() == t.argmax().item()
    np.testing.assert_array_equal(x.argmax(dim=1).numpy(), t.argmax(dim=1).numpy())
    np.testing.assert_array_equal(x.argmax(1, keepdim=True).numpy(), t.argmax(1, keepdim=True).numpy())
    for op in ("__gt__", "__ge__", "__lt__", "__le__"):
        got = getattr(x, op)(0.1)
        assert got.dtype == np.bool_ and not got.requires_grad
        np.testing.assert_array_equal(got.numpy(), getattr(t, op)(0.1).numpy())
    assert x.dim() == 2 and x.numel() == 15 and x.size == 15
    assert x.double().dtype == np.float64 and x.float().dtype == np.float32


def test_integer_tensors_and_python_floats_promote_as_in_torch():
    x = minidl.tensor([1, 2, 3])
    for op in (lambda a: a * 0.5, lambda a: a + 0.5, lambda a: 0.5 - a, lambda a: a / 2.0):
        got, want = op(x), op(torch.tensor([1, 2, 3]))
        assert got.dtype == np.float32
        np.testing.assert_allclose(got.numpy(), want.numpy())
    assert (x * 2).dtype == np.int64


def test_sum_and_mean_edges():
    empty = minidl.tensor(np.zeros((0, 3)))
    assert np.isnan(empty.mean().item()) and empty.sum().item() == 0.0
    np.testing.assert_array_equal(empty.mean(dim=1).numpy(), np.zeros(0))
    x = minidl.tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"mean: axis 2 is out of range for a tensor of shape \(2, 3\)"):
        x.mean(2)
    with pytest.raises(ValueError, match=r"sum: axis -3 is out of range"):
        x.sum(dim=-3)
    with pytest.raises(TypeError, match="axis= .* or dim= .* not both"):
        x.sum(axis=0, dim=1)
    scalar = minidl.tensor(3.0)
    assert scalar.sum(dim=0).item() == 3.0
    with pytest.raises(TypeError, match="len\\(\\) of a 0-d tensor"):
        len(scalar)


def test_shape_errors_name_the_method_the_dims_and_the_shape():
    x = minidl.tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"permute: expected 2 dims for a tensor of shape \(2, 3\)"):
        x.permute(0, 1, 2)
    with pytest.raises(ValueError, match=r"permute: \(0, 0\) is not a permutation"):
        x.permute(0, 0)
    with pytest.raises(ValueError, match=r"transpose: dim 2 is out of range for a tensor of shape \(2, 3\)"):
        x.transpose(0, 2)
    with pytest.raises(ValueError, match=r"unsqueeze: dim 3 is out of range"):
        x.unsqueeze(3)
    with pytest.raises(ValueError, match=r"flatten: start_dim 1 comes after end_dim 0"):
        x.flatten(1, 0)


def test_requires_grad_and_is_leaf():
    x = minidl.tensor(np.ones(3))
    assert x.is_leaf and x.requires_grad_() is x and x.requires_grad
    y = x * 2.0
    assert not y.is_leaf
    with pytest.raises(RuntimeError, match="only a leaf"):
        y.requires_grad_(False)
    with pytest.raises(ValueError, match="floating-point"):
        minidl.tensor([1, 2]).requires_grad_()
    with no_grad():
        assert (x * 2.0).is_leaf


@pytest.mark.parametrize("method", ["max", "min"])
@pytest.mark.parametrize("dim, keepdim", [(None, False), (1, False), (0, True), (-1, True)])
def test_max_and_min_match_torch_with_ties(method, dim, keepdim):
    data = np.array([[1.0, 3.0, 3.0, -2.0], [2.0, 0.0, 2.0, -2.0], [0.5, 3.0, -1.0, 4.0]])
    mine, theirs = minidl.tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)
    args = () if dim is None else (dim, keepdim)
    got, want = getattr(mine, method)(*args), getattr(theirs, method)(*args)
    if dim is not None:
        np.testing.assert_array_equal(got.indices.numpy(), want.indices.numpy())
        got, want = got.values, want.values
    np.testing.assert_array_equal(got.numpy(), want.detach().numpy())
    gy = np.arange(1.0, 1.0 + got.size).reshape(got.shape)
    got.backward(gy)
    want.backward(torch.tensor(gy))
    np.testing.assert_allclose(mine.grad.numpy(), theirs.grad.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match=f"{method}: the tensor of shape \\(0,\\) is empty"):
        getattr(minidl.tensor(np.zeros(0)), method)()
    with pytest.raises(TypeError, match=f"{method}: dim is one int, got \\(0, 1\\)"):
        getattr(mine, method)(dim=(0, 1))


@pytest.mark.parametrize("left, right", [((3,), (3, 4)), ((4, 3), (3,)), ((3,), (3,)), ((3,), (2, 3, 4)),
                                         ((2, 4, 3), (3,))])
def test_matmul_with_vectors_matches_torch(left, right):
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal(left), rng.standard_normal(right)
    ma, mb = minidl.tensor(a, requires_grad=True), minidl.tensor(b, requires_grad=True)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    got, want = ma @ mb, ta @ tb
    assert got.shape == tuple(want.shape)
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-12)
    gy = rng.standard_normal(got.shape)
    got.backward(gy)
    want.backward(torch.tensor(gy))
    np.testing.assert_allclose(ma.grad.numpy(), ta.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(mb.grad.numpy(), tb.grad.numpy(), rtol=1e-12)


def test_a_number_to_a_tensor_power():
    x = minidl.tensor(np.array([0.5, 1.0, 3.0]), requires_grad=True)
    t = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64, requires_grad=True)
    (2.0 ** x).sum().backward()
    (2.0 ** t).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-12)
    with pytest.raises(TypeError, match="positive constant"):
        (-2.0) ** x


def test_one_element_tensors_act_as_python_numbers_and_larger_ones_refuse():
    loss, label = minidl.tensor(0.25), minidl.tensor(np.int64(2))
    assert float(loss) == 0.25 and f"{loss:.3f}" == "0.250" and int(label) == 2
    assert ("a", "b", "c")[label] == "c" and bool(minidl.tensor([1.0])) and not bool(minidl.tensor(0.0))
    many = minidl.tensor(np.ones(3))
    with pytest.raises(RuntimeError, match=r"truth value of a tensor of shape \(3,\) is ambiguous"):
        bool(many)
    with pytest.raises(TypeError, match="only one-element tensors"):
        float(many)
    with pytest.raises(TypeError, match="only integer tensors"):
        [0, 1][loss]


def test_size_is_numpys_count_and_torchs_call():
    x = minidl.tensor(np.zeros((4, 3, 2)))
    assert x.size == 24 and x.size + 1 == 25 and x.size() == (4, 3, 2) and x.size(0) == 4 and x.size(-1) == 2
    assert x.view(x.size(0), -1).shape == (4, 6) and x.nelement() == 24


@pytest.mark.parametrize("name, fn", [
    ("var", lambda t: t.var()), ("var(1)", lambda t: t.var(1)), ("std(0, keepdim)", lambda t: t.std(0, keepdim=True)),
    ("var correction 0", lambda t: t.var(1, correction=0)), ("clamp", lambda t: t.clamp(-0.5, 0.7)),
    ("clamp(min)", lambda t: t.clamp(min=0.1)), ("expand", lambda t: t[:, :1].expand(3, 4)),
    ("expand -1", lambda t: t[None].expand(2, -1, -1)), ("t()", lambda t: t.t()), ("pow", lambda t: t.pow(2)),
    ("softmax", lambda t: t.softmax(1)), ("log_softmax", lambda t: t.log_softmax(0)),
    ("view_as", lambda t: t.view_as(t.t())),
])
def test_small_ops_match_torch(name, fn):
    rng = np.random.default_rng(5)
    mine, theirs = _pair(rng, (3, 4))
    got, want = fn(mine), fn(theirs)
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-12, atol=1e-14)
    gy = rng.standard_normal(got.shape)
    got.backward(gy)
    want.backward(torch.tensor(gy))
    np.testing.assert_allclose(mine.grad.numpy(), theirs.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_conversions_and_value_comparisons():
    x = minidl.tensor(np.array([[1.5, -2.0]]))
    assert x.tolist() == [[1.5, -2.0]] and x.cpu().device == "cpu" and x.contiguous() is x
    assert x.long().dtype == np.int64 and x.int().dtype == np.int32 and x.bool().dtype == np.bool_
    labels, predicted = minidl.tensor([1, 2, 3]), minidl.tensor([1, 0, 3])
    assert predicted.eq(labels).sum().item() == 2 and predicted.ne(labels).tolist() == [False, True, False]
    assert predicted.eq(3).tolist() == [False, False, True]
    assert (predicted == labels).sum().item() == 2 and (predicted != 3).tolist() == [True, True, False]
    assert {labels: "kept"}[labels] == "kept"            # hashing stays by identity


def test_shape_mistakes_name_the_operation():
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4, 5\) do not broadcast"):
        minidl.tensor(np.zeros((2, 3))) + minidl.tensor(np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"mul: shapes \(3,\) and \(2,\) do not broadcast"):
        minidl.tensor(np.zeros(3)) * np.zeros(2)
    with pytest.raises(ValueError, match=r"reshape: a tensor of shape \(4, 3\) \(12 values\) cannot become \(5, -1\)"):
        minidl.tensor(np.zeros((4, 3))).view(5, -1)


def test_in_place_writes_outside_the_graph_match_torch():
    torch = pytest.importorskip("torch")
    values = np.arange(12.0).reshape(3, 4)
    ours, theirs = minidl.tensor(values), torch.tensor(values)
    for t, lib in ((ours, minidl), (theirs, torch)):
        t[0, 1] = -5.0
        t[1] = lib.tensor(np.full(4, 7.0))
        t[t > 9] = 0.0                                   # a boolean tensor as the index
        t[np.array([0, 2]), 3] = 1.5                     # an integer array as the index
        t.mul_(2).add_(lib.tensor(np.ones(4)), alpha=0.5)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert ours.copy_(np.ones(4)).numpy().sum() == 12 and ours.zero_().numpy().sum() == 0
    assert ours.fill_(3.0).numpy().min() == 3.0


def test_in_place_writes_refuse_what_a_graph_may_need():
    w = minidl.nn.Parameter(np.ones(3))
    with pytest.raises(RuntimeError, match=r"Tensor.__setitem__: a leaf tensor that requires grad .*no_grad"):
        w[0] = 2.0
    with minidl.no_grad():                               # initialising a parameter, as in PyTorch
        w[0] = 2.0
        w.mul_(3.0)
    np.testing.assert_array_equal(w.numpy(), [6.0, 3.0, 3.0])
    y = w * 2
    with pytest.raises(RuntimeError, match="Tensor.add_: this tensor was computed in a graph"):
        y.add_(1.0)
    y.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 2.0, 2.0])
