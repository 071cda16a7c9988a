"""``minidl train --weights``: start from a checkpoint, a .safetensors or a PyTorch .pth; fine-tune on a folder.

Runs are in-process (``main``), tiny cifar AlexNets on the CIFAR fixture or a folder of
PNGs. That a run starts from the file is seen by training it at a learning rate of 1e-9
for one step: its parameters come out as the file's, to float32 rounding.
"""
import numpy as np
import pytest

from support.cifar_fixture import write_cifar10
from support.runs import final
from minidl.checkpoint import load_checkpoint
from minidl.cli import train as cli
from minidl.data import imagenet
from minidl.models import AlexNet
from minidl.weights import save_safetensors

WIDTHS = "8,8,8,8,8,16,16"
FROZEN = ["--lr", "1e-9", "--momentum", "0", "--weight-decay", "0", "--schedule", "constant", "--no-nesterov"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_per_batch=4, n_test=4)   # 20 training images, 4 test
    return root


def _args(data, out, *extra, dataset=()):
    return ["--variant", "cifar", "--widths", WIDTHS, "--data-dir", str(data), "--out", str(out), "--epochs", "1",
            "--batch-size", "8", "--limit-train", "8", "--device", "cpu", "--no-progress", "--no-plots", *dataset,
            *([] if dataset else ["--val-size", "4"]), *extra]


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _params(model_state, names):
    return {key: model_state[key] for key in names}


def _trained_from(source: dict, out, skip=()):
    """Every parameter of the run in ``out`` equals ``source``'s (a 1e-9 step away), but for ``skip``."""
    state = final(out)[0]["model"]
    keys = [key for key in state if not key.endswith(("running_mean", "running_var")) and key not in skip]
    for key in keys:
        np.testing.assert_allclose(state[key], source[key], rtol=1e-5, atol=1e-7, err_msg=key)
    return state


def _source_model(seed=7, num_classes=10):
    return AlexNet(num_classes, variant="cifar", widths=[int(w) for w in WIDTHS.split(",")], seed=seed)


@pytest.fixture(scope="module")
def checkpoint_run(data_dir, tmp_path_factory):
    """A 1-step training run: the source of the checkpoint tests."""
    out = tmp_path_factory.mktemp("source") / "run"
    assert cli.main(_args(data_dir, out, "--seed", "3")) == 0
    return out


def _torch_file(path, state, wrap):
    torch = pytest.importorskip("torch")
    tensors = {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in state.items()}
    if wrap:   # a training script's checkpoint, saved from a DataParallel model
        tensors = {"state_dict": {f"module.{key}": value for key, value in tensors.items()}, "epoch": 3}
    torch.save(tensors, path)


@pytest.mark.parametrize("kind", ["checkpoint", "safetensors", "pth", "pth_checkpoint"])
def test_a_run_starts_from_the_weights(kind, checkpoint_run, data_dir, tmp_path, capsys):
    if kind == "checkpoint":
        path, source = checkpoint_run / "checkpoint.npz", load_checkpoint(checkpoint_run / "checkpoint.npz")["model"]
    else:
        model = _source_model()
        source = model.state_dict()
        if kind == "safetensors":
            path = save_safetensors(model, tmp_path / "w.safetensors")
        else:
            path = tmp_path / "w.pth"
            _torch_file(path, source, wrap=kind == "pth_checkpoint")
    code, out, err = _run(_args(data_dir, tmp_path / "run", "--weights", path, *FROZEN), capsys)
    assert code == 0, err
    assert f"weights: starting from {path}" in out
    _trained_from(source, tmp_path / "run")
    assert final(tmp_path / "run")[1]["settings"]["weights"] == str(path)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    pytest.importorskip("PIL")
    from support.folder_fixture import write_image_folder
    root = tmp_path_factory.mktemp("photos")
    write_image_folder(root, {"bee": 5, "cow": 5, "owl": 5}, size=(40, 30))
    return root


FOLDER = ["--dataset", "folder", "--val-fraction", "0.2", "--test-fraction", "0.2", "--workers", "1",
          "--batch-size", "3", "--limit-train", "3"]


def test_fine_tuning_on_a_folder_replaces_the_classifier_and_resumes_without_the_file(photos, checkpoint_run,
                                                                                     tmp_path, capsys):
    weights = tmp_path / "cifar.npz"
    weights.write_bytes((checkpoint_run / "checkpoint.npz").read_bytes())
    source = load_checkpoint(weights)["model"]
    out = tmp_path / "run"
    code, text, err = _run(_args(photos, out, "--weights", weights, *FROZEN, dataset=FOLDER), capsys)
    assert code == 0, err
    assert f"the classifier fc8 of {weights} has 10 classes, this run 3: it starts fresh" in text
    state = _trained_from(source, out, skip=("fc8.weight", "fc8.bias"))
    assert state["fc8.weight"].shape == (3, 16) and state["fc8.bias"].shape == (3,)
    fresh = AlexNet(3, variant="cifar", widths=[int(w) for w in WIDTHS.split(",")]).state_dict()  # the run's seed 0
    np.testing.assert_allclose(state["fc8.weight"], fresh["fc8.weight"], rtol=1e-5, atol=1e-7)
    settings = final(out)[1]["settings"]
    assert settings["weights"] == str(weights) and settings["class_names"] == ["bee", "cow", "owl"]
    assert settings["mean"] != list(imagenet.MEAN)   # no published statistics for this model: measured
    # a resume continues from its checkpoint: the weights setting stays, the file is not read again
    weights.unlink()
    code, text, err = _run(["--out", out, "--data-dir", photos, "--resume", "--epochs", "2", "--no-progress",
                            "--no-plots", "--workers", "1"], capsys)
    assert code == 0, err
    assert f"weights: started from {weights}" in text and "resuming at epoch 2" in text
    assert final(out)[1]["settings"]["weights"] == str(weights)
    # and it keeps it: another --weights is a change of the run's settings
    code, text, err = _run(["--out", out, "--data-dir", photos, "--resume", "--weights", "other.pth"], capsys)
    assert code == 1 and f"--weights other.pth (the run has {weights})" in err


def test_a_mismatch_outside_the_classifier_is_one_line_naming_key_and_shapes(data_dir, tmp_path, capsys):
    other = AlexNet(10, variant="cifar", widths=[8, 8, 8, 8, 8, 32, 16])   # fc6 has 32 units, the run's 16
    path = save_safetensors(other, tmp_path / "other.safetensors")
    code, out, err = _run(_args(data_dir, tmp_path / "run", "--weights", path), capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0] == (f"minidl train: error: --weights: {path} does not fit AlexNet variant 'cifar': fc6.weight is "
                        "(32, 128) in the file but (16, 128) in the model")
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("directory", "is a directory; give a weights file (.npz, .safetensors or .pth)"),
    ("another_model", "does not fit AlexNet variant 'cifar': the model's conv1.bias, conv2.weight, conv2.bias ... "
                      "(31 in all) not in the file; the file's "),
])
def test_unusable_weights_files(case, message, data_dir, tmp_path, capsys):
    path = tmp_path / "w.safetensors"
    if case == "directory":
        path.mkdir()
    if case == "another_model":
        from minidl.models import resnet20
        save_safetensors(resnet20(), path)
    code, out, err = _run(_args(data_dir, tmp_path / "run", "--weights", path), capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and message in err, err
    if case == "another_model":
        assert err.strip().endswith("(92 in all) not in the model")   # ResNet-20's keys (a stem conv and bn shared)


def test_folder_runs_from_imagenet_weights_default_to_imagenets_statistics():
    parse = cli.build_parser().parse_args

    def settings(*flags):
        return cli.resolve_settings(parse(["--dataset", "folder", "--data-dir", "x", *flags]), None)
    for model in (["--model", "resnet18"], ["--model", "resnet34"], ["--variant", "torchvision"]):
        chosen = settings(*model, "--weights", "w.pth")
        assert (chosen["mean"], chosen["std"]) == (list(imagenet.MEAN), list(imagenet.STD)), model
        assert settings(*model)["mean"] is None   # from scratch: measured on the folder
        assert settings(*model, "--weights", "w.pth", "--normalize", "image")["mean"] is None
        assert settings(*model, "--weights", "w.pth", "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2")["mean"] == \
            [0.5, 0.5, 0.5]
    assert settings("--model", "resnet20", "--weights", "w.npz")["mean"] is None   # no published statistics
    cifar = cli.resolve_settings(parse(["--model", "resnet18", "--weights", "w.pth"]), None)
    assert cifar["preprocess"] == "standardize" and "mean" not in cifar   # CIFAR-10 keeps per-image standardisation
