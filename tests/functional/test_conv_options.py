"""conv2d with PyTorch's options: dilation (with "same" padding too), unbatched (C, H, W) input,
one-element argument lists, size-1 dimensions and strides larger than the kernel; against PyTorch
(forward and backward) and by finite differences, in both kernel modes."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidl
import minidl.functional as F
import minidl.kernels
from minidl.functional.fast_path import FastPath
from minidl.gradcheck import check_gradients

torch = pytest.importorskip("torch")
tf = torch.nn.functional


def tf_same_pads(size, k, s, d):
    """TensorFlow's "same" for a dilated kernel: output ceil(size / s), the odd pixel after."""
    span = d * (k - 1) + 1
    total = max((math.ceil(size / s) - 1) * s + span - size, 0)
    return total // 2, total - total // 2


def explicit_pads(padding, hw, kernel, stride, dilation):
    if padding == "same":
        return tuple(tf_same_pads(n, k, s, d) for n, k, s, d in zip(hw, kernel, stride, dilation))
    if isinstance(padding, int):
        return (padding, padding), (padding, padding)
    return (padding[0], padding[0]), (padding[1], padding[1])


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def compare_with_torch(x, w, b, stride, padding, dilation, groups, rng, rtol=1e-10):
    """minidl's conv2d against torch's on explicitly padded input: y, and every gradient."""
    unbatched = x.ndim == 3
    hw = x.shape[-2:]
    (pt, pb), (pl, pr) = explicit_pads(padding, hw, w.shape[2:], pair(stride), pair(dilation))
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    ty = tf.conv2d(tf.pad(tx, (pl, pr, pt, pb)), tw, tb, stride=stride, dilation=dilation, groups=groups)
    gy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(gy))
    mx, mw = minidl.tensor(x, requires_grad=True), minidl.tensor(w, requires_grad=True)
    mb = None if b is None else minidl.tensor(b, requires_grad=True)
    my = F.conv2d(mx, mw, mb, stride=stride, padding=padding, groups=groups, dilation=dilation)
    assert my.shape == tuple(ty.shape)
    assert unbatched == (my.ndim == 3)
    my.backward(gy)
    np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=rtol, atol=rtol)
    pairs = [(mx, tx), (mw, tw)] + ([] if b is None else [(mb, tb)])
    for m, t in pairs:
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=rtol, atol=rtol)


@st.composite
def dilated_case(draw):
    groups = draw(st.integers(1, 2))
    c, o = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dilation = draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    stride = draw(st.one_of(st.integers(1, 4), st.tuples(st.integers(1, 4), st.integers(1, 4))))
    padding = draw(st.one_of(st.just("same"), st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2))))
    dh, dw = pair(dilation)
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2), 9))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2), 9))
    n = draw(st.sampled_from([None, 0, 1, 2]))    # None: one (C, H, W) image
    return n, c, h, w, o, kh, kw, stride, padding, dilation, groups, draw(st.booleans())


@settings(max_examples=40, deadline=None)
@given(case=dilated_case(), seed=st.integers(0, 2**16), mode=st.sampled_from(minidl.kernels.MODES))
def test_matches_pytorch_on_random_geometries(case, seed, mode):
    n, c, h, w, o, kh, kw, stride, padding, dilation, groups, bias = case
    rng = np.random.default_rng(seed)
    (pt, pb), (pl, pr) = explicit_pads(padding, (h, w), (kh, kw), pair(stride), pair(dilation))
    dh, dw = pair(dilation)
    if dh * (kh - 1) + 1 > h + pt + pb or dw * (kw - 1) + 1 > w + pl + pr:
        return   # the kernel does not fit (tested among the errors)
    x = rng.standard_normal((c, h, w) if n is None else (n, c, h, w))
    with minidl.kernels.use(mode):
        compare_with_torch(x, rng.standard_normal((o, c // groups, kh, kw)), rng.standard_normal(o) if bias else None,
                           stride, padding, dilation, groups, rng)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")   # torch's note on its own copy
@pytest.mark.parametrize("kernel", [(3, 3), (2, 4), (5, 2), (1, 1)])
@pytest.mark.parametrize("dilation", [1, 2, (3, 1)])
def test_same_padding_at_stride_1_is_pytorchs_same(kernel_mode, kernel, dilation):
    """At stride 1, TensorFlow's rule and PyTorch's padding="same" agree, dilated or not, odd pixel included."""
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3) + kernel), rng.standard_normal(4)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = tf.conv2d(tx, tw, tb, padding="same", dilation=dilation)
    gy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(gy))
    mx, mw, mb = (minidl.tensor(a, requires_grad=True) for a in (x, w, b))
    my = F.conv2d(mx, mw, mb, padding="same", dilation=dilation)
    assert my.shape == (2, 4, 9, 8)
    my.backward(gy)
    np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    for m, t in ((mx, tx), (mw, tw), (mb, tb)):
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("xs, ws, stride, padding, dilation", [
    ((1, 2, 9, 8), (2, 2, 3, 3), 1, "same", 2),
    ((2, 2, 7, 9), (3, 2, 2, 3), (2, 3), 1, (2, 1)),
    ((1, 1, 8, 8), (2, 1, 3, 2), 3, "same", 2),        # stride 3 "same" with dilation: TF's rule
    ((2, 2, 1, 7), (2, 2, 1, 3), 1, 0, 3),              # a size-1 axis
    ((1, 3, 6, 6), (3, 1, 2, 2), 5, (1, 0), 2),         # stride larger than the dilated kernel
])
def test_dilated_gradients_match_finite_differences(kernel_mode, xs, ws, stride, padding, dilation):
    rng = np.random.default_rng(8)
    groups = xs[1] // ws[1]
    x, w, b = (minidl.tensor(rng.standard_normal(s), requires_grad=True) for s in (xs, ws, (ws[0],)))
    check_gradients(lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups,
                                             dilation=dilation), [x, w, b])


def test_unbatched_input_and_its_gradients(kernel_mode):
    rng = np.random.default_rng(2)
    compare_with_torch(rng.standard_normal((4, 7, 6)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6),
                       2, 1, 1, 2, rng)
    x = minidl.tensor(rng.standard_normal((2, 5, 5)), requires_grad=True)
    w = minidl.tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    check_gradients(lambda x, w: F.conv2d(x, w, padding="same"), [x, w])


def test_one_element_lists_are_pytorchs_shorthand():
    rng = np.random.default_rng(1)
    x, w = minidl.tensor(rng.standard_normal((1, 2, 7, 7))), minidl.tensor(rng.standard_normal((3, 2, 3, 3)))
    expected = F.conv2d(x, w, stride=2, padding=1, dilation=2).numpy()
    np.testing.assert_array_equal(F.conv2d(x, w, stride=(2,), padding=[1], dilation=[2]).numpy(), expected)


def test_dilation_runs_the_reference_and_a_forced_fast_algorithm_is_refused():
    rng = np.random.default_rng(0)
    x = minidl.tensor(rng.standard_normal((1, 16, 8, 8)), requires_grad=True)
    w = minidl.tensor(rng.standard_normal((4, 16, 3, 3)), requires_grad=True)
    with minidl.kernels.use("fast"):
        assert isinstance(F.conv2d(x, w, padding=1).creator, FastPath)          # undilated: a fast path
        assert not isinstance(F.conv2d(x, w, padding=2, dilation=2).creator, FastPath)
    for algorithm in ("im2col", "winograd", "winograd_2x2"):
        with pytest.raises(ValueError, match=rf"conv2d: algorithm '{algorithm}' cannot run dilation \(2, 2\)"):
            F.conv2d(x, w, padding=2, dilation=2, algorithm=algorithm)
    F.conv2d(x, w, padding=2, dilation=2, algorithm="reference")


@pytest.mark.parametrize("xs, kwargs, match", [
    ((1, 2, 5, 5), {"dilation": 0}, r"conv2d: dilation must be a positive int.*got 0"),
    ((1, 2, 5, 5), {"dilation": (1, 2, 3)}, r"conv2d: dilation must be"),
    ((1, 2, 5, 5), {"dilation": 3}, r"conv2d: kernel \(3, 3\) \(dilation \(3, 3\): it spans \(7, 7\)\) is larger"),
    ((2, 5, 5), {"stride": (2, 0)}, r"conv2d: stride must be a positive int.*\(2, 0\)"),   # unbatched too
])
def test_bad_options_raise_value_error(xs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        F.conv2d(minidl.tensor(np.zeros(xs)), minidl.tensor(np.zeros((2, 2, 3, 3))), **kwargs)
