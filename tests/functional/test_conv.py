"""conv2d: the reference and the CPU's im2col fast path, forward against a naive loop,
backward by finite differences, bad inputs, and (when installed) PyTorch as a second
reference. Winograd and the fast paths' own details have their files in tests/kernels/."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidl
import minidl.functional as F
from minidl.functional import conv as conv_module
from minidl.gradcheck import check_gradients
from minidl.kernels.cpu.conv import ChannelsLastConv2d

from support.arrays import channels_last
from support.devices import DEVICES


# ---- independent references (written the slow, obvious way) -------------------
def same_pads(size, k, s):
    """TensorFlow's "same": out = ceil(size/s), extra pixel after."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def explicit_pads(padding, hw, kernel, stride):
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        return tuple(same_pads(n, k, s) for n, k, s in zip(hw, kernel, stride))
    if isinstance(padding, int):
        return (padding, padding), (padding, padding)
    if isinstance(padding[0], int):
        return (padding[0], padding[0]), (padding[1], padding[1])
    return tuple(padding[0]), tuple(padding[1])


def naive_conv2d(x, w, b, stride, padding, groups):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    (pt, pb), (pl, pr) = explicit_pads(padding, (h, wd), (kh, kw), (sh, sw))
    xpad = np.zeros((n, c, h + pt + pb, wd + pl + pr))
    xpad[:, :, pt:pt + h, pl:pl + wd] = x
    oh = (h + pt + pb - kh) // sh + 1
    ow = (wd + pl + pr - kw) // sw + 1
    og = o // groups
    y = np.zeros((n, o, oh, ow))
    for i in range(n):
        for j in range(o):
            g = j // og
            for p in range(oh):
                for q in range(ow):
                    patch = xpad[i, g * cg:(g + 1) * cg, p * sh:p * sh + kh, q * sw:q * sw + kw]
                    y[i, j, p, q] = np.sum(patch * w[j]) + (0.0 if b is None else b[j])
    return y


# ---- the three im2col paths -------------------------------------------------------
# "reference": conv.py's Conv2d, the textbook im2col + GEMM;
# "channel_cols": the CPU's channels-last fast path on an NCHW input (conv1's images);
# "pixel_cols": the same on a channels-last input (every later layer's input).
PATHS = ["reference", "channel_cols", "pixel_cols"]


def on_path(array, path):
    """The input array as the path wants it: channels-last memory for "pixel_cols"."""
    return channels_last(array) if path == "pixel_cols" else array


def conv_on_path(path, x, w, b=None, stride=1, padding=0, groups=1):
    algorithm = "reference" if path == "reference" else "im2col"
    y = F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups, algorithm=algorithm)
    if path != "reference" and y.device == "cpu":
        assert y.data.transpose(0, 2, 3, 1).flags.c_contiguous   # channels-last memory
    return y


# ---- hypothesis: forward matches the reference over many geometries ------------
padding_strategy = st.one_of(
    st.just("valid"), st.just("same"), st.integers(0, 2),
    st.tuples(st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)), st.tuples(st.integers(0, 3), st.integers(0, 3))))


@st.composite
def conv_case(draw):
    groups = draw(st.integers(1, 3))
    c = groups * draw(st.integers(1, 2))
    o = groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = draw(padding_strategy)
    h, w = draw(st.integers(kh, 8)), draw(st.integers(kw, 8))  # the kernel always fits
    n = draw(st.integers(1, 3))
    bias = draw(st.booleans())
    return n, c, h, w, o, kh, kw, stride, padding, groups, bias


@settings(max_examples=40, deadline=None)
@given(case=conv_case(), seed=st.integers(0, 2**16), path=st.sampled_from(PATHS))
def test_forward_matches_naive_reference(case, seed, path):
    n, c, h, w, o, kh, kw, stride, padding, groups, bias = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((o, c // groups, kh, kw))
    b = rng.standard_normal(o) if bias else None
    y = conv_on_path(path, minidl.tensor(on_path(x, path)), minidl.tensor(wt), None if b is None else minidl.tensor(b),
                     stride=stride, padding=padding, groups=groups)
    np.testing.assert_allclose(y.numpy(), naive_conv2d(x, wt, b, stride, padding, groups), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_forward_on_device_and_dtype(device, dtype, tol):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 9, 7))
    wt = rng.standard_normal((6, 2, 3, 2))
    b = rng.standard_normal(6)
    y = F.conv2d(minidl.tensor(x, device=device, dtype=dtype), minidl.tensor(wt, device=device, dtype=dtype),
                 minidl.tensor(b, device=device, dtype=dtype), stride=(2, 1), padding=((1, 0), (2, 1)), groups=2)
    assert y.dtype == dtype and y.device == device
    np.testing.assert_allclose(y.numpy(), naive_conv2d(x, wt, b, (2, 1), ((1, 0), (2, 1)), 2), rtol=tol, atol=tol)


def test_alexnet_conv1_same_padding_geometry():
    # TF "same" for 224 / stride 4 / kernel 11: 3 pixels top/left, 4 bottom/right -> 56 x 56.
    x = minidl.tensor(np.zeros((1, 3, 224, 224), np.float32))
    w = minidl.tensor(np.zeros((96, 3, 11, 11), np.float32))
    assert F.conv2d(x, w, stride=4, padding="same").shape == (1, 96, 56, 56)
    assert F.conv2d(x, w, stride=4, padding=((3, 4), (3, 4))).shape == (1, 96, 56, 56)
    assert F.conv2d(x, w, stride=4, padding="valid").shape == (1, 96, 54, 54)


# ---- backward: finite differences in float64 ------------------------------------
GRAD_CASES = [  # x shape, w shape, stride, padding, groups
    ((2, 2, 5, 5), (3, 2, 3, 3), 1, 1, 1),
    ((2, 4, 6, 5), (4, 2, 3, 2), (2, 1), ((1, 0), (0, 2)), 2),
    ((1, 3, 7, 7), (3, 1, 3, 3), 2, "same", 3),
    ((2, 2, 6, 6), (2, 2, 4, 4), 3, "same", 1),   # stride 3 "same": asymmetric, extra pixel after
    ((1, 2, 5, 4), (2, 2, 2, 3), 1, "valid", 1),
    ((2, 2, 5, 6), (4, 1, 3, 3), 1, ((2, 0), (1, 2)), 2),  # stride 1, asymmetric: gx by correlation
    ((1, 2, 4, 4), (2, 2, 2, 2), 1, 3, 1),              # padding > kernel - 1: gx by col2im
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("xs,ws,stride,padding,groups", GRAD_CASES)
def test_gradients_match_finite_differences(device, path, xs, ws, stride, padding, groups):
    rng = np.random.default_rng(7)
    x = minidl.tensor(on_path(rng.standard_normal(xs), path), requires_grad=True, device=device)
    w = minidl.tensor(rng.standard_normal(ws), requires_grad=True, device=device)
    b = minidl.tensor(rng.standard_normal(ws[0]), requires_grad=True, device=device)
    check_gradients(lambda x, w, b: conv_on_path(path, x, w, b, stride=stride, padding=padding, groups=groups),
                    [x, w, b])


@pytest.mark.parametrize("path", PATHS)
def test_gradient_check_catches_a_wrong_backward(monkeypatch, path):
    # The check above must be able to fail: break col2im (the input gradient of strided
    # convs) and expect an AssertionError.
    rng = np.random.default_rng(0)
    x = minidl.tensor(on_path(rng.standard_normal((1, 2, 5, 5)), path), requires_grad=True)
    w = minidl.tensor(rng.standard_normal((2, 2, 3, 3)), requires_grad=True)
    if path == "reference":
        original = conv_module.col2im
        monkeypatch.setattr(conv_module, "col2im", lambda *a: 1.01 * original(*a))
    else:
        original = ChannelsLastConv2d._input_grad_col2im
        monkeypatch.setattr(ChannelsLastConv2d, "_input_grad_col2im", lambda *a: 1.01 * original(*a))
    with pytest.raises(AssertionError, match="input 0"):
        check_gradients(lambda x, w: conv_on_path(path, x, w, stride=2, padding=1), [x, w])


def test_only_needed_gradients_are_computed():
    # x is a constant (like the images fed to conv1): w and b still get exact gradients.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 6, 6))
    w = minidl.tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    b = minidl.tensor(rng.standard_normal(4), requires_grad=True)
    xt = minidl.tensor(x)
    gy = rng.standard_normal((2, 4, 3, 3))
    F.conv2d(xt, w, b, stride=2, padding="same").backward(gy)
    assert xt.grad is None
    x_full = minidl.tensor(x, requires_grad=True)
    w2 = minidl.tensor(w.numpy(), requires_grad=True)
    b2 = minidl.tensor(b.numpy(), requires_grad=True)
    F.conv2d(x_full, w2, b2, stride=2, padding="same").backward(gy)
    np.testing.assert_allclose(w.grad.numpy(), w2.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), gy.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_weight_constant_and_non_contiguous_input():
    # Only x needs a gradient, and x is a transposed view (strides not C-ordered).
    rng = np.random.default_rng(4)
    x_base = rng.standard_normal((2, 7, 6, 3))
    x = x_base.transpose(0, 3, 2, 1)  # (2, 3, 6, 7), non-contiguous
    w = rng.standard_normal((4, 3, 2, 3))
    xt = minidl.tensor(x, requires_grad=True)
    y = F.conv2d(xt, minidl.tensor(w), stride=(1, 2), padding="valid")
    np.testing.assert_allclose(y.numpy(), naive_conv2d(x, w, None, (1, 2), "valid", 1), rtol=1e-12, atol=1e-12)
    check_gradients(lambda x: F.conv2d(x, minidl.tensor(w), stride=(1, 2), padding="valid"),
                    [minidl.tensor(np.ascontiguousarray(x), requires_grad=True)])


# ---- bad input --------------------------------------------------------------------
def _t(shape):
    return minidl.tensor(np.zeros(shape))


@pytest.mark.parametrize("xs,ws,kwargs,match", [
    ((2, 3), (4, 3, 3, 3), {}, r"conv2d: expected x \(N, C, H, W\) or \(C, H, W\).*\(2, 3\)"),
    ((2, 3, 5, 5), (4, 3, 3), {}, r"conv2d: expected x .*weight \(4, 3, 3\)"),
    ((2, 3, 5, 5), (4, 2, 3, 3), {}, r"conv2d: weight \(4, 2, 3, 3\) expects 2 input channels.*has 3"),
    ((2, 4, 5, 5), (3, 2, 3, 3), {"groups": 2}, r"conv2d: groups=2 must divide.*output channels \(3\)"),
    ((2, 3, 5, 5), (4, 1, 3, 3), {"groups": 2}, r"conv2d: groups=2 must divide both input channels \(3\)"),
    ((2, 3, 5, 5), (4, 3, 3, 3), {"groups": 0}, r"conv2d: groups must be a positive int, got 0"),
    ((2, 3, 5, 5), (4, 3, 3, 3), {"stride": 0}, r"conv2d: stride must be a positive int.*got 0"),
    ((2, 3, 5, 5), (4, 3, 3, 3), {"stride": (1, -2)}, r"conv2d: stride .*\(1, -2\)"),
    ((2, 3, 5, 5), (4, 3, 3, 3), {"padding": -1}, r"conv2d: padding must be non-negative, got -1"),
    ((2, 3, 5, 5), (4, 3, 3, 3), {"padding": "full"}, r"conv2d: padding string must be 'valid' or 'same'"),
    ((2, 3, 5, 5), (4, 3, 3, 3), {"padding": (1, 2, 3)}, r"conv2d: padding must be an int"),
    ((2, 3, 4, 4), (4, 3, 6, 3), {}, r"conv2d: kernel \(6, 3\) is larger than the padded input \(4, 4\)"),
    ((2, 3, 4, 4), (4, 3, 7, 3), {"padding": 1}, r"conv2d: kernel \(7, 3\) is larger than the padded input \(6, 6\)"),
])
def test_bad_input_raises_value_error(xs, ws, kwargs, match):
    with pytest.raises(ValueError, match=match):
        F.conv2d(_t(xs), _t(ws), **kwargs)


def test_bad_bias_and_dtype_raise_value_error():
    with pytest.raises(ValueError, match=r"conv2d: bias must have shape \(4,\).*got \(3,\)"):
        F.conv2d(_t((1, 3, 5, 5)), _t((4, 3, 3, 3)), _t((3,)))
    with pytest.raises(ValueError, match=r"conv2d: x, weight and bias must share one dtype.*float32.*float64"):
        F.conv2d(minidl.tensor(np.zeros((1, 3, 5, 5), np.float32)), _t((4, 3, 3, 3)))


# ---- PyTorch as a second, independent reference -----------------------------------
TORCH_CASES = [  # x shape, w shape, stride, padding, groups
    ((2, 4, 11, 10), (6, 2, 3, 3), 1, "same", 2),
    ((3, 3, 17, 17), (8, 3, 5, 5), 4, "same", 1),
    ((2, 6, 9, 8), (6, 2, 3, 4), (2, 1), ((2, 0), (1, 3)), 3),
    ((1, 4, 12, 12), (4, 4, 3, 3), 2, (1, 2), 1),
]


@pytest.mark.parametrize("xs,ws,stride,padding,groups", TORCH_CASES)
def test_matches_pytorch(xs, ws, stride, padding, groups):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    rng = np.random.default_rng(11)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    (pt, pb), (pl, pr) = explicit_pads(padding, xs[2:], ws[2:], (sh, sw))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = tf.conv2d(tf.pad(tx, (pl, pr, pt, pb)), tw, tb, stride=(sh, sw), groups=groups)
    gy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(gy))
    mx, mw, mb = (minidl.tensor(a, requires_grad=True) for a in (x, w, b))
    my = F.conv2d(mx, mw, mb, stride=stride, padding=padding, groups=groups)
    my.backward(gy)
    np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    for m, t in ((mx, tx), (mw, tw), (mb, tb)):
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-10)
