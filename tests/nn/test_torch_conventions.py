"""nn with PyTorch's signatures in hand: containers, Module's methods and the layers' options, against torch."""
from collections import OrderedDict

import numpy as np
import pytest

import minidl
import minidl.functional
import minidl.nn as nn

torch = pytest.importorskip("torch")


def _copy_weights(mine, theirs):
    theirs.load_state_dict({k: torch.tensor(v) for k, v in mine.state_dict().items()}, strict=False)


def test_containers_name_their_modules_as_torch_does():
    def block(lib):
        return lib.Sequential(lib.Linear(3, 4), lib.ReLU(), lib.Linear(4, 2))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([block(nn), block(nn)])
            self.heads = nn.ModuleDict({"a": nn.Linear(2, 1), "b": nn.Linear(2, 3)})

    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([block(torch.nn), block(torch.nn)])
            self.heads = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 1), "b": torch.nn.Linear(2, 3)})

    assert list(Net().state_dict()) == list(TorchNet().state_dict())
    net = Net()
    assert len(net.blocks) == 2 and net.blocks[-1] is list(net.blocks)[1]
    assert list(net.heads.keys()) == ["a", "b"] and "a" in net.heads and net.heads["b"].out_features == 3
    net.heads["c"] = nn.Linear(2, 5)
    assert net.heads.pop("a").out_features == 1 and list(net.heads) == ["b", "c"]
    with pytest.raises(KeyError, match="'train' is already an attribute"):
        net.heads["train"] = nn.Linear(1, 1)     # would hide Module.train
    with pytest.raises(KeyError, match="no module 'z'"):
        net.heads["z"]
    with pytest.raises(TypeError, match="not a Module"):
        net.blocks.append(3)


def test_sequential_slices_appends_inserts_and_deletes_like_torch():
    named = OrderedDict([("conv", nn.Conv2d(3, 4, 3)), ("relu", nn.ReLU()), ("pool", nn.MaxPool2d(2))])
    seq = nn.Sequential(named)
    assert list(seq.state_dict()) == ["conv.weight", "conv.bias"]
    head = seq[:1]
    assert isinstance(head, nn.Sequential) and list(head.state_dict()) == ["conv.weight", "conv.bias"]
    x = minidl.tensor(np.random.default_rng(0).standard_normal((1, 3, 6, 6)).astype(np.float32))
    np.testing.assert_array_equal(head(x).numpy(), seq.conv(x).numpy())

    mine = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    theirs = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    for seq_ in (mine, theirs):
        lib = nn if seq_ is mine else torch.nn
        seq_.append(lib.Linear(2, 3))
        seq_.insert(1, lib.Identity())
        del seq_[0]
    assert list(mine.state_dict()) == list(theirs.state_dict()) == ["2.weight", "2.bias"]
    assert [type(m).__name__ for m in mine] == [type(m).__name__ for m in theirs]


def test_module_methods_follow_torch():
    def make(lib):
        return lib.Sequential(lib.Linear(2, 3), lib.Sequential(lib.Linear(3, 3), lib.ReLU()))

    mine, theirs = make(nn), make(torch.nn)
    order, torch_order = [], []
    mine.apply(lambda m: order.append(type(m).__name__))
    theirs.apply(lambda m: torch_order.append(type(m).__name__))
    assert order == torch_order
    assert [n for n, _ in mine.named_parameters(prefix="net")] == \
        [n for n, _ in theirs.named_parameters(prefix="net")]
    assert list(mine.parameters(recurse=False)) == [] and len(list(mine[1].parameters(recurse=True))) == 2
    assert list(mine.state_dict(prefix="m.")) == list(theirs.state_dict(prefix="m."))
    assert mine.get_submodule("1.0") is mine[1][0]
    with pytest.raises(AttributeError, match="no module '1.5'"):
        mine.get_submodule("1.5")

    mine.requires_grad_(False)
    assert not any(p.requires_grad for p in mine.parameters())
    mine.requires_grad_()
    y = mine(minidl.tensor(np.ones((1, 2), np.float32)))
    y.sum().backward()
    mine.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.numpy().any() for p in mine.parameters())
    mine.zero_grad()
    assert all(p.grad is None for p in mine.parameters())

    assert mine.double() is mine and all(p.dtype == np.float64 for p in mine.parameters())
    mine.to(np.float32)
    assert all(p.dtype == np.float32 for p in mine.parameters())
    mine.add_module("extra", nn.Linear(3, 1))
    assert "extra.weight" in mine.state_dict()
    mine.register_buffer("scale", minidl.tensor([2.0]))
    assert mine.state_dict()["scale"].tolist() == [2.0]
    mine.register_buffer("cache", np.ones(3), persistent=False)
    theirs.register_buffer("scale", torch.tensor([2.0]))
    theirs.add_module("extra", torch.nn.Linear(3, 1))
    theirs.register_buffer("cache", torch.ones(3), persistent=False)
    assert list(mine.state_dict()) == list(theirs.state_dict())       # the transient buffer is not saved
    assert mine.double().cache.dtype == np.float64                     # but it moves with the module
    mine.load_state_dict(mine.state_dict())


def test_layer_constructors_take_torchs_arguments():
    assert nn.ReLU(inplace=True).inplace and nn.ReLU(True).inplace and not nn.ReLU().inplace
    drop = nn.Dropout(1.0, True)     # PyTorch's (p, inplace); p = 1 zeroes everything
    y = drop(minidl.tensor(np.ones((2, 3), np.float32)))
    assert not y.numpy().any()
    with pytest.raises(ValueError, match="padding_mode 'reflect' is not supported"):
        nn.Conv2d(3, 4, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match=r"Linear: feature counts must be ints >= 1, got 3.0 and 4"):
        nn.Linear(3.0, 4)
    with pytest.raises(ValueError, match=r"Conv2d: in_channels, out_channels and groups must be ints >= 1"):
        nn.Conv2d(3, 8.0, 3)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator, got False .* inplace"):
        minidl.functional.dropout(minidl.tensor(np.ones(3)), 0.5, True, False)


@pytest.mark.parametrize("start, end, shape", [(1, -1, (2, 48)), (2, 3, (2, 3, 16)), (0, 1, (6, 4, 4))])
def test_flatten_ranges(start, end, shape):
    x = np.arange(96.0).reshape(2, 3, 4, 4)
    got = nn.Flatten(start, end)(minidl.tensor(x))
    want = torch.nn.Flatten(start, end)(torch.tensor(x))
    assert got.shape == tuple(want.shape) == shape
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    if start > 0:
        assert nn.Flatten(start, end).shape_info((3, 4, 4))[0] == shape[1:]


@pytest.mark.parametrize("kwargs", [dict(kernel_size=3, stride=2, ceil_mode=True),
                                    dict(kernel_size=2, stride=1, padding=1, dilation=2),
                                    dict(kernel_size=3, stride=2, padding=1, dilation=(1, 2), ceil_mode=True)])
def test_max_pool_layer_options_match_torch(kwargs):
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 8))
    mine, theirs = nn.MaxPool2d(**kwargs), torch.nn.MaxPool2d(**kwargs)
    got, want = mine(minidl.tensor(x)), theirs(torch.tensor(x))
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert mine.shape_info((3, 9, 8))[0] == tuple(want.shape[1:])
    values, indices = nn.MaxPool2d(**kwargs, return_indices=True)(minidl.tensor(x))
    _, torch_indices = torch.nn.MaxPool2d(**kwargs, return_indices=True)(torch.tensor(x))
    np.testing.assert_array_equal(indices.numpy(), torch_indices.numpy())


def test_dilated_conv_layer_matches_torch_and_stays_unfused():
    mine = nn.Sequential(nn.Conv2d(3, 4, 3, padding=2, dilation=2), nn.BatchNorm2d(4), nn.ReLU())
    theirs = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=2, dilation=2), torch.nn.BatchNorm2d(4),
                                 torch.nn.ReLU()).double()
    mine.to(dtype=np.float64)
    _copy_weights(mine, theirs)
    mine.eval(), theirs.eval()
    x = np.random.default_rng(2).standard_normal((2, 3, 7, 7))
    want = theirs(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(mine(minidl.tensor(x)).numpy(), want, rtol=1e-10, atol=1e-12)
    assert mine[0].shape_info((3, 7, 7))[0] == want.shape[1:]
    fused = nn.fuse_for_inference(mine)
    with minidl.no_grad():
        np.testing.assert_allclose(fused(minidl.tensor(x)).numpy(), want, rtol=1e-10, atol=1e-12)


def test_batch_norm_1d_takes_sequences_like_torch():
    x = np.random.default_rng(3).standard_normal((4, 3, 5))
    mine, theirs = nn.BatchNorm1d(3).to(dtype=np.float64), torch.nn.BatchNorm1d(3).double()
    np.testing.assert_allclose(mine(minidl.tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mine.running_var, theirs.running_var.numpy(), rtol=1e-12)
    mine.eval(), theirs.eval()
    np.testing.assert_allclose(mine(minidl.tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)


def test_init_functions_take_torchs_arguments_in_torchs_order():
    import inspect
    from minidl.nn import init
    for name in ("normal_", "uniform_", "kaiming_normal_", "kaiming_uniform_", "xavier_uniform_", "xavier_normal_",
                 "constant_", "zeros_", "ones_"):
        ours = [p for p in inspect.signature(getattr(init, name)).parameters.values()
                if p.kind is p.POSITIONAL_OR_KEYWORD]
        theirs = [p for p in inspect.signature(getattr(torch.nn.init, name)).parameters.values()
                  if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "generator"]   # minidl: keyword only
        assert [p.name for p in ours][1:] == [p.name for p in theirs][1:], name
        assert [p.default for p in ours][1:] == [p.default for p in theirs][1:], name
    for args in [("linear",), ("relu",), ("tanh",), ("leaky_relu",), ("leaky_relu", 0.2), ("selu",)]:
        assert init.calculate_gain(*args) == pytest.approx(torch.nn.init.calculate_gain(*args))
    w = nn.Parameter(np.zeros((400, 300), np.float32))
    init.normal_(w, 0.0, 0.01, generator=np.random.default_rng(0))   # PyTorch's (mean, std), not swapped
    assert abs(w.numpy().std() - 0.01) < 5e-4 and abs(w.numpy().mean()) < 5e-4
    init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu", rng=np.random.default_rng(1))
    assert w.numpy().std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    init.kaiming_uniform_(w, a=np.sqrt(5), rng=np.random.default_rng(2))   # PyTorch's Linear default
    assert np.abs(w.numpy()).max() == pytest.approx(1 / np.sqrt(300), rel=0.01)
    init.xavier_normal_(w, gain=2.0, rng=np.random.default_rng(3))
    assert w.numpy().std() == pytest.approx(2 * np.sqrt(2 / 700), rel=0.02)
    with pytest.raises(ValueError, match="kaiming_normal_: expected an explicit numpy.random.Generator"):
        init.kaiming_normal_(w)


@pytest.mark.parametrize("norm_type, max_norm", [(2.0, 1.0), (2.0, 100.0), (float("inf"), 0.5), (1.0, 2.0)])
def test_gradient_clipping_matches_torch(norm_type, max_norm):
    rng = np.random.default_rng(6)
    grads = [rng.standard_normal(s) for s in [(3, 4), (4,), (2, 2, 2)]]
    mine = [nn.Parameter(np.zeros(g.shape)) for g in grads]
    theirs = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads]
    for p, t, g in zip(mine, theirs, grads):
        p.grad, t.grad = minidl.tensor(g.copy()), torch.tensor(g.copy())
    norm = nn.utils.clip_grad_norm_(mine, max_norm, norm_type)
    torch_norm = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert norm == pytest.approx(float(torch_norm), rel=1e-12)
    for p, t in zip(mine, theirs):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-12)
    nn.utils.clip_grad_value_(mine, 0.1)
    torch.nn.utils.clip_grad_value_(theirs, 0.1)
    for p, t in zip(mine, theirs):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-12)


def test_one_hot_concat_dim_and_one_cycle_by_epochs():
    labels = np.array([[0, 2], [1, 3]])
    np.testing.assert_array_equal(minidl.functional.one_hot(minidl.tensor(labels)).numpy(),
                                  torch.nn.functional.one_hot(torch.tensor(labels)).numpy())
    assert minidl.functional.one_hot(labels, 6).shape == (2, 2, 6)
    with pytest.raises(ValueError, match=r"one_hot: class indices must lie in \[0, 3\)"):
        minidl.functional.one_hot(labels, 3)
    a, b = minidl.ones(2, 1), minidl.zeros(2, 2)
    assert minidl.functional.concat([a, b], dim=1).shape == (2, 3)
    from minidl.optim import SGD, OneCycleLR
    by_epochs = OneCycleLR(SGD([nn.Parameter(np.ones(1))], lr=0.1), max_lr=0.1, epochs=3, steps_per_epoch=4)
    assert by_epochs.total_steps == 12
    with pytest.raises(ValueError, match="does not cycle momentum"):
        OneCycleLR(SGD([nn.Parameter(np.ones(1))], lr=0.1), max_lr=0.1, total_steps=5, cycle_momentum=True)
