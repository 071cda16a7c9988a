"""minidl.weights: safetensors files that PyTorch reads and writes with the same keys.

The round trip goes through the PyTorch twin of minidl's AlexNet
(benchmarks/torch_alexnet.py: same layer names, same shapes): minidl's file loads
into it with ``safetensors.torch.load_file`` + a strict ``load_state_dict`` and
gives the same logits; PyTorch's own file (with its ``num_batches_tracked``
counters) loads back into minidl and gives PyTorch's logits.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

import minidl
from minidl import nn
from minidl.models import AlexNet
from minidl.weights import load_safetensors, read_safetensors, save_safetensors

pytest.importorskip("safetensors", reason="needs the safetensors extra")
torch = pytest.importorskip("torch", reason="the round trip needs PyTorch (the bench extra)")
from safetensors.torch import load_file, save_file  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from torch_alexnet import TorchAlexNet  # noqa: E402


def _randomise_bn(model, rng):
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.weight.data[...] = rng.uniform(0.5, 1.5, c)
            module.bias.data[...] = rng.normal(0, 0.2, c)
            module.running_mean[...] = rng.normal(0, 0.5, c)
            module.running_var[...] = rng.uniform(0.5, 2.0, c)
    return model


def _logits_minidl(model, x):
    with minidl.no_grad():
        return model.eval()(minidl.Tensor(x)).numpy()


def _logits_torch(model, x):
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("variant", ["cifar", "seed"])
def test_minidl_to_pytorch_and_back(tmp_path, variant):
    rng = np.random.default_rng(0)
    ours = _randomise_bn(AlexNet(variant=variant, seed=1), rng)
    s = ours.input_size
    x = rng.normal(size=(2, 3, s, s)).astype(np.float32)
    save_safetensors(ours, tmp_path / "minidl.safetensors")

    twin = TorchAlexNet(variant=variant)
    twin.load_state_dict(load_file(str(tmp_path / "minidl.safetensors")))  # strict: every key, every shape
    np.testing.assert_allclose(_logits_torch(twin, x), _logits_minidl(ours, x), rtol=1e-4, atol=1e-4)

    # PyTorch changes its weights and writes its own file, counters included
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(0.9).add_(0.01)
        for m in twin.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.add_(0.1)
                m.num_batches_tracked.fill_(7)
    save_file(twin.state_dict(), str(tmp_path / "torch.safetensors"))
    back = AlexNet(variant=variant, seed=2)
    result = load_safetensors(back, tmp_path / "torch.safetensors")
    assert result.missing_keys == [] and result.unexpected_keys == []
    expected = {k: v.numpy() for k, v in twin.state_dict().items() if not k.endswith("num_batches_tracked")}
    got = back.state_dict()
    assert list(got) == list(ours.state_dict()) and sorted(got) == sorted(expected)
    assert all(np.array_equal(got[k], expected[k]) for k in got)
    np.testing.assert_allclose(_logits_minidl(back, x), _logits_torch(twin, x), rtol=1e-4, atol=1e-4)


def test_minidl_round_trip_is_exact_and_keeps_metadata(tmp_path):
    model = _randomise_bn(AlexNet(variant="cifar", widths=(4, 4, 4, 4, 4, 8, 8)), np.random.default_rng(3))
    path = save_safetensors(model, tmp_path / "w.safetensors", metadata={"variant": "cifar"})
    state = read_safetensors(path)
    assert sorted(state) == sorted(model.state_dict())
    assert all(np.array_equal(state[k], v) and state[k].dtype == v.dtype for k, v in model.state_dict().items())
    from safetensors import safe_open
    with safe_open(str(path), framework="np") as f:
        assert f.metadata() == {"format": "pt", "producer": "minidl", "variant": "cifar"}
    other = AlexNet(variant="cifar", widths=(4, 4, 4, 4, 4, 8, 8), seed=9)
    load_safetensors(other, path)
    assert all(np.array_equal(a, b) for a, b in zip(other.state_dict().values(), model.state_dict().values()))
    with pytest.raises(ValueError, match="metadata must map str to str"):
        save_safetensors(model, tmp_path / "bad.safetensors", metadata={"epochs": 3})


def test_load_errors_name_the_problem(tmp_path):
    small = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    path = save_safetensors(small, tmp_path / "small.safetensors")
    with pytest.raises(ValueError, match=r"shape mismatches: 0.weight: checkpoint \(2, 3\) vs model \(4, 3\)"):
        load_safetensors(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), path)
    with pytest.raises(ValueError, match=r"missing keys: 2.weight, 2.bias"):
        load_safetensors(nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.Linear(2, 2)), path)
    # strict=False loads what fits and reports the rest; a foreign key is unexpected unless it is a BN counter
    save_file({"0.weight": torch.ones(2, 3), "1.num_batches_tracked": torch.tensor(5), "extra": torch.zeros(1)},
              str(tmp_path / "torch.safetensors"))
    target = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    result = load_safetensors(target, tmp_path / "torch.safetensors", strict=False)
    assert result.unexpected_keys == ["extra"] and "1.running_mean" in result.missing_keys
    assert (target[0].weight.numpy() == 1).all()
    with pytest.raises(ValueError, match="unexpected keys: extra"):
        load_safetensors(target, tmp_path / "torch.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00hello")
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        load_safetensors(target, tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_safetensors(target, tmp_path / "nothing.safetensors")


def test_without_the_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r"minidl\[safetensors\]"):
        save_safetensors(nn.Sequential(nn.ReLU()), tmp_path / "w.safetensors")
