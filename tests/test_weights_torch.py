"""minidl.weights.load_torch: PyTorch's torch.save files read without PyTorch and without trusting pickle.

Files made by the installed PyTorch are read back array for array (every dtype, views
into shared storages, Parameters, nested checkpoints, torchvision's key layouts); they
skip without PyTorch. Files written by hand (tests/support/torch_files.py) test the
happy path without PyTorch and every refusal: globals that would run code (a marker
file proves nothing ran), unknown callables, corrupt and truncated archives, the
legacy format, storages missing or too short.
"""
import collections
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

import minidl.torch_format
from minidl.weights import load_torch

from support.torch_files import (rewrite_archive, state_dict_pickle, tensor, text, write_archive,
                                 write_state_dict)


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="files made by PyTorch need PyTorch")


def _torch_arrays(state):
    """What load_torch should give for a dict of torch tensors: float32 for bfloat16, else the same dtype."""
    import torch
    return {k: (v.detach().float() if v.dtype == torch.bfloat16 else v.detach()).numpy() for k, v in state.items()}


def _assert_same(loaded, expected):
    assert list(loaded) == list(expected)
    for key, want in expected.items():
        got = loaded[key]
        assert isinstance(got, np.ndarray), key
        assert got.dtype == want.dtype and got.shape == want.shape, (key, got.dtype, want.dtype, got.shape, want.shape)
        np.testing.assert_array_equal(got, want, err_msg=key)


# ---------------------------------------------------------------- files made by PyTorch


def test_every_dtype_array_for_array(torch, tmp_path):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 4, generator=g, dtype=torch.float64) * 100
    state = collections.OrderedDict()
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                  torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128):
        state[str(dtype).removeprefix("torch.")] = base.to(dtype)
    state["uint16"] = base.abs().to(torch.int32).to(torch.uint16)  # PyTorch pickles it with _rebuild_tensor_v3
    state["scalar"] = torch.tensor(7)
    state["empty"] = torch.zeros(0, 3)
    torch.save(state, tmp_path / "dtypes.pth")

    loaded = load_torch(tmp_path / "dtypes.pth")
    assert isinstance(loaded, collections.OrderedDict)
    expected = _torch_arrays({k: v for k, v in state.items() if k != "uint16"})
    expected["uint16"] = state["uint16"].to(torch.int32).numpy().astype(np.uint16)
    expected = {k: expected[k] for k in state}
    _assert_same(loaded, expected)
    assert loaded["bfloat16"].dtype == np.float32  # documented: bfloat16 widens to float32 exactly


def test_views_with_offsets_and_strides_are_copied_out(torch, tmp_path):
    base = torch.arange(60, dtype=torch.float32)
    grid = base.view(6, 10)
    state = {"slice": base[5:17].view(3, 4), "transposed": grid.t(), "every_third": base[::3],
             "window": grid[1:4, 2:7], "broadcast": base[:3].expand(4, 3), "element": base[7],
             "channels_last": torch.arange(24.0).view(1, 2, 3, 4).contiguous(memory_format=torch.channels_last),
             "whole": base}
    torch.save(state, tmp_path / "views.pth")
    loaded = load_torch(tmp_path / "views.pth")
    _assert_same(loaded, _torch_arrays(state))
    for array in loaded.values():
        assert array.flags.c_contiguous and array.flags.owndata and array.flags.writeable
    loaded["whole"][:] = -1  # one storage in the file, independent arrays out
    assert loaded["slice"][0, 0] == 5 and loaded["transposed"][0, 1] == 10


def test_parameters_and_tensors_with_attributes(torch, tmp_path):
    tagged = torch.arange(4.0)
    tagged.note = "kept by PyTorch, dropped here"  # pickled through torch._tensor._rebuild_from_type_v2
    state = {"weight": torch.nn.Parameter(torch.ones(2, 3)), "frozen": torch.nn.Parameter(torch.zeros(2),
                                                                                           requires_grad=False),
             "tagged": tagged}
    torch.save(state, tmp_path / "params.pth")
    _assert_same(load_torch(tmp_path / "params.pth"), _torch_arrays(state))


def test_nested_checkpoint_and_key(torch, tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    checkpoint = {"epoch": 3, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "best": 0.5, "names": ["a", "b"], "pair": (1, "x"), "none": None}
    torch.save(checkpoint, tmp_path / "checkpoint.pth")

    held = load_torch(tmp_path / "checkpoint.pth")
    assert held["epoch"] == 3 and held["best"] == 0.5 and held["names"] == ["a", "b"] and held["pair"] == (1, "x")
    assert held["none"] is None
    momentum = held["optimizer"]["state"][0]["momentum_buffer"]
    np.testing.assert_array_equal(momentum, optimizer.state_dict()["state"][0]["momentum_buffer"].numpy())
    assert held["optimizer"]["param_groups"][0]["lr"] == 0.1

    state = load_torch(tmp_path / "checkpoint.pth", key="state_dict")
    _assert_same(state, _torch_arrays(model.state_dict()))
    assert state["1.num_batches_tracked"].dtype == np.int64 and state["1.num_batches_tracked"].shape == ()
    with pytest.raises(ValueError, match=r"holds no 'model' entry \(it holds 'epoch', 'state_dict'"):
        load_torch(tmp_path / "checkpoint.pth", key="model")


def _resnet_like(torch):
    """torchvision's resnet key layout (conv1, bn1, layer1.0.conv1, layer2.0.downsample.0, fc), tiny widths."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    net = nn.Module()
    net.conv1, net.bn1 = nn.Conv2d(3, 4, 7, 2, 3, bias=False), nn.BatchNorm2d(4)
    net.layer1 = nn.Sequential(Block(4, 4, 1), Block(4, 4, 1))
    net.layer2 = nn.Sequential(Block(4, 8, 2), Block(8, 8, 1))
    net.fc = nn.Linear(8, 10)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2)
            module.num_batches_tracked += 5
    return net


def _alexnet_like(torch):
    """torchvision's AlexNet key layout (features.0 ... classifier.6), tiny widths."""
    nn = torch.nn
    net = nn.Module()
    net.features = nn.Sequential(nn.Conv2d(3, 4, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
                                 nn.Conv2d(4, 6, 5, padding=2))
    net.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    net.classifier = nn.Sequential(nn.Dropout(), nn.Linear(216, 8), nn.ReLU(), nn.Dropout(), nn.Linear(8, 8),
                                   nn.ReLU(), nn.Linear(8, 10))
    return net


@pytest.mark.parametrize("build", [_resnet_like, _alexnet_like])
def test_torchvision_layouts_any_folder_name_no_byteorder_record(torch, tmp_path, build):
    torch.manual_seed(0)
    state = build(torch).state_dict()
    torch.save(state, tmp_path / "model.pth")
    expected = _torch_arrays(state)
    _assert_same(load_torch(tmp_path / "model.pth"), expected)
    assert "layer2.0.downsample.0.weight" in expected or "classifier.6.bias" in expected
    # torchvision's re-saved files (resnet18-f37072fd.pth, alexnet-owt-7be5be79.pth) predate the byteorder
    # record, and the top folder is whatever name the file had when saved
    old_style = rewrite_archive(tmp_path / "model.pth", tmp_path / "resnet18-f37072fd.pth",
                                folder="resnet18-f37072fd", drop={"byteorder", ".format_version",
                                                                  ".storage_alignment", ".data/serialization_id"})
    _assert_same(load_torch(old_style), expected)


def test_torch_legacy_format_refused(torch, tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=r"legacy \(pre-1\.6\) format.*re-save it"):
        load_torch(tmp_path / "legacy.pth")


def test_torch_file_with_a_storage_missing_or_short(torch, tmp_path):
    torch.save({"a": torch.ones(3), "b": torch.zeros(4, dtype=torch.float64)}, tmp_path / "ok.pth")
    rewrite_archive(tmp_path / "ok.pth", tmp_path / "missing.pth", drop={"data/1"})
    with pytest.raises(ValueError, match=r"missing\.pth has no storage file .*data/1"):
        load_torch(tmp_path / "missing.pth")
    rewrite_archive(tmp_path / "ok.pth", tmp_path / "short.pth", replace={"data/1": b"\0" * 31})
    with pytest.raises(ValueError, match=r"has 31 bytes in .*data/1, the pickle expects 32 \(4 x 8\)"):
        load_torch(tmp_path / "short.pth")


# ---------------------------------------------------------------- files written by hand (no PyTorch)


def test_hand_made_state_dict_without_torch(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"conv.weight": rng.normal(size=(2, 3, 3, 3)).astype(np.float32), "conv.bias": np.arange(2.0),
              "bn.num_batches_tracked": np.array(4, dtype=np.int64), "mask": np.array([True, False]),
              "half": rng.normal(size=5).astype(np.float16), "pixels": np.arange(6, dtype=np.uint8).reshape(2, 3)}
    write_state_dict(tmp_path / "plain.pth", arrays)
    _assert_same(load_torch(tmp_path / "plain.pth"), arrays)
    # big-endian files are converted to the machine's order
    write_state_dict(tmp_path / "big.pth", arrays, byteorder="big")
    loaded = load_torch(tmp_path / "big.pth")
    _assert_same(loaded, arrays)
    assert all(a.dtype.isnative for a in loaded.values())


def test_hand_made_views_bfloat16_and_device_location(tmp_path):
    bits = (np.arange(12, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)  # exact in bfloat16
    pickle_bytes = state_dict_pickle([
        ("window", tensor("0", "FloatStorage", 20, 6, (2, 3), (5, 1), location="cuda:0")),
        ("column", tensor("0", "FloatStorage", 20, 4, (4,), (5,))),
        ("bf16", tensor("1", "BFloat16Storage", 12, 0, (3, 4), (4, 1)))])
    write_archive(tmp_path / "views.pth", pickle_bytes,
                  {"0": np.arange(20, dtype="<f4").tobytes(), "1": bits.astype("<u2").tobytes()})
    loaded = load_torch(tmp_path / "views.pth")
    np.testing.assert_array_equal(loaded["window"], [[6, 7, 8], [11, 12, 13]])
    np.testing.assert_array_equal(loaded["column"], [4, 9, 14, 19])
    np.testing.assert_array_equal(loaded["bf16"], np.arange(12, dtype=np.float32).reshape(3, 4))
    assert loaded["bf16"].dtype == np.float32


def test_broadcast_views_may_not_blow_up(tmp_path):
    """One stored float, a (2**15, 2**15) view of it with zero strides: 4 GiB to copy out, refused."""
    write_archive(tmp_path / "blow.pth", state_dict_pickle([("w", tensor("0", "FloatStorage", 1, 0, (2**15, 2**15),
                                                                         (0, 0)))]), {"0": b"\0" * 4})
    with pytest.raises(ValueError, match=r"would copy out more than 1 GiB beyond what the file stores"):
        load_torch(tmp_path / "blow.pth")


def test_tensor_reaching_past_its_storage_refused(tmp_path):
    write_archive(tmp_path / "past.pth", state_dict_pickle([("w", tensor("0", "FloatStorage", 6, 2, (2, 3), (3, 1)))]),
                  {"0": np.zeros(6, "<f4").tobytes()})
    with pytest.raises(ValueError, match=r"reaching element 7 of storage '0', which holds 6"):
        load_torch(tmp_path / "past.pth")


def _attack(marker):
    """Payloads that run code under pickle.load, each creating ``marker`` if it runs."""
    cmd = f"touch {marker}".encode()
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()".encode()
    return {
        "os.system": (b"cos\nsystem\n(S'" + cmd + b"'\ntR.", "os.system"),
        "posix.system": (b"\x80\x02cposix\nsystem\n" + text(cmd.decode()) + b"\x85R.", "posix.system"),
        "builtins.eval": (b"\x80\x02cbuiltins\neval\n" + text(code.decode()) + b"\x85R.", "builtins.eval"),
        "subprocess": (b"\x80\x02csubprocess\ncheck_call\n(" + text("touch") + text(str(marker)) + b"l\x85R.",
                       "subprocess.check_call"),
        # protocol 4 STACK_GLOBAL, hidden inside a state_dict value
        "stack_global": (b"\x80\x04" + text("collections") + text("OrderedDict") + b"\x93)R(" + text("w")
                         + text("builtins") + text("exec") + b"\x93" + text(code.decode()) + b"\x85Ru.",
                         "builtins.exec"),
    }


@pytest.mark.parametrize("name", ["os.system", "posix.system", "builtins.eval", "subprocess", "stack_global"])
def test_code_running_pickles_are_refused_and_nothing_runs(tmp_path, name):
    live = tmp_path / "ran_under_plain_pickle"
    payload, _ = _attack(live)[name]
    if name != "posix.system" or os.name == "posix":  # the payloads are live: plain pickle runs them
        pickle.loads(payload)
        assert live.exists()
    marker = tmp_path / "ran_under_load_torch"
    payload, refused = _attack(marker)[name]
    write_archive(tmp_path / "evil.pth", payload, {})
    with pytest.raises(ValueError) as info:
        load_torch(tmp_path / "evil.pth")
    message = str(info.value)
    assert "\n" not in message and "evil.pth" in message and f"refuses the global {refused}" in message
    assert not marker.exists()


@pytest.mark.parametrize("payload, match", [
    (b"\x80\x02c__main__\nEvil\n)R.", r"refuses the global __main__\.Evil"),
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\n)R.", r"refuses the global numpy\.core\.multiarray\._reconstruct"),
    (b"\x80\x02ccollections\nCounter\n)R.", r"refuses the global collections\.Counter"),
    (b"\x80\x02ctorch.nn.modules.linear\nLinear\n)\x81.", r"refuses the global torch\.nn\.modules\.linear\.Linear"),
    (b"\x80\x02ctorch\nFloatStorage\n)R.", r"calls torch\.FloatStorage, which is a type"),
    (b"\x80\x02ctorch\nTensor\n)\x81.", r"NEWOBJ"),  # a class is never handed out, so NEWOBJ cannot build one
    (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}(" + text("__defaults__") + b"(tub.", r"pickle BUILD"),
    (b"\x80\x02ctorch\nfloat32\n.", r"holds torch\.float32 as a value"),
    (b"\x80\x02(" + text("storage") + text("not a class") + text("0") + text("cpu") + b"K\x01tQ.",
     r"expected a torch storage class"),
    (b"\x80\x02" + text("just a string") + b"Q.", r"persistent id 'just a string'"),
    (b"\x80\x02Nr\xff\xff\xff\x7f.", r"stores pickle memo entry 2147483647 in a 9-byte pickle"),  # no 16 GiB table
    (b"\x80\x02}(" + text("w") + b"ctorch._utils\n_rebuild_tensor_v2\n(" + text("x") + b"K\x00))tRu.",
     r"rebuilds a tensor from str"),
])
def test_unknown_callables_and_malformed_rebuilds_refused(tmp_path, payload, match):
    write_archive(tmp_path / "odd.pth", payload, {})
    with pytest.raises(ValueError, match=match) as info:
        load_torch(tmp_path / "odd.pth")
    assert "\n" not in str(info.value)


def test_truncated_and_corrupt_archives(tmp_path):
    write_state_dict(tmp_path / "ok.pth", {"w": np.arange(64, dtype=np.float32)})
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.pth starts like a zip archive .* truncated or corrupt"):
        load_torch(tmp_path / "cut.pth")
    start = data.index(np.arange(64, dtype=np.float32).tobytes())
    flipped = data[:start + 8] + bytes([data[start + 8] ^ 0xFF]) + data[start + 9:]
    (tmp_path / "flipped.pth").write_bytes(flipped)  # the zip's CRC catches it
    with pytest.raises(ValueError, match=r"flipped\.pth is a truncated or corrupt zip \(BadZipFile: Bad CRC-32"):
        load_torch(tmp_path / "flipped.pth")
    # a storage file shorter than the pickle says
    write_archive(tmp_path / "short.pth", state_dict_pickle([("w", tensor("0", "FloatStorage", 4, 0, (4,), (1,)))]),
                  {"0": b"\0" * 12})
    with pytest.raises(ValueError, match=r"has 12 bytes in archive/data/0, the pickle expects 16"):
        load_torch(tmp_path / "short.pth")
    write_archive(tmp_path / "missing.pth", state_dict_pickle([("w", tensor("7", "FloatStorage", 1, 0, (), ()))]), {})
    with pytest.raises(ValueError, match=r"has no storage file archive/data/7"):
        load_torch(tmp_path / "missing.pth")
    write_archive(tmp_path / "cut_pickle.pth", state_dict_pickle([])[:-3], {})
    with pytest.raises(ValueError, match=r"cut_pickle\.pth holds a data\.pkl that is not a state_dict pickle"):
        load_torch(tmp_path / "cut_pickle.pth")


def test_not_torch_save_files(tmp_path):
    cases = {"empty.pth": (b"", r"is empty"),
             "text.pth": (b"hello, not weights\n", r"is not a zip archive"),
             "bare.pkl": (pickle.dumps({"w": 1}, protocol=2), r"is a bare pickle"),
             "legacy.pth": (minidl.torch_format._LEGACY_HEAD + pickle.dumps(1001, protocol=2), r"legacy \(pre-1\.6\)")}
    for name, (data, match) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=match):
            load_torch(tmp_path / name)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("model/constants.pkl", b"")  # a TorchScript archive, say
    (tmp_path / "script.pt").write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match=r"holds 0 <folder>/data\.pkl records"):
        load_torch(tmp_path / "script.pt")
    write_archive(tmp_path / "order.pth", state_dict_pickle([]), {}, byteorder=b"middle")
    with pytest.raises(ValueError, match=r"has byteorder 'middle'"):
        load_torch(tmp_path / "order.pth")
    with pytest.raises(FileNotFoundError, match="load_torch"):
        load_torch(tmp_path / "absent.pth")


def test_build_cannot_touch_module_state(tmp_path):
    """BUILD on a handed-out global fails on a stand-in made for this load, never on module objects."""
    payload = b"\x80\x02ccollections\nOrderedDict\nN}(" + text("x") + b"K\x01u\x86b."  # BUILD (None, slotstate)
    write_archive(tmp_path / "build.pth", payload, {})
    with pytest.raises(ValueError, match="pickle BUILD"):
        load_torch(tmp_path / "build.pth")
    assert not hasattr(collections.OrderedDict, "x")
