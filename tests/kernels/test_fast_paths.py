"""Every CPU fast path against its reference, the oracle: forward and backward on random shapes.

The shapes reach each fast path's edge cases: Winograd tiles that overhang the output,
1-pixel maps, odd channel counts, groups, both memory layouts (NCHW and channels-last),
float32 and float64, padding on one side only, strides larger than the kernel. The
reference (``minidl.kernels.use("reference")``) and the fast path see the same inputs and
the same upstream gradient; float64 must agree to rounding, float32 to a few ulps of the
values' scale. Finite differences check the fast paths on their own too. (The raw CUDA
kernels have their twins' tests in tests/kernels/cuda/.)
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidl
import minidl.functional as F
import minidl.kernels
from minidl.functional.fast_path import FastPath
from minidl.gradcheck import check_gradients

from support.arrays import channels_last, shuffled_linspace

# float64: rounding only; float32: the fast paths sum in other orders (Winograd's
# transforms add values of different tiles), so a few ulps of the output's scale.
TOLERANCE = {np.float64: 1e-10, np.float32: 2e-5}


def run(mode, fn, arrays, gy_seed=0, **kwargs):
    """fn(*tensors) in ``mode``, then backward with a fixed random upstream gradient: outputs and grads."""
    tensors = [minidl.tensor(a, requires_grad=True) for a in arrays]
    with minidl.kernels.use(mode):
        y = fn(*tensors, **kwargs)
        kind = y.creator
        gy = np.random.default_rng(gy_seed).standard_normal(y.shape).astype(y.dtype)
        y.backward(gy)
    return (type(kind), y.numpy(), [None if t.grad is None else t.grad.numpy() for t in tensors])


def assert_same(fast, reference, dtype):
    (fast_kind, y_fast, g_fast), (ref_kind, y_ref, g_ref) = fast, reference
    assert fast_kind is FastPath and ref_kind is not FastPath   # each mode really ran its own path
    tol = TOLERANCE[dtype]
    for got, want in zip([y_fast] + g_fast, [y_ref] + g_ref):
        scale = max(float(np.abs(want).max(initial=0.0)), 1.0)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


def layout(x, last):
    return channels_last(x) if last else x


# ---- convolution: channels-last im2col and Winograd ---------------------------------------

@st.composite
def conv_case(draw, winograd):
    groups = draw(st.sampled_from([1, 2, 3]))
    c = groups * draw(st.integers(1, 3))
    o = groups * draw(st.integers(1, 3))
    if winograd:
        k = draw(st.sampled_from([3, 5]))
        kernel, stride = (k, k), 1
        padding = draw(st.one_of(st.just("same"), st.just("valid"), st.integers(0, k - 1),
                                 st.tuples(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)),
                                           st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)))))
        h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
        if padding in ("valid", 0):     # the kernel must fit the unpadded map
            h, w = max(h, k), max(w, k)
        elif isinstance(padding, int):
            h, w = max(h, k - 2 * padding), max(w, k - 2 * padding)
        elif isinstance(padding, tuple):
            (t, b), (lft, r) = padding
            h, w = max(h, k - t - b), max(w, k - lft - r)
    else:
        kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        stride = draw(st.one_of(st.integers(1, 5), st.tuples(st.integers(1, 3), st.integers(1, 5))))
        padding = draw(st.one_of(st.just("same"), st.just("valid"), st.integers(0, 2),
                                 st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                                           st.tuples(st.integers(0, 3), st.integers(0, 3)))))
        h, w = draw(st.integers(kernel[0], 9)), draw(st.integers(kernel[1], 9))
    n = draw(st.integers(1, 3))
    return (n, c, h, w), (o, c // groups) + tuple(kernel), stride, padding, groups


def _conv_arrays(rng, x_shape, w_shape, dtype, last):
    x = layout(rng.standard_normal(x_shape).astype(dtype), last)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    return x, w, b


@settings(max_examples=40, deadline=None)
@given(case=conv_case(winograd=False), seed=st.integers(0, 2**16), last=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_channels_last_im2col_equals_the_reference(case, seed, last, dtype):
    x_shape, w_shape, stride, padding, groups = case
    arrays = _conv_arrays(np.random.default_rng(seed), x_shape, w_shape, dtype, last)
    options = dict(stride=stride, padding=padding, groups=groups)
    assert_same(run("fast", F.conv2d, arrays, algorithm="im2col", **options),
                run("reference", F.conv2d, arrays, algorithm="reference", **options), dtype)


@settings(max_examples=40, deadline=None)
@given(case=conv_case(winograd=True), seed=st.integers(0, 2**16), last=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), tile=st.sampled_from(["winograd_2x2", "winograd_4x4"]))
def test_winograd_equals_the_reference(case, seed, last, dtype, tile):
    # Output maps of 1 to 9 pixels: F(4x4) tiles overhang most of them.
    x_shape, w_shape, stride, padding, groups = case
    arrays = _conv_arrays(np.random.default_rng(seed), x_shape, w_shape, dtype, last)
    options = dict(stride=stride, padding=padding, groups=groups)
    fast = run("fast", F.conv2d, arrays, algorithm=tile, **options)
    reference = run("reference", F.conv2d, arrays, algorithm="reference", **options)
    (_, y_fast, g_fast), (_, y_ref, g_ref) = fast, reference
    if dtype == np.float32:   # Winograd's float32 error grows with the transforms' weights (up to 8)
        for got, want in zip([y_fast] + g_fast, [y_ref] + g_ref):
            scale = max(float(np.abs(want).max(initial=0.0)), 1.0)
            np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * scale)
    else:
        assert_same(fast, reference, dtype)


@pytest.mark.parametrize("algorithm,kernel,padding", [("im2col", 3, 1), ("im2col", 2, 0), ("winograd_2x2", 3, 1),
                                                      ("winograd_4x4", 3, "same"), ("winograd_4x4", 5, 2),
                                                      ("winograd_2x2", 5, ((0, 4), (2, 2)))])
@pytest.mark.parametrize("last", [False, True])
def test_fast_convolutions_pass_the_gradient_check(algorithm, kernel, padding, last):
    rng = np.random.default_rng(4)
    x = minidl.tensor(layout(rng.standard_normal((2, 4, 5, 6)), last), requires_grad=True)
    w = minidl.tensor(rng.standard_normal((6, 2, kernel, kernel)), requires_grad=True)
    b = minidl.tensor(rng.standard_normal(6), requires_grad=True)
    with minidl.kernels.use("fast"):
        check_gradients(lambda x, w, b: F.conv2d(x, w, b, padding=padding, groups=2, algorithm=algorithm), [x, w, b])


# ---- pooling ----------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**16), last=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       tied=st.booleans())
def test_sliced_max_pooling_equals_the_reference(data, seed, last, dtype, tied):
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    stride = data.draw(st.one_of(st.none(), st.integers(1, 5)))
    padding = data.draw(st.tuples(st.tuples(st.integers(0, kh - 1), st.integers(0, kh - 1)),
                                  st.tuples(st.integers(0, kw - 1), st.integers(0, kw - 1))))
    shape = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 5)), data.draw(st.integers(kh, 9)),
             data.draw(st.integers(kw, 9)))
    rng = np.random.default_rng(seed)
    values = rng.integers(-1, 2, shape) if tied else shuffled_linspace(shape, rng)   # ties: the first tap wins
    x = layout(values.astype(dtype), last)
    options = dict(kernel_size=(kh, kw), stride=stride, padding=padding)
    fast, reference = run("fast", F.max_pool2d, [x], **options), run("reference", F.max_pool2d, [x], **options)
    np.testing.assert_array_equal(fast[1], reference[1])          # the same maxima: no arithmetic
    np.testing.assert_array_equal(fast[2][0], reference[2][0])    # and the same gradient routing


# ---- batch norm ----------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**16), dtype=st.sampled_from([np.float32, np.float64]),
       training=st.booleans(), affine=st.sampled_from(["both", "weight", "bias", "none"]))
def test_fused_batch_norm_equals_the_reference(data, seed, dtype, training, affine):
    rank = data.draw(st.sampled_from([2, 3, 4]))
    shape = (data.draw(st.integers(2, 4)), data.draw(st.integers(1, 7))) + tuple(
        data.draw(st.integers(1, 4)) for _ in range(rank - 2))
    last = rank == 4 and data.draw(st.booleans())
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = layout((rng.standard_normal(shape) * 3 + 5).astype(dtype), last)
    gamma, beta = rng.uniform(0.5, 1.5, c).astype(dtype), rng.standard_normal(c).astype(dtype)
    stats = rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2.0, c).astype(dtype)

    def bn(x, gamma, beta):
        running = [s.copy() for s in stats]
        y = F.batch_norm(x, gamma if affine in ("both", "weight") else None,
                         beta if affine in ("both", "bias") else None, *running, training=training)
        bn.running = running
        return y

    fast = run("fast", bn, [x, gamma, beta])
    fast_running = bn.running
    reference = run("reference", bn, [x, gamma, beta])
    (fk, fy, fg), (rk, ry, rg) = fast, reference
    used = [0] + [1] * (affine in ("both", "weight")) + [2] * (affine in ("both", "bias"))
    assert_same((fk, fy, [fg[i] for i in used]), (rk, ry, [rg[i] for i in used]), dtype)
    for a, b in zip(fast_running, bn.running):       # the running statistics, updated in place
        np.testing.assert_allclose(a, b, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


def test_fused_synchronised_batch_norm_equals_the_reference():
    # A reduce that doubles every total: as if a second process held the same slice.
    rng = np.random.default_rng(3)
    x, gamma, beta = rng.standard_normal((3, 4, 5, 2)) * 2 + 1, rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)
    calls = []

    def double(values):
        calls.append(values.size)
        values *= 2
        return values

    def bn(x, gamma, beta):
        return F.batch_norm(x, gamma, beta, np.zeros(4), np.ones(4), training=True, channel_reduce=double)

    fast = run("fast", bn, [channels_last(x), gamma, beta])
    fast_calls, calls[:] = list(calls), []
    assert_same(fast, run("reference", bn, [x, gamma, beta]), np.float64)
    assert fast_calls == calls == [5, 4, 8]    # the same collectives: sums and count, variance, backward's sums


# ---- elementwise and dense ---------------------------------------------------------------------

@pytest.mark.parametrize("shape,last", [((3, 4, 5, 6), False), ((3, 4, 5, 6), True), ((7, 33), False), ((0, 5), False)])
def test_chunked_relu_equals_the_reference(monkeypatch, shape, last):
    from minidl.kernels.cpu import elementwise
    monkeypatch.setattr(elementwise, "ELEMENTWISE_CHUNK_BYTES", 40 * 8)   # chunks that end mid-row
    x = layout(np.random.default_rng(1).standard_normal(shape), last)
    fast, reference = run("fast", F.relu, [x]), run("reference", F.relu, [x])
    assert fast[0] is FastPath
    np.testing.assert_array_equal(fast[1], reference[1])
    np.testing.assert_array_equal(fast[2][0], reference[2][0])


@pytest.mark.parametrize("n,k,m", [(4, 3, 5), (300, 200, 100), (1, 64, 2000), (0, 5, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_dense_products_equal_the_reference(monkeypatch, n, k, m, dtype):
    from minidl.kernels.cpu import threads
    monkeypatch.setattr(threads, "_SPLIT_MACS", 1000)        # split even the small products
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal(s).astype(dtype) for s in ((n, k), (m, k), (m,))]
    assert_same(run("fast", F.linear, arrays), run("reference", F.linear, arrays), dtype)


# ---- average pooling, the global average, activations ------------------------------------------

@settings(max_examples=40, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**16), dtype=st.sampled_from([np.float32, np.float64]),
       ceil_mode=st.booleans(), count_include_pad=st.booleans(), divisor=st.sampled_from([None, None, 3]))
def test_sliced_average_pooling_equals_the_reference(data, seed, dtype, ceil_mode, count_include_pad, divisor):
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    stride = data.draw(st.one_of(st.none(), st.integers(1, 5)))
    padding = (data.draw(st.integers(0, kh // 2)), data.draw(st.integers(0, kw // 2)))
    shape = (data.draw(st.integers(1, 3)), data.draw(st.integers(2, 5)), data.draw(st.integers(max(kh, 2), 9)),
             data.draw(st.integers(kw, 9)))   # 2 rows at least: a 1 x 1 map is NCHW and channels-last at once
    x = channels_last(np.random.default_rng(seed).standard_normal(shape).astype(dtype))   # the fast path's layout
    options = dict(kernel_size=(kh, kw), stride=stride, padding=padding, ceil_mode=ceil_mode,
                   count_include_pad=count_include_pad, divisor_override=divisor)
    fast, reference = run("fast", F.avg_pool2d, [x], **options), run("reference", F.avg_pool2d, [x], **options)
    assert fast[0] is FastPath and reference[0] is not FastPath
    np.testing.assert_array_equal(fast[1], reference[1])          # the same sums in the same order
    np.testing.assert_array_equal(fast[2][0], reference[2][0])


@settings(max_examples=30, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**16), last=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]))
def test_fast_adaptive_average_pooling_equals_the_reference(data, seed, last, dtype):
    oh, ow = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    global_ = data.draw(st.booleans())
    h, w = ((data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9))) if global_
            else (oh * data.draw(st.integers(1, 3)), ow * data.draw(st.integers(1, 3))))
    shape = (data.draw(st.integers(1, 3)), data.draw(st.integers(2, 5)), h, w)
    x = layout(np.random.default_rng(seed).standard_normal(shape).astype(dtype), last)
    size = 1 if global_ else (oh, ow)
    assert_same(run("fast", F.adaptive_avg_pool2d, [x], output_size=size),
                run("reference", F.adaptive_avg_pool2d, [x], output_size=size), dtype)


@pytest.mark.parametrize("fn,kwargs", [(F.sigmoid, {}), (F.leaky_relu, {"negative_slope": 0.1}),
                                       (F.leaky_relu, {"negative_slope": -2.0}), (F.gelu, {}),
                                       (F.gelu, {"approximate": "tanh"})])
@pytest.mark.parametrize("shape,last", [((3, 4, 5, 6), False), ((3, 4, 5, 6), True), ((7, 33), False), ((0, 5), False)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_activations_equal_the_reference(monkeypatch, fn, kwargs, shape, last, dtype):
    from minidl.kernels.cpu import elementwise
    monkeypatch.setattr(elementwise, "ELEMENTWISE_CHUNK_BYTES", 40 * 8)   # chunks that end mid-row
    x = layout((np.random.default_rng(1).standard_normal(shape) * 4).astype(dtype), last)
    assert_same(run("fast", fn, [x], **kwargs), run("reference", fn, [x], **kwargs), dtype)
