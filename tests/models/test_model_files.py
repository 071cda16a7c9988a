"""The ResNets and torchvision's AlexNet outside minidl: PyTorch's files, safetensors, ONNX, checkpoints.

PyTorch's twins (tests/support/torch_models.py: torchvision's module names and forward,
rebuilt from torch.nn) write their state_dicts with ``torch.save``; minidl reads them
with ``minidl.weights.load_torch`` (no PyTorch involved), loads them strictly
(``num_batches_tracked`` accepted and skipped) and must give PyTorch's eval logits.
Batch-norm statistics are random, so eval mode is really tested. Tolerance: float32,
rtol 1e-4 against the largest logit.
"""
import numpy as np
import pytest

import minidl
from minidl import nn
from minidl.checkpoint import load_checkpoint, save_checkpoint
from minidl.models import AlexNet, resnet18, resnet20, resnet34
from minidl.weights import load_safetensors, load_torch, save_safetensors


def logits(model, x):
    with minidl.no_grad():
        return model.eval()(minidl.tensor(x)).numpy()


def assert_close(ours, theirs, rtol=1e-4):
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= rtol * np.abs(theirs).max(), np.abs(ours - theirs).max()


def randomise_batch_norm(model, rng):
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.weight.data[...] = rng.uniform(0.5, 1.5, c)
            module.bias.data[...] = rng.normal(0, 0.2, c)
            module.running_mean[...] = rng.normal(0, 0.5, c)
            module.running_var[...] = rng.uniform(0.5, 2.0, c)
    return model


# ---------------------------------------------------------------- PyTorch's files into minidl

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="the comparisons need PyTorch")


@pytest.fixture(scope="module")
def twins(torch):
    import support.torch_models as twins
    return twins


@pytest.mark.parametrize("arch, size", [("resnet20", 32), ("resnet18", 64)])
def test_torch_saved_resnet_loads_and_gives_torchs_logits(torch, twins, tmp_path, arch, size):
    torch.manual_seed(0)
    theirs = twins.randomise_batch_norm(twins.cifar_resnet(20) if arch == "resnet20" else twins.resnet18())
    torch.save(theirs.state_dict(), tmp_path / f"{arch}.pth")
    state = load_torch(tmp_path / f"{arch}.pth")
    assert any(key.endswith("num_batches_tracked") for key in state)
    ours = resnet20() if arch == "resnet20" else resnet18()
    result = ours.load_state_dict(state)                  # strict: every key, every shape
    assert result.missing_keys == [] and result.unexpected_keys == []
    expected = [k for k in theirs.state_dict() if not k.endswith("num_batches_tracked")]
    assert list(ours.state_dict()) == expected            # torchvision's keys in torchvision's order
    x = np.random.default_rng(1).normal(size=(3, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        reference = theirs.eval()(torch.from_numpy(x)).numpy()
    assert_close(logits(ours, x), reference)


def test_resnet34_keys_are_torchvisions(twins):
    theirs = {k: tuple(v.shape) for k, v in twins.resnet34().state_dict().items()
              if not k.endswith("num_batches_tracked")}
    ours = resnet34().state_dict()
    assert list(ours) == list(theirs) and all(ours[k].shape == shape for k, shape in theirs.items())


def test_torchvision_alexnet_weights_and_imagenet_meta(torch, twins, tmp_path):
    """torchvision's AlexNet file layout -> load_torch -> AlexNet(variant="torchvision"), then an image as meta says."""
    Image = pytest.importorskip("PIL.Image")
    from minidl.data import ResizeCenterCrop, decode_crop, normalize
    torch.manual_seed(0)
    theirs = twins.AlexNet()
    torch.save(theirs.state_dict(), tmp_path / "alexnet-owt-7be5be79.pth")
    ours = AlexNet(variant="torchvision", seed=5)
    ours.load_state_dict(load_torch(tmp_path / "alexnet-owt-7be5be79.pth"))
    # a photo, preprocessed as the model's meta says (torchvision's evaluation preset)
    meta = ours.meta
    assert (meta.dataset, meta.weights, meta.class_names[0]) == ("ImageNet-1k", "alexnet-owt-7be5be79.pth", "tench")
    pixels = np.random.default_rng(0).integers(0, 256, size=(300, 260, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    image = np.empty((1, 3, meta.input_size, meta.input_size), np.uint8)
    decode_crop(str(tmp_path / "photo.png"), ResizeCenterCrop(meta.input_size, meta.resize_size), None, image[0])
    x = np.asarray(normalize(image, meta.mean, meta.std))
    with torch.no_grad():
        reference = theirs.eval()(torch.from_numpy(x)).numpy()
    ours_logits = logits(ours, x)
    assert_close(ours_logits, reference)
    assert meta.class_names[int(ours_logits.argmax())] == meta.class_names[int(reference.argmax())]
    # any size of at least 63 runs, as in torchvision (the adaptive pool spreads 1x1 to 6x6)
    small = np.random.default_rng(2).normal(size=(2, 3, 63, 70)).astype(np.float32)
    with torch.no_grad():
        assert_close(logits(ours, small), theirs(torch.from_numpy(small)).numpy())


def test_minidl_files_load_into_torch(torch, twins, tmp_path):
    """safetensors written by minidl load strictly into the twins (PyTorch fills in its step counters)."""
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file, save_file
    rng = np.random.default_rng(0)
    for ours, theirs, size in ((randomise_batch_norm(resnet20(seed=2), rng), twins.cifar_resnet(20), 32),
                               (randomise_batch_norm(resnet18(seed=2), rng), twins.resnet18(), 48)):
        save_safetensors(ours, tmp_path / "ours.safetensors")
        theirs.load_state_dict(load_file(str(tmp_path / "ours.safetensors")))
        x = rng.normal(size=(2, 3, size, size)).astype(np.float32)
        with torch.no_grad():
            assert_close(theirs.eval()(torch.from_numpy(x)).numpy(), logits(ours, x))
        save_file(twins.randomise_batch_norm(theirs, seed=3).state_dict(), str(tmp_path / "theirs.safetensors"))
        back = resnet20(seed=9) if size == 32 else resnet18(seed=9)
        load_safetensors(back, tmp_path / "theirs.safetensors")
        with torch.no_grad():
            assert_close(logits(back, x), theirs(torch.from_numpy(x)).numpy())


# ---------------------------------------------------------------- num_batches_tracked

def test_num_batches_tracked_is_accepted_only_where_batch_norm_lives():
    model = resnet20()
    state = model.state_dict()
    extra = dict(state, **{"bn1.num_batches_tracked": np.array(7), "layer2.0.bn2.num_batches_tracked": np.array(3)})
    assert model.load_state_dict(extra) == ([], [])
    with pytest.raises(ValueError, match=r"unexpected keys: conv1\.num_batches_tracked"):
        model.load_state_dict(dict(state, **{"conv1.num_batches_tracked": np.array(1)}))
    with pytest.raises(ValueError, match=r"unexpected keys: bn1\.step"):
        model.load_state_dict(dict(state, **{"bn1.step": np.array(1)}))
    assert "bn1.num_batches_tracked" not in model.state_dict()


# ---------------------------------------------------------------- ONNX and checkpoints

@pytest.mark.parametrize("build, size", [(resnet20, 32), (resnet18, 40), (lambda: AlexNet(variant="torchvision"), 224)])
def test_onnx_export_runs_in_onnxruntime(tmp_path, build, size):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import minidl.onnx
    rng = np.random.default_rng(0)
    model = randomise_batch_norm(build(), rng)
    path = minidl.onnx.export(model, tmp_path / "model.onnx", (3, size, size))
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    if size != 224:
        assert {"Add", "BatchNormalization", "GlobalAveragePool", "Relu", "Conv", "Gemm"} <= ops
        assert ({"Slice", "Pad"} <= ops) == (size == 32)   # option A's shortcut; resnet18's is Conv + BN
    x = rng.normal(size=(2, 3, size, size)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [theirs] = session.run(None, {"input": x})
    assert_close(logits(model, x), theirs)


def test_checkpoint_round_trip_resumes_the_same_model(tmp_path):
    model = randomise_batch_norm(resnet20(seed=1), np.random.default_rng(0))
    save_checkpoint(tmp_path / "resnet20.npz", {"model": model.state_dict(), "arch": model.arch})
    held = load_checkpoint(tmp_path / "resnet20.npz")
    fresh = resnet20(seed=7)
    fresh.load_state_dict(held["model"])
    assert held["arch"] == "resnet20"
    x = np.random.default_rng(3).normal(size=(2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(logits(fresh, x), logits(model, x))


def test_meta_describes_data_and_preprocessing():
    from minidl.data import imagenet
    meta = resnet18().meta
    assert (meta.dataset, meta.input_size, meta.resize_size) == ("ImageNet-1k", 224, 256)
    assert (meta.mean, meta.std) == (imagenet.MEAN, imagenet.STD) and meta.class_names[281] == "tabby"
    assert meta.weights_url == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert resnet34().meta.weights == "resnet34-b627a593.pth"
    assert resnet18(num_classes=5).meta.class_names is None        # fine-tuning: names come from the data
    cifar = resnet20().meta
    assert (cifar.dataset, cifar.input_size, cifar.class_names[0], cifar.mean) == ("CIFAR-10", 32, "airplane", None)
    paper = AlexNet(variant="paper").meta
    assert (paper.input_size, paper.mean, paper.weights) == (227, None, None) and len(paper.class_names) == 1000
    assert AlexNet(variant="cifar").meta.class_names[-1] == "truck"
