"""The CPU's channels-last im2col convolution: its correlation input gradient and its batch slices.

What it computes is held to the reference in tests/kernels/test_fast_paths.py and to a
naive loop in tests/functional/test_conv.py; these tests pin what only this path has.
"""
import numpy as np
import pytest

import minidl
import minidl.functional as F
from minidl.gradcheck import check_gradients
from minidl.kernels import convolution
from minidl.kernels.cpu import conv as cpu_conv

from support.arrays import channels_last


def conv(x, w, b=None, **kwargs):
    return F.conv2d(x, w, b, algorithm="im2col", **kwargs)


@pytest.mark.parametrize("last", [False, True])
def test_gradient_check_catches_unflipped_weights_in_the_correlation_path(monkeypatch, last):
    # Stride 1 computes gx by correlating gy with flipped weights; without the flip
    # (an easy mistake) the check must fail on input 0 only.
    rng = np.random.default_rng(0)
    x_data = rng.standard_normal((1, 2, 5, 5))
    x = minidl.tensor(channels_last(x_data) if last else x_data, requires_grad=True)
    w = minidl.tensor(rng.standard_normal((2, 2, 3, 3)), requires_grad=True)
    assert convolution.input_grad_by_correlation((3, 3), (1, 1), ((1, 1), (1, 1)), (1, 2, 5, 5), (1, 2, 5, 5))
    check_gradients(lambda x, w: conv(x, w, padding=1), [x, w])
    x.grad = w.grad = None

    def unflipped_pixels(weight, groups):
        o, cg, kh, kw = weight.shape
        per_group = weight.reshape(groups, o // groups, cg, kh, kw).transpose(0, 3, 4, 1, 2)
        return np.ascontiguousarray(per_group).reshape(groups, kh * kw * (o // groups), cg)

    monkeypatch.setattr(cpu_conv, "_flipped_pixel_weights", unflipped_pixels)
    with pytest.raises(AssertionError, match="input 0"):
        check_gradients(lambda x, w: conv(x, w, padding=1), [x, w])


def test_the_correlation_rule():
    # stride 1 and padding below the kernel, and gy's columns no larger than x's
    rule = convolution.input_grad_by_correlation
    assert rule((3, 3), (1, 1), ((1, 1), (1, 1)), (2, 8, 6, 6), (2, 8, 6, 6))
    assert not rule((3, 3), (2, 2), ((1, 1), (1, 1)), (2, 8, 6, 6), (2, 8, 3, 3))      # stride 2
    assert not rule((2, 2), (1, 1), ((2, 2), (2, 2)), (2, 8, 6, 6), (2, 8, 9, 9))      # padding >= kernel
    assert not rule((3, 3), (1, 1), ((1, 1), (1, 1)), (2, 8, 6, 6), (2, 64, 6, 6))     # O >> C: col2im


@pytest.mark.parametrize("last", [False, True])
def test_batch_slicing_gives_the_same_result(monkeypatch, last):
    # Large batches are processed in slices; force one image per slice and compare.
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((5, 4, 7, 6)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6)
    gy = rng.standard_normal((5, 6, 4, 3))

    def run():
        ts = [minidl.tensor(a, requires_grad=True) for a in (channels_last(x) if last else x, w, b)]
        y = conv(*ts, stride=(2, 2), padding=((1, 2), (0, 1)), groups=2)
        y.backward(gy)
        return [y.numpy()] + [t.grad.numpy() for t in ts]

    whole = run()
    monkeypatch.setattr(cpu_conv, "CONV_COLUMN_BYTES", 1)
    monkeypatch.setattr(cpu_conv, "CONV_MIN_PIXELS", 1)
    assert len(cpu_conv._slices(x, 100, 12)) == 5
    for a, s in zip(whole, run()):
        np.testing.assert_allclose(a, s, rtol=1e-12, atol=1e-12)
