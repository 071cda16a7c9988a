"""A copy of a factor-shared dense layer is the plain layer (what nn.fuse_for_inference and evaluation copy)."""
import copy

import numpy as np

import minidl
import minidl.nn as nn
from minidl.distributed.factors import FactorSharedLinear


class _Sharing:                       # stands in for the host's shared memory, which cannot be copied
    def __deepcopy__(self, memo):
        raise AssertionError("the sharing was copied")


def test_a_copy_is_a_plain_linear_with_copied_parameters_and_the_same_outputs():
    layer = nn.Linear(5, 3, rng=np.random.default_rng(0))
    shared = FactorSharedLinear.convert(layer, _Sharing(), 0)
    model = nn.Sequential(shared, nn.ReLU())
    copied = copy.deepcopy(model)
    plain = copied[0]
    assert type(plain) is nn.Linear
    assert plain.weight is not layer.weight and plain.bias is not layer.bias
    np.testing.assert_array_equal(plain.weight.data, layer.weight.data)
    assert list(copied.state_dict()) == list(model.state_dict())
    x = minidl.tensor(np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32))
    with minidl.no_grad():
        np.testing.assert_allclose(nn.fuse_for_inference(model)(x).numpy(), model.eval()(x).numpy(), rtol=1e-6)
