"""F.cross_entropy with PyTorch's options against PyTorch: class indices and class probabilities,
(N, K, d1, ...) and (K,) inputs, weight, ignore_index (on every label too), reduction,
label_smoothing (with class weights), empty batches; gradients to the scores and to
probability targets; finite differences; bad arguments."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidl
import minidl.functional as F
from minidl.functional.loss import CrossEntropy
from minidl.gradcheck import check_gradients

torch = pytest.importorskip("torch")


def leaf(values):
    return minidl.tensor(values, requires_grad=True)


def probabilities(rng, shape):
    t = rng.random(shape)
    return t / t.sum(axis=1 if len(shape) > 1 else 0, keepdims=True)


def compare_with_torch(x, target, rng, **kwargs):
    """Loss and gradients (to x, and to a probability target) of both, NaN where PyTorch has NaN."""
    prob = target.dtype.kind == "f"
    weight = kwargs.pop("weight", None)
    tx, tt = torch.tensor(x, requires_grad=True), torch.tensor(target, requires_grad=prob)
    tloss = torch.nn.functional.cross_entropy(tx, tt, None if weight is None else torch.tensor(weight), **kwargs)
    gy = rng.standard_normal(tuple(tloss.shape))
    tloss.backward(torch.tensor(gy))
    mx, mt = leaf(x), (leaf(target) if prob else target)
    loss = F.cross_entropy(mx, mt, weight, **kwargs)
    assert loss.shape == tuple(tloss.shape) and loss.dtype == x.dtype
    loss.backward(gy)
    tol = dict(rtol=1e-10, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(loss.numpy(), tloss.detach().numpy(), **tol)
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), **tol)
    if prob:
        np.testing.assert_allclose(mt.grad.numpy(), tt.grad.numpy(), **tol)
    return loss


@st.composite
def loss_case(draw):
    k = draw(st.integers(1, 4))
    extra = tuple(draw(st.lists(st.integers(0, 3), max_size=2)))
    n = draw(st.sampled_from([None, 0, 1, 3]))    # None: one (K,) sample
    shape = (k,) if n is None else (n, k) + extra
    prob = draw(st.booleans())
    ignore_index = -100 if prob else draw(st.sampled_from([-100, 0, k - 1]))
    return shape, prob, draw(st.booleans()), ignore_index, draw(st.sampled_from(["mean", "sum", "none"])), \
        draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))


@settings(max_examples=80, deadline=None)
@given(case=loss_case(), seed=st.integers(0, 2**16))
def test_matches_pytorch_on_random_cases(case, seed):
    shape, prob, weighted, ignore_index, reduction, eps = case
    rng = np.random.default_rng(seed)
    k = shape[0] if len(shape) == 1 else shape[1]
    x = rng.standard_normal(shape) * 3
    target_shape = () if len(shape) == 1 else shape[:1] + shape[2:]
    target = probabilities(rng, shape) if prob else rng.integers(0, k, target_shape)
    compare_with_torch(x, target, rng, weight=rng.uniform(0.2, 2.0, k) if weighted else None,
                       ignore_index=ignore_index, reduction=reduction, label_smoothing=eps)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_ignore_index_on_every_label(reduction, eps, weighted):
    """Nothing counts: "mean" is 0/0 = NaN as in PyTorch, and no gradient reaches the scores."""
    rng = np.random.default_rng(1)
    x, labels = rng.standard_normal((4, 3, 2)), np.full((4, 2), 7)
    loss = compare_with_torch(x, labels, rng, weight=rng.uniform(0.5, 2, 3) if weighted else None,
                              ignore_index=7, reduction=reduction, label_smoothing=eps)
    if reduction == "mean":
        assert np.isnan(loss.item())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_label_smoothing_with_class_weights(reduction):
    rng = np.random.default_rng(2)
    x, labels, weight = rng.standard_normal((6, 5)), np.array([0, 4, 2, -100, 2, 1]), np.array([1, 2, 0.5, 3, 0.1])
    compare_with_torch(x, labels, rng, weight=weight, reduction=reduction, label_smoothing=0.3)
    compare_with_torch(x, probabilities(rng, (6, 5)), rng, weight=weight, reduction=reduction, label_smoothing=0.3)


def test_a_minus_infinite_score_elsewhere_stays_out_of_the_loss():
    """A masked class (-inf) must not turn the label's loss into NaN (0 * -inf)."""
    rng = np.random.default_rng(3)
    x = np.array([[2.0, -np.inf, 0.5], [-np.inf, 1.0, 0.0]])
    compare_with_torch(x, np.array([0, 2]), rng)
    compare_with_torch(x, np.array([0, 2]), rng, reduction="none", weight=np.array([1.0, 2.0, 3.0]))


def test_unbatched_input():
    rng = np.random.default_rng(4)
    for reduction in ("mean", "sum", "none"):
        loss = compare_with_torch(rng.standard_normal(5), np.array(3), rng, reduction=reduction, label_smoothing=0.1)
        assert loss.shape == ()
        compare_with_torch(rng.standard_normal(5), probabilities(rng, (5,)), rng, reduction=reduction)


@pytest.mark.filterwarnings("ignore:size_average and reduce args will be deprecated")   # torch's own
def test_deprecated_size_average_and_reduce_follow_pytorch():
    rng = np.random.default_rng(5)
    x, labels = rng.standard_normal((4, 3)), np.array([0, 2, 1, 1])
    for size_average, reduce in [(False, None), (None, False), (True, True), (False, True)]:
        with pytest.warns(DeprecationWarning, match="cross_entropy: size_average and reduce"):
            compare_with_torch(x, labels, rng, size_average=size_average, reduce=reduce)


@pytest.mark.parametrize("options", [
    {}, {"weight": np.array([0.5, 2.0, 1.0, 3.0])}, {"ignore_index": 1}, {"label_smoothing": 0.25},
    {"weight": np.array([0.5, 2.0, 1.0, 3.0]), "ignore_index": 2, "label_smoothing": 0.4, "reduction": "sum"},
    {"reduction": "none", "label_smoothing": 0.1},
])
def test_gradients_match_finite_differences(kernel_mode, options):
    rng = np.random.default_rng(6)
    x = leaf(rng.standard_normal((3, 4, 2)))
    labels = np.array([[0, 1], [2, 3], [1, 1]])
    check_gradients(lambda x: F.cross_entropy(x, labels, **options), [x])
    options = {k: v for k, v in options.items() if k != "ignore_index"}
    x.grad, t = None, leaf(probabilities(rng, (3, 4, 2)))
    check_gradients(lambda x, t: F.cross_entropy(x, t, **options), [x, t])


def test_float32_lists_and_tensors(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    expected = F.cross_entropy(minidl.tensor(x), np.array([1, 0, 3])).item()
    for labels in ([1, 0, 3], minidl.tensor(np.array([1, 0, 3])), np.array([1, 0, 3], np.uint8)):
        loss = F.cross_entropy(minidl.tensor(x), labels)
        assert loss.dtype == np.float32 and loss.item() == expected
    t = probabilities(rng, (3, 4)).astype(np.float32)
    assert F.cross_entropy(minidl.tensor(x), t.tolist()).dtype == np.float32


def test_softmax_cross_entropy_is_its_mean_case(rng):
    x, labels = leaf(rng.standard_normal((5, 3))), rng.integers(0, 3, 5)
    np.testing.assert_array_equal(F.softmax_cross_entropy(x, labels).numpy(), F.cross_entropy(x, labels).numpy())


def test_labels_on_a_device_are_checked_there():
    """Out-of-range labels that were not checked on the host give NaN losses, never another class's score."""
    log_x = np.log(np.full((3, 2), 0.5))
    losses = CrossEntropy(np.array([0, 5, -1]), None, -1, "none", 0.0, check_on_device=True).forward(log_x)
    np.testing.assert_array_equal(np.isnan(losses), [False, True, False])   # -1 is ignore_index: 0
    mean = CrossEntropy(np.array([0, 5, 1]), None, -100, "mean", 0.0, check_on_device=True).forward(log_x)
    assert np.isnan(mean)


@pytest.mark.parametrize("x_shape, target, kwargs, match", [
    ((2, 3), np.array([0, 3]), {}, r"cross_entropy: labels must lie in \[0, 3\) or be ignore_index \(-100\)"),
    ((2, 3), np.array([0, -5]), {"ignore_index": -1}, r"got values from -5 to 0"),
    ((2, 3), np.array([0, 1, 2]), {}, r"expected labels of shape \(2,\) \(class indices\) or \(2, 3\)"),
    ((2, 3), np.array([0.0, 1.0]), {}, r"labels must be integer class indices, got dtype float64"),
    ((2, 3), np.zeros((2, 3), np.int64), {}, r"class probabilities and must be floating-point"),
    ((2, 3), np.zeros((2, 3)), {"ignore_index": 0}, r"ignore_index \(0\) applies to class indices only"),
    ((2, 3), np.array([0, 1]), {"reduction": "avg"}, r"reduction must be one of \('mean', 'sum', 'none'\)"),
    ((2, 3), np.array([0, 1]), {"label_smoothing": 1.5}, r"label_smoothing must be in \[0, 1\], got 1.5"),
    ((2, 3), np.array([0, 1]), {"weight": np.ones(2)}, r"weight must be \(3,\) numbers, one per class"),
    ((), np.array(0), {}, r"expected input \(N, K, \.\.\.\) or \(K,\)"),
    ((2, 3), np.array([0, 1]), {"_int": True}, r"expected floating-point input scores"),
])
def test_bad_arguments_raise_value_error(x_shape, target, kwargs, match):
    x = np.zeros(x_shape, np.int64 if kwargs.pop("_int", False) else np.float64)
    with pytest.raises(ValueError, match=match) as info:
        F.cross_entropy(minidl.tensor(x), target, **kwargs)
    assert str(info.value).startswith("cross_entropy: ")
