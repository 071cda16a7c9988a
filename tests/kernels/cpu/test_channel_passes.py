"""Batch norm's CPU passes: chunks that start mid-image and mid-channel change nothing."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
from minidl.kernels.cpu import channel_passes

from support.arrays import channels_last


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape,last", [((5, 4, 7), False), ((3, 7, 3, 2), True), ((9, 7), False),
                                        ((3, 7, 3, 2), False)])
def test_chunked_passes_match_one_chunk(monkeypatch, training, shape, last):
    # The passes walk rows in chunks: (N*C, S) rows of S values for NCHW, rows of whole
    # pixels (k*C values) for channels-last and 2-D input; 3 rows per chunk here, so
    # chunks start mid-image and mid-channel. Every result must equal the whole-row run.
    rng = np.random.default_rng(5)
    c = shape[1]
    x_data = rng.standard_normal(shape) * 2.0 + 0.5
    x = minidl.tensor(channels_last(x_data) if last else x_data, requires_grad=True)
    gamma = minidl.tensor(rng.uniform(0.5, 1.5, c), requires_grad=True)
    beta = minidl.tensor(rng.standard_normal(c), requires_grad=True)
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    gy = rng.standard_normal(shape)

    def run():
        for t in (x, gamma, beta):
            t.grad = None
        y = F.batch_norm(x, gamma, beta, rm.copy(), rv.copy(), training)
        assert y.creator.label == "BatchNorm [fused passes]"
        y.backward(gy)
        return [y.numpy(), x.grad.numpy(), gamma.grad.numpy(), beta.grad.numpy()]

    whole = run()
    monkeypatch.setattr(channel_passes, "CHANNEL_CHUNK_BYTES", 3 * 7 * 8)
    monkeypatch.setattr(channel_passes, "CHANNEL_ROW_VALUES", 7)   # channels-last rows of one pixel each
    assert len(channel_passes._chunks(np.zeros((20, 7)))) == 7
    for got, expected in zip(run(), whole):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_outputs_keep_the_input_layout():
    x = channels_last(np.random.default_rng(0).standard_normal((2, 3, 4, 5)))
    mean, scale = np.zeros(3), np.ones(3)
    y = channel_passes.channel_centered_affine(x, mean, scale)
    assert y.transpose(0, 2, 3, 1).flags.c_contiguous
    np.testing.assert_array_equal(y, x)
    np.testing.assert_allclose(channel_passes.channel_sums(x), x.sum(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(channel_passes.channel_centered_dots(x, mean), (x * x).sum(axis=(0, 2, 3)),
                               rtol=1e-12)
