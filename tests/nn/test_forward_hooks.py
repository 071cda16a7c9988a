"""Forward pre-hooks and forward hooks on modules, as PyTorch's: what they see, what their return
values replace, order (prepend), removal, kwargs, and the same behaviour as torch on a twin network."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.models import resnet20


def _net():
    rng = np.random.default_rng(0)
    return nn.Sequential(nn.Linear(4, 3, rng=rng), nn.ReLU(), nn.Linear(3, 2, rng=rng))


def test_forward_hook_sees_inputs_and_output_and_can_replace_the_output():
    net, seen = _net(), []
    x = minidl.tensor(np.ones((5, 4), np.float32))
    handle = net[0].register_forward_hook(lambda m, args, out: seen.append((m, args, out)))
    y = net(x)
    [(module, args, out)] = seen
    assert module is net[0] and args[0] is x and out.shape == (5, 3)
    np.testing.assert_array_equal(out.numpy(), net[0].forward(x).numpy())
    handle.remove()
    net[1].register_forward_hook(lambda m, args, out: out * 0)   # replaces ReLU's output
    assert np.all(net(x).numpy() == net[2].bias.numpy()) and not np.all(y.numpy() == net[2].bias.numpy())
    assert len(seen) == 1                                              # removed: not called again


def test_pre_hook_replaces_inputs_single_value_or_tuple_and_gradients_flow_through():
    layer = nn.Linear(2, 1, bias=False, rng=np.random.default_rng(1))
    layer.register_forward_pre_hook(lambda m, args: args[0] * 2)              # one value: wrapped in a tuple
    x = minidl.tensor(np.ones((1, 2), np.float32), requires_grad=True)
    layer(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * layer.weight.numpy())
    np.testing.assert_allclose(layer.weight.grad.numpy(), [[2.0, 2.0]])
    layer.register_forward_pre_hook(lambda m, args: (args[0] + 1,))
    np.testing.assert_allclose(layer(x).numpy(), (2 * 1 + 1) * layer.weight.numpy().sum(axis=1, keepdims=True))


def test_order_prepend_and_kwargs():
    calls = []
    layer = nn.Identity()
    layer.register_forward_hook(lambda m, a, o: calls.append("second"))
    layer.register_forward_hook(lambda m, a, o: calls.append("first"), prepend=True)
    layer.register_forward_hook(lambda m, a, kw, o: calls.append(("kwargs", kw)), with_kwargs=True)
    layer.register_forward_pre_hook(lambda m, a, kw: ((a[0] + 1,), kw), with_kwargs=True)
    out = layer(minidl.tensor(np.zeros(2)))
    assert calls == ["first", "second", ("kwargs", {})] and np.all(out.numpy() == 1)


def test_hooks_on_a_resnet_read_inner_activations_without_changing_results():
    model = resnet20(seed=2).eval()
    x = minidl.tensor(np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32))
    with minidl.no_grad():
        plain = model(x).numpy()
        features = {}
        handles = [getattr(model, name).register_forward_hook(lambda m, a, o, name=name: features.update({name: o}))
                   for name in ("layer1", "layer2", "layer3")]
        hooked = model(x).numpy()
    np.testing.assert_array_equal(hooked, plain)
    assert [features[k].shape for k in ("layer1", "layer2", "layer3")] == [(2, 16, 32, 32), (2, 32, 16, 16),
                                                                           (2, 64, 8, 8)]
    for h in handles:
        h.remove()
    assert "_forward_hooks" in model.layer1.__dict__ and model.layer1._forward_hooks == []
    assert list(model.state_dict()) == list(resnet20().state_dict())   # hooks are not state


def test_same_as_pytorch_on_a_twin():
    torch = pytest.importorskip("torch")
    ours = _net()
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).double()
    theirs.load_state_dict({k: torch.tensor(v.astype(np.float64)) for k, v in ours.state_dict().items()})
    ours.double()
    for net in (ours, theirs):
        net[0].register_forward_pre_hook(lambda m, args: (args[0] * 3,))
        net[0].register_forward_hook(lambda m, args, out: out - 0.5)
        net[2].register_forward_hook(lambda m, args, out: None)
    x = np.random.default_rng(4).standard_normal((3, 4))
    np.testing.assert_allclose(ours(minidl.tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-12)


def test_bad_hooks_are_refused_clearly():
    layer = nn.ReLU()
    with pytest.raises(ValueError, match="ReLU.register_forward_hook: hook must be callable"):
        layer.register_forward_hook("not a function")
    with pytest.raises(ValueError, match="always_call=True is not supported"):
        layer.register_forward_hook(print, always_call=True)
    layer.register_forward_pre_hook(lambda m, a, kw: "oops", with_kwargs=True)
    with pytest.raises(ValueError, match=r"must return None or \(args, kwargs\)"):
        layer(minidl.tensor(np.zeros(2)))
