"""nn.Module machinery (registration, order, state dicts, modes, devices), layers and init."""
import json

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import minidl
import minidl.nn as nn
from minidl.nn import init

try:
    import torch
except ImportError:  # torch is an optional, test-only reference
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed (optional reference)")


class Block(nn.Module):
    """A child registered before the block's own parameter, to pin PyTorch's order."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(3, 2, rng=np.random.default_rng(1))
        self.scale = nn.Parameter(np.ones(2, np.float32))
        self.register_buffer("count", np.zeros(1, np.float32))

    def forward(self, x):
        return self.inner(x) * self.scale


def small_net(seed=0):
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, rng=rng), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 3, rng=rng))


# ---- registration and order ------------------------------------------------------

def test_named_parameters_follow_pytorch_order():
    outer = nn.Sequential(Block(), nn.Linear(2, 2))
    names = [name for name, _ in outer.named_parameters()]
    # Own parameters of each module first, then its children's, modules pre-order.
    assert names == ["0.scale", "0.inner.weight", "0.inner.bias", "1.weight", "1.bias"]
    assert [p.shape for p in outer.parameters()] == [(2,), (2, 3), (2,), (2, 2), (2,)]
    assert list(outer.state_dict()) == ["0.scale", "0.count", "0.inner.weight", "0.inner.bias",
                                        "1.weight", "1.bias"]
    assert [name for name, _ in outer.named_modules()] == ["", "0", "0.inner", "1"]
    assert [name for name, _ in outer.named_buffers()] == ["0.count"]


def test_shared_parameter_is_listed_once_and_reassignment_replaces():
    a = nn.Linear(2, 2)
    seq = nn.Sequential(a, a)
    assert len(list(seq.parameters())) == 2
    block = Block()
    block.scale = nn.Parameter(np.zeros(2, np.float32))  # re-registering keeps one entry
    assert [n for n, _ in block.named_parameters()].count("scale") == 1
    with pytest.raises(TypeError, match="scale is a parameter"):
        block.scale = np.zeros(2)


def test_parameter_requires_grad_and_assignment_before_init_is_an_error():
    p = nn.Parameter(np.zeros(3))
    assert p.requires_grad and isinstance(p, minidl.Tensor)

    class Broken(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(1))
    with pytest.raises(RuntimeError, match="super"):
        Broken()


def test_train_eval_propagate_to_every_descendant():
    net = nn.Sequential(Block(), small_net())
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_zero_grad_clears_every_gradient():
    net = small_net()
    x = minidl.tensor(np.random.default_rng(0).normal(size=(2, 2, 4, 4)).astype(np.float32))
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


# ---- state dicts -------------------------------------------------------------------

def test_state_dict_round_trip_reproduces_outputs():
    source, target = small_net(1), small_net(2)
    x = minidl.tensor(np.random.default_rng(3).normal(size=(2, 2, 4, 4)).astype(np.float32))
    source.train()
    source(x)  # moves the BN running statistics away from their initial values
    source.eval(), target.eval()
    state = source.state_dict()
    assert list(state) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                           "6.weight", "6.bias"]
    assert all(type(v) is np.ndarray for v in state.values())
    weight_object = target[0].weight
    result = target.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert target[0].weight is weight_object  # same Parameter, values copied in
    np.testing.assert_array_equal(target(x).numpy(), source(x).numpy())
    state["0.weight"][...] = 123.0  # a host copy: editing it leaves the model alone
    assert not np.any(source[0].weight.data == 123.0)


def test_load_state_dict_keeps_dtype_and_accepts_tensors():
    net = nn.Linear(2, 2)
    net.load_state_dict({"weight": np.ones((2, 2), np.float64), "bias": minidl.tensor(np.zeros(2))})
    assert net.weight.dtype == np.float32 and np.all(net.weight.data == 1.0)


def test_load_state_dict_strict_errors_name_keys_and_shapes():
    net = small_net()
    before = net.state_dict()
    bad = net.state_dict()
    del bad["1.running_var"]
    bad["extra.weight"] = np.zeros(3)
    bad["6.weight"] = np.zeros((3, 17), np.float32)
    bad["0.bias"] = np.full(4, 7.0, np.float32)
    with pytest.raises(ValueError) as info:
        net.load_state_dict(bad)
    message = str(info.value)
    assert "missing keys: 1.running_var" in message
    assert "unexpected keys: extra.weight" in message
    assert "6.weight: checkpoint (3, 17) vs model (3, 16)" in message
    # Nothing was copied: the valid "0.bias" entry was not applied either.
    np.testing.assert_array_equal(net[0].bias.data, before["0.bias"])
    del bad["6.weight"]
    result = net.load_state_dict(bad, strict=False)
    assert result.missing_keys == ["1.running_var", "6.weight"] and result.unexpected_keys == ["extra.weight"]
    np.testing.assert_array_equal(net[0].bias.data, np.full(4, 7.0))
    with pytest.raises(ValueError, match=r"6.weight: checkpoint \(3, 17\)"):
        net.load_state_dict({"6.weight": np.zeros((3, 17))}, strict=False)


def test_to_keeps_parameter_objects_and_casts(device):
    net = small_net()
    params = list(net.parameters())
    net.to(device, dtype=np.float64)
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]
    assert all(p.device == device and p.dtype == np.float64 for p in params)
    assert net[1].running_mean.dtype == np.float64
    assert minidl.backend.device_of(net[1].running_var) == device
    x = minidl.tensor(np.ones((1, 2, 4, 4)), device=device)
    net.eval()
    assert net(x).device == device
    state = net.state_dict()
    assert all(type(v) is np.ndarray for v in state.values())
    net.load_state_dict(small_net(5).state_dict())  # host values land on the device, as float64
    assert net[0].weight.device == device and net[0].weight.dtype == np.float64
    np.testing.assert_allclose(net[0].weight.numpy(), small_net(5)[0].weight.numpy())


# ---- layers -------------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("groups,padding,stride", [(1, 1, 1), (2, 0, 2), (2, "same", 2)])
def test_conv2d_layer_matches_torch(groups, padding, stride):
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=padding, groups=groups, rng=np.random.default_rng(0),
                     dtype=np.float64)
    x = np.random.default_rng(1).normal(size=(2, 4, 7, 7))
    y = conv(minidl.tensor(x)).numpy()
    pad = 1 if padding == "same" else padding  # 7 in, stride 2, k 3: TF pads 1 each side
    ref = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(conv.weight.numpy()),
                                     torch.tensor(conv.bias.numpy()), stride=stride, padding=pad, groups=groups)
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-10, atol=1e-10)


@needs_torch
def test_batchnorm2d_train_and_eval_match_torch():
    x = np.random.default_rng(2).normal(2.0, 3.0, size=(4, 3, 5, 5))
    ours = nn.BatchNorm2d(3, eps=1e-3, momentum=0.01).to(dtype=np.float64)
    ours.weight.data[...] = [1.0, 2.0, 0.5]
    ours.bias.data[...] = [0.0, -1.0, 3.0]
    ref = torch.nn.BatchNorm2d(3, eps=1e-3, momentum=0.01).double()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        ref.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    for _ in range(2):
        np.testing.assert_allclose(ours(minidl.tensor(x)).numpy(), ref(torch.tensor(x)).detach().numpy(),
                                   rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours.running_mean, ref.running_mean.numpy(), rtol=1e-9)
    np.testing.assert_allclose(ours.running_var, ref.running_var.numpy(), rtol=1e-9)
    ours.eval(), ref.eval()
    np.testing.assert_allclose(ours(minidl.tensor(x)).numpy(), ref(torch.tensor(x)).detach().numpy(), rtol=1e-7)


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding"):
        nn.Conv2d(3, 4, 3, padding="full")
    # The layers check with the kernels' own geometry (functional/_window.py), at construction.
    with pytest.raises(ValueError, match=r"Conv2d: kernel_size must be a positive int or a pair"):
        nn.Conv2d(3, 4, 0)
    with pytest.raises(ValueError, match=r"MaxPool2d: padding must be non-negative, got -1"):
        nn.MaxPool2d(3, 2, padding=-1)
    with pytest.raises(ValueError, match=r"Conv2d: kernel \(5, 5\) is larger than the padded input"):
        nn.Conv2d(3, 4, 5).shape_info((3, 4, 4))
    with pytest.raises(ValueError, match=r"expected input \(N, C, H, W\) with C=4"):
        nn.BatchNorm2d(4)(minidl.tensor(np.zeros((2, 3, 2, 2))))
    with pytest.raises(ValueError, match=r"expected input \(N, C\) or \(N, C, L\) with C=4"):
        nn.BatchNorm1d(4)(minidl.tensor(np.zeros((2, 4, 1, 1))))
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        nn.Dropout(1.5)


def test_dropout_uses_its_own_generator_and_state_round_trips():
    x = minidl.tensor(np.ones((200, 50), np.float32))
    drop = nn.Dropout(0.25, rng=np.random.default_rng(7))
    saved = json.loads(json.dumps(drop.rng.bit_generator.state))  # JSON-able, as checkpoints need
    first = drop(x).numpy()
    assert abs((first == 0).mean() - 0.25) < 0.02
    np.testing.assert_allclose(first[first != 0], 1 / 0.75)
    drop.rng.bit_generator.state = saved
    np.testing.assert_array_equal(drop(x).numpy(), first)
    drop.rng = np.random.default_rng(8)  # reseeding gives a different mask
    assert not np.array_equal(drop(x).numpy(), first)
    drop.eval()
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())


@settings(max_examples=25, deadline=None)
@given(size=st.integers(5, 12), kernel=st.integers(1, 4), stride=st.integers(1, 3),
       padding=st.sampled_from([0, 1, "same", "valid", ((0, 1), (2, 0))]), pool=st.booleans())
def test_shape_info_matches_the_kernels(size, kernel, stride, padding, pool):
    if pool and padding not in ("same", "valid"):  # pools need padding smaller than the window
        assume(max(np.ravel(padding)) < kernel)
    layer = (nn.MaxPool2d(kernel, stride, padding) if pool
             else nn.Conv2d(2, 4, kernel, stride=stride, padding=padding, groups=2))
    expected, formula = layer.shape_info((2, size, size + 1))
    actual = layer(minidl.tensor(np.random.default_rng(0).normal(size=(1, 2, size, size + 1)).astype(np.float32))).shape
    assert (1,) + expected == actual
    assert formula.endswith(f"= {expected[2]}")


def test_size_formula_text():
    conv = nn.Conv2d(3, 96, 11, stride=4, padding="same")
    assert conv.shape_info((3, 224, 224)) == ((96, 56, 56), "(224 + 7 - 11) / 4 + 1 = 56")
    assert nn.MaxPool2d(3, 2).shape_info((96, 56, 56))[1] == "floor((56 + 0 - 3) / 2) + 1 = 27"
    assert nn.Flatten().shape_info((256, 6, 6)) == ((9216,), "")


# ---- init -----------------------------------------------------------------------------

def test_fans_account_for_groups():
    assert init.compute_fans((256, 48, 5, 5), groups=2) == (48 * 25, 128 * 25)
    assert init.compute_fans((10, 30)) == (30, 10)
    with pytest.raises(ValueError, match="groups"):
        init.compute_fans((5, 2, 3, 3), groups=2)


@pytest.mark.parametrize("fn,shape,groups,expected_std", [
    (init.he_normal_, (64, 32, 5, 5), 2, np.sqrt(2 / (32 * 25))),
    (init.he_uniform_, (400, 300), 1, np.sqrt(2 / 300)),
    (init.glorot_uniform_, (64, 16, 3, 3), 4, np.sqrt(2 / (16 * 9 + 16 * 9))),
    (init.glorot_normal_, (300, 500), 1, np.sqrt(2 / 800)),
])
def test_init_statistics(fn, shape, groups, expected_std):
    p = nn.Parameter(np.zeros(shape, np.float32))
    fn(p, rng=np.random.default_rng(0), groups=groups)
    assert abs(p.numpy().mean()) < 0.03 * expected_std * 10
    assert p.numpy().std() == pytest.approx(expected_std, rel=0.03)
    assert p.dtype == np.float32


def test_normal_constant_and_explicit_rng():
    p = nn.Parameter(np.zeros((300, 300), np.float32))
    init.normal_(p, std=0.01, rng=np.random.default_rng(0))
    assert p.numpy().std() == pytest.approx(0.01, rel=0.02)
    q = nn.Parameter(np.zeros((300, 300), np.float32))
    init.normal_(q, std=0.01, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(p.numpy(), q.numpy())  # same seed, same weights
    init.constant_(q, 1.0)
    assert np.all(q.numpy() == 1.0)
    with pytest.raises(ValueError, match="explicit numpy.random.Generator"):
        init.he_normal_(q, rng=None)
