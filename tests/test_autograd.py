"""The autograd core: graph recording, iterative backward, accumulation, freeing, no_grad."""
import gc
import weakref

import numpy as np
import pytest

import minidl
from minidl import Function, Tensor, no_grad
import minidl.functional as F


def leaf(values, device="cpu"):
    return minidl.tensor(np.asarray(values, dtype=np.float64), requires_grad=True, device=device)


def test_chain_rule_on_a_small_expression(device):
    x, y = leaf([1.5, -2.0], device), leaf([0.5, 3.0], device)
    z = (x * y + x / y - y ** 2).sum()
    z.backward()
    xv, yv = np.array([1.5, -2.0]), np.array([0.5, 3.0])
    np.testing.assert_allclose(x.grad.numpy(), yv + 1 / yv)
    np.testing.assert_allclose(y.grad.numpy(), xv - xv / yv ** 2 - 2 * yv)


def test_tensor_used_twice_accumulates_both_paths(device):
    x = leaf([2.0, 3.0], device)
    y = x * x + x  # x feeds three uses
    y.backward(np.ones(2))
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.array([2.0, 3.0]) + 1)


def test_diamond_graph_reaches_each_function_once():
    calls = []

    class Spy(Function):
        def forward(self, a):
            return a * 2

        def backward(self, g):
            calls.append(1)
            return g * 2

    x = leaf([1.0])
    h = Spy()(x)
    (h * 3 + h * 5).sum().backward()
    assert len(calls) == 1  # gradients of both branches were summed before Spy.backward ran
    np.testing.assert_allclose(x.grad.numpy(), [16.0])


def test_grad_accumulates_across_backward_calls():
    x = leaf([1.0, 2.0])
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 6.0])


def test_ten_thousand_op_chain_does_not_recurse():
    x = leaf([1.0])
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward(np.ones(1))
    np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** 10_000], rtol=1e-9)


def test_second_backward_through_freed_graph_raises_clearly():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_retain_graph_allows_a_second_backward():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 8.0])


def test_no_grad_records_nothing():
    x = leaf([1.0])
    with no_grad():
        y = x * 2
    assert not y.requires_grad and y.creator is None
    z = x * 2  # recording is back on after the block
    assert z.requires_grad and z.creator is not None


def test_saved_buffers_are_released_after_backward():
    class Holder(Function):
        def forward(self, a):
            self.big = np.ones(1000)  # stands in for a saved activation
            return a * 1

        def backward(self, g):
            return g

    x = leaf([1.0])
    fn = Holder()
    y = fn(x)
    big_ref = weakref.ref(fn.big) if hasattr(fn.big, "__weakref__") else None
    y.sum().backward()
    assert not hasattr(fn, "big")  # released once backward no longer needs it
    gc.collect()
    if big_ref is not None:
        assert big_ref() is None


def test_intermediate_activations_are_freed_during_backward():
    x = leaf(np.ones(4))
    h = x * 2
    ref = weakref.ref(h)
    y = (h * 3).sum()
    del h
    y.backward()
    gc.collect()
    assert ref() is None  # nothing keeps the intermediate alive after backward


class _Shift(Function):
    """y = a + 1: backward needs nothing that forward saw."""

    def forward(self, a):
        return a + 1

    def backward(self, g):
        return g


def test_an_activation_that_no_function_saved_is_freed_during_forward():
    # The graph keeps a reference to h's creator, not h: once the caller drops h,
    # its array goes (a ReLU's input, a residual sum's operands are such arrays).
    x = leaf(np.ones(4))
    h = _Shift()(x)
    array_ref = weakref.ref(h.data)
    y = _Shift()(h)
    del h
    gc.collect()
    assert array_ref() is None
    (y * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full(4, 3.0))


def test_a_freed_intermediate_used_twice_still_sums_its_gradients():
    x = leaf([1.0, 2.0])
    h = _Shift()(x * 2)          # 2x + 1, fed to three consumers
    y = (h * h + h).sum()
    del h
    gc.collect()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * (2 * (2 * np.array([1.0, 2.0]) + 1) + 1))


def test_a_tensor_from_a_freed_graph_can_feed_no_second_backward():
    x = leaf([1.0, 2.0])
    h = x * x
    h.sum().backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        (h * 2).sum().backward()


def test_constants_get_no_gradient_and_raw_arrays_are_constants():
    x = leaf([1.0, 2.0])
    c = minidl.tensor(np.array([3.0, 4.0]))
    (x * c + np.array([1.0, 1.0])).sum().backward()
    assert c.grad is None
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 4.0])


def test_backward_needs_grad_for_non_scalar_and_checks_its_shape():
    x = leaf([1.0, 2.0])
    y = x * 2
    with pytest.raises(RuntimeError, match="one-element"):
        y.backward()
    with pytest.raises(ValueError, match="shape"):
        y.backward(np.ones(3))


def test_backward_on_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        minidl.tensor([1.0]).backward()


def test_wrong_gradient_shape_from_user_function_is_reported():
    class Bad(Function):
        def forward(self, a):
            return a * 1

        def backward(self, g):
            return g[:1]

    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="Bad.backward returned a gradient of shape"):
        Bad()(x).sum().backward()


def test_multi_output_function_gets_zero_grad_for_unused_output():
    class Split(Function):
        def forward(self, a):
            return a[:1] * 1, a[1:] * 1

        def backward(self, g0, g1):
            return np.concatenate([g0, g1])

    x = leaf([1.0, 2.0, 3.0])
    first, _ = Split()(x)
    (first * 5).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 0.0, 0.0])


def test_tensor_facts_and_conversions():
    t = minidl.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert t.dtype == np.float32  # Python floats default to float32
    assert t.shape == (2, 2) and t.device == "cpu" and str(t.device) == "cpu"
    n = t.numpy()
    n[0, 0] = 99
    assert t.data[0, 0] == 1.0  # numpy() is a copy
    source = np.zeros(3)
    for copied in (minidl.tensor(source), minidl.tensor(source, dtype=np.float64), minidl.tensor(minidl.from_numpy(source))):
        source[0] = 7.0
        assert copied.data[0] == 0.0 and not np.shares_memory(copied.data, source)   # torch.tensor copies too
    assert minidl.from_numpy(source).data is source                                 # from_numpy shares
    last = np.zeros((2, 3, 4, 5)).transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2)   # channels-last memory
    assert minidl.tensor(last).data.strides == last.strides                         # the copy keeps the layout
    assert minidl.tensor(np.arange(3)).dtype == np.int64
    assert minidl.tensor(np.ones(2, np.float64)).dtype == np.float64
    assert minidl.tensor(5.0).item() == 5.0
    with pytest.raises(ValueError, match="one element"):
        t.item()
    d = t.detach()
    assert d.creator is None and not d.requires_grad


def test_float32_stays_float32_with_python_scalars():
    x = minidl.tensor(np.ones(3, np.float32), requires_grad=True)
    y = (x * 2.5 + 1) / 3 - 0.5
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(ValueError, match="floating-point"):
        minidl.tensor(np.arange(3), requires_grad=True)


def test_ndarray_on_the_left_of_an_operator_dispatches_to_tensor():
    x = leaf([1.0, 2.0])
    y = np.array([2.0, 2.0]) * x
    assert isinstance(y, Tensor)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])


# ---- post-accumulate-grad hooks (what data-parallel gradient buckets wait for) ----

def test_grad_hook_fires_once_with_the_final_gradient_of_a_leaf_used_twice():
    x = leaf([2.0, 3.0])
    seen = []
    x.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    (x * x + x).sum().backward()       # three contributions reach x
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], 2 * np.array([2.0, 3.0]) + 1)


def test_grad_hook_of_a_late_layer_fires_before_the_early_layers_backward():
    events = []

    class Spy(Function):
        def forward(self, a, w):
            self.save_for_backward(a, w)
            return a * w

        def backward(self, g):
            events.append("early backward")
            a, w = self.saved_arrays
            return g * w, g * a

    x, w1, w2 = leaf([1.0, 2.0]), leaf([3.0, 4.0]), leaf([5.0, 6.0])
    w1.register_post_accumulate_grad_hook(lambda t: events.append("w1 final"))
    w2.register_post_accumulate_grad_hook(lambda t: events.append("w2 final"))
    (Spy()(x, w1) * w2).sum().backward()
    assert events == ["w2 final", "early backward", "w1 final"]


def test_grad_hook_skips_unreached_leaves_and_can_be_removed():
    x, unused = leaf([1.0]), leaf([1.0])
    calls = []
    handle = x.register_post_accumulate_grad_hook(lambda t: calls.append("x"))
    unused.register_post_accumulate_grad_hook(lambda t: calls.append("unused"))
    (x * 2).sum().backward()
    assert calls == ["x"]
    handle.remove()
    (x * 2).sum().backward()
    assert calls == ["x"]


def test_grad_hook_on_a_root_leaf_and_refused_on_non_leaves():
    x = leaf([1.0])
    calls = []
    x.register_post_accumulate_grad_hook(lambda t: calls.append(t.grad.numpy()[0]))
    x.backward(np.array([4.0]))
    assert calls == [4.0]
    with pytest.raises(RuntimeError, match="only a leaf"):
        (x * 2).register_post_accumulate_grad_hook(lambda t: None)


def test_leaf_gradients_own_their_memory():
    # Add's backward hands one array to both inputs, and y.backward(g) may hand the caller's
    # g on: an in-place change to one .grad (zero_grad, clipping, an all-reduce) or to g
    # must not reach any other gradient.
    a, b = (minidl.tensor(np.ones(3), requires_grad=True) for _ in range(2))
    (a + b).sum().backward()
    a.grad.data[...] = 0
    np.testing.assert_array_equal(b.grad.numpy(), np.ones(3))

    x = minidl.tensor(np.ones((2, 3)), requires_grad=True)
    g = np.ones((2, 3))
    (x + 0.0).backward(g)
    g[...] = 7
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((2, 3)))

    leaf = minidl.tensor(np.ones(4), requires_grad=True)
    g = np.arange(8.0)
    leaf.backward(g[::2])                     # a view of the caller's array
    g[...] = -1
    np.testing.assert_array_equal(leaf.grad.numpy(), [0.0, 2.0, 4.0, 6.0])

    # parts of one array (concat's backward splits it): each leaf gets memory of its own
    p, q = (minidl.tensor(np.ones(2), requires_grad=True) for _ in range(2))
    F.concat([p, q], 0).sum().backward()
    p.grad.data[...] = 5
    np.testing.assert_array_equal(q.grad.numpy(), np.ones(2))


def test_grad_modes_as_blocks_and_decorators():
    x = minidl.tensor(np.ones(2), requires_grad=True)

    @no_grad
    def bare(t):
        return t * 2.0

    @no_grad()
    def called(t):
        return t * 2.0

    assert not bare(x).requires_grad and not called(x).requires_grad and bare.__name__ == "bare"
    with no_grad():
        assert not (x * 2.0).requires_grad
        with minidl.enable_grad():
            assert (x * 2.0).requires_grad
        assert not (x * 2.0).requires_grad
    with minidl.set_grad_enabled(False):
        assert not minidl.is_grad_enabled()
    assert minidl.is_grad_enabled() and (x * 2.0).requires_grad
    mode = no_grad()
    with mode:          # one instance, nested: each exit restores its own entry's mode
        with mode:
            pass
        assert not minidl.is_grad_enabled()
    assert minidl.is_grad_enabled()
