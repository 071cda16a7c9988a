"""minidl.special.erfc against Python's math.erfc: a few units in the last place of a float64
everywhere, including far out in both tails and at the intervals' edges; NaN and infinities."""
import math

import numpy as np
import pytest

from minidl.special import erfc

from support.devices import DEVICES


def test_matches_math_erfc_to_a_few_ulps():
    edges = [0.46875, 4.0, 30.0]
    x = np.concatenate([np.linspace(-7, 27, 20001), edges, np.nextafter(edges, 0), np.negative(edges),
                        [0.0, -0.0, 1e-300, -1e-300, 1e-9]])
    ours = erfc(x)
    theirs = np.array([math.erfc(v) for v in x])
    tiny = theirs < 1e-300   # below here math.erfc itself rounds into subnormals
    np.testing.assert_allclose(ours[~tiny], theirs[~tiny], rtol=4e-15, atol=0)
    np.testing.assert_allclose(ours[tiny], theirs[tiny], atol=1e-300)


def test_special_values_without_warnings():
    with np.errstate(all="raise", under="ignore"):
        out = erfc(np.array([np.inf, -np.inf, 40.0, -40.0, 1e300, -1e300, np.nan]))
    np.testing.assert_array_equal(out[:6], [0.0, 2.0, 0.0, 2.0, 0.0, 2.0])
    assert np.isnan(out[6])


@pytest.mark.parametrize("device", DEVICES)
def test_keeps_dtype_and_shape(device):
    import minidl
    x = minidl.tensor(np.linspace(-3, 3, 24).reshape(2, 3, 4), device=device, dtype=np.float32).data
    out = erfc(x)
    assert out.shape == (2, 3, 4) and out.dtype == np.float32
    expected = [math.erfc(v) for v in np.linspace(-3, 3, 24)]
    np.testing.assert_allclose(minidl.backend.to_numpy(out).ravel(), expected, rtol=1e-6)
