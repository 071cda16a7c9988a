"""F.interpolate and nn.Upsample: against PyTorch forward and backward for every mode, size and
scale rule, finite differences, the matrices' meaning, float32, and clear errors."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.nn as nn
from minidl.functional.interpolation import interpolation_matrix
from minidl.gradcheck import check_gradients

from support.devices import DEVICES

CASES = [
    dict(size=(10, 14)), dict(size=(3, 4)), dict(size=6), dict(scale_factor=2), dict(scale_factor=1.7),
    dict(scale_factor=(0.6, 2.3)), dict(size=(9, 5), mode="nearest-exact"), dict(scale_factor=1.5, mode="nearest-exact"),
    dict(size=(11, 4), mode="bilinear"), dict(size=(11, 4), mode="bilinear", align_corners=True),
    dict(scale_factor=2.5, mode="bilinear"), dict(scale_factor=0.5, mode="bilinear", align_corners=True),
    dict(scale_factor=1.3, mode="bilinear", recompute_scale_factor=True), dict(size=(1, 1), mode="bilinear",
                                                                               align_corners=True),
    dict(size=(1, 3), mode="bilinear"), dict(size=(2, 3), mode="area"), dict(size=(5, 7)), dict(size=(5, 7), mode="bilinear"),
]


@pytest.mark.parametrize("kwargs", CASES, ids=[str(c) for c in CASES])
def test_matches_pytorch_forward_and_backward(kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 7))
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.interpolate(tx, **kwargs)
    gy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(gy))
    mx = minidl.tensor(x, requires_grad=True)
    my = F.interpolate(mx, **kwargs)
    my.backward(gy)
    assert my.shape == tuple(ty.shape)
    np.testing.assert_allclose(my.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode, align", [("nearest", None), ("bilinear", False), ("bilinear", True)])
def test_gradients_match_finite_differences(device, mode, align):
    x = minidl.tensor(np.random.default_rng(1).standard_normal((1, 2, 3, 4)), requires_grad=True, device=device)
    check_gradients(lambda t: F.interpolate(t, size=(5, 3), mode=mode, align_corners=align), [x])


def test_what_the_matrices_mean():
    np.testing.assert_array_equal(interpolation_matrix(4, 2, "nearest", False), [[1, 0], [1, 0], [0, 1], [0, 1]])
    np.testing.assert_allclose(interpolation_matrix(3, 2, "bilinear", True), [[1, 0], [0.5, 0.5], [0, 1]])
    # centres aligned: output 0 of 4 sits at input -0.25, clamped to 0; output 1 at 0.25
    np.testing.assert_allclose(interpolation_matrix(4, 2, "bilinear", False)[:2], [[1, 0], [0.75, 0.25]])
    for mode in ("nearest", "nearest-exact", "bilinear"):
        np.testing.assert_allclose(interpolation_matrix(7, 5, mode, False).sum(axis=1), 1)   # weights add to 1
    x = minidl.tensor(np.random.default_rng(2).standard_normal((1, 1, 4, 4)).astype(np.float32))
    y = F.interpolate(x, scale_factor=2, mode="bilinear")
    assert y.dtype == np.float32 and y.shape == (1, 1, 8, 8)
    np.testing.assert_array_equal(F.interpolate(x, size=(4, 4), mode="bilinear").numpy(), x.numpy())


def test_upsample_layers_match_pytorch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 5)).astype(np.float32)
    pairs = [(nn.Upsample(scale_factor=2), torch.nn.Upsample(scale_factor=2)),
             (nn.Upsample(size=(3, 7), mode="bilinear"), torch.nn.Upsample(size=(3, 7), mode="bilinear")),
             (nn.UpsamplingNearest2d(size=6), torch.nn.UpsamplingNearest2d(size=6)),
             (nn.UpsamplingBilinear2d(scale_factor=1.5), torch.nn.UpsamplingBilinear2d(scale_factor=1.5))]
    for mine, theirs in pairs:
        assert repr(mine) == repr(theirs) and mine.state_dict() == {}
        ours = mine(minidl.tensor(x))
        np.testing.assert_allclose(ours.numpy(), theirs(torch.tensor(x)).numpy(), rtol=1e-5, atol=1e-6)
        assert mine.shape_info(x.shape[1:])[0] == ours.shape[1:]


@pytest.mark.parametrize("kwargs, match", [
    (dict(size=3, mode="bicubic"), "interpolate: mode must be one of"),
    (dict(size=3, mode="nearest", align_corners=True), "align_corners can only be set with mode 'bilinear'"),
    (dict(), "give exactly one of size and scale_factor"),
    (dict(size=3, scale_factor=2), "give exactly one of size and scale_factor"),
    (dict(scale_factor=-1), "scale_factor must be positive"),
    (dict(scale_factor=0.1), r"the output size must be at least 1 x 1, got \(0, 0\)"),
    (dict(size=(2, 3, 4)), "size must be a number or a pair"),
    (dict(size=3, antialias=True), "antialias=True is not supported"),
])
def test_bad_arguments_are_refused_naming_interpolate(kwargs, match):
    with pytest.raises(ValueError, match=match):
        F.interpolate(minidl.tensor(np.ones((1, 1, 4, 4))), **kwargs)
    with pytest.raises(ValueError, match=r"interpolate: expected input \(N, C, H, W\)"):
        F.interpolate(minidl.tensor(np.ones((4, 4))), size=2)
