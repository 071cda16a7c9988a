"""The CPU's sliced max pooling: batch slices change nothing (the rest: tests/kernels/test_fast_paths.py)."""
import numpy as np

import minidl
import minidl.functional as F
from minidl.kernels.cpu import pooling as cpu_pooling
from minidl.kernels.cpu import spatial as cpu_spatial

from support.arrays import channels_last, shuffled_linspace


def test_batch_slicing_gives_the_same_result(monkeypatch):
    # Big batches are pooled in slices; force one image per slice and compare, in both layouts.
    rng = np.random.default_rng(8)
    x = shuffled_linspace((3, 2, 9, 8), rng)
    gy = rng.standard_normal((3, 2, 5, 4))

    def run(data):
        xt = minidl.tensor(data, requires_grad=True)
        y = F.max_pool2d(xt, 3, 2, ((1, 1), (0, 1)))
        assert type(y.creator.impl) is cpu_pooling.SlicedMaxPool2d
        y.backward(gy)
        return y.numpy(), xt.grad.numpy()

    whole = [run(x), run(channels_last(x))]
    monkeypatch.setattr(cpu_spatial, "POOLING_BYTES", 1)
    assert len(cpu_spatial.pooling_slices(x.shape, ((1, 1), (0, 1)), x)) == 3
    for (y, gx), data in zip(whole, (x, channels_last(x))):
        y_sliced, gx_sliced = run(data)
        np.testing.assert_array_equal(y, y_sliced)
        np.testing.assert_array_equal(gx, gx_sliced)


def test_argmax_is_one_byte_for_small_windows_and_wider_for_large_ones():
    assert cpu_pooling.index_dtype(9) == np.int8 and cpu_pooling.index_dtype(144) == np.int16
    pool = cpu_pooling.SlicedMaxPool2d((3, 3), (2, 2), ((0, 0), (0, 0)))
    pool.forward(np.zeros((1, 2, 7, 7), np.float32))
    assert pool.argmax.dtype == np.int8
