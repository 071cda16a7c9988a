"""bench_models.py and its parts at tiny sizes: the whole run end to end, the ratios, the yardstick, the breakdown.

The end-to-end runs start every child process the real benchmark starts (frameworks,
memory, GEMM peak, breakdown) on batches of 2 with one timed round; PyTorch and ONNX
Runtime parts are checked where they are installed and skipped cleanly where not.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import minidl
import minidl.functional as F
from minidl import nn

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_models  # noqa: E402
import breakdown  # noqa: E402
import frameworks  # noqa: E402
import report  # noqa: E402
import yardstick  # noqa: E402

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch not installed (optional 'bench' extra)")


def _run(tmp_path, *argv):
    out = tmp_path / "models.json"
    args = bench_models.build_parser().parse_args(
        ["--batch-size", "2", "--iters", "1", "--warmup", "0", "--gemm-size", "64", "--gemm-iters", "1",
         "--breakdown-steps", "1", "--top", "3", "--json", str(out)] + list(argv))
    payload = bench_models.run(args)
    return payload, json.loads(out.read_text())


# The AlexNet run leaves out what the ResNet run covers (memory, GEMM peak, breakdown), to keep the suite fast.
@pytest.mark.parametrize("argv, full", [(["--model", "alexnet", "--variant", "cifar", "--skip-memory", "--gemm-size",
                                          "0", "--breakdown-steps", "0"], False),
                                        (["--model", "resnet20"], True)])
def test_bench_models_runs_end_to_end(tmp_path, capsys, argv, full):
    payload, saved = _run(tmp_path, *argv, "--against", "torch,onnxruntime")
    expected = ["minidl", "minidl_fused"] + (["torch"] if HAS_TORCH else []) + (["onnxruntime"] if HAS_ORT else [])
    assert sorted(saved["speed"]) == sorted(expected)
    for fw in expected:
        s = saved["speed"][fw]
        assert s["infer_images_per_s"] == pytest.approx(2 / np.median(s["infer_times_s"]))
        assert ("train_times_s" in s) == (fw in ("minidl", "torch"))
    assert np.isfinite(saved["speed"]["minidl"]["final_train_loss"])
    assert saved["input_shape"] == [3, 32, 32] and saved["num_classes"] == 10
    assert saved["fusion"]["plain"] and saved["fusion"]["fused"]
    if HAS_TORCH:
        assert saved["flops"]["train_per_image"] > 2 * saved["flops"]["infer_per_image"] > 0
        assert set(saved["ratios"]) >= {"minidl/torch", "minidl_fused/torch"}
    if HAS_ORT:
        assert saved["ratios"]["minidl_fused/onnxruntime"]["infer"]["of_medians"] == pytest.approx(
            saved["speed"]["minidl_fused"]["infer_images_per_s"] / saved["speed"]["onnxruntime"]["infer_images_per_s"])
    out = capsys.readouterr().out
    assert "speed ratios" in out or not HAS_TORCH
    if not full:
        assert not {"memory", "gemm_peak", "breakdown"} & set(saved)
        return
    assert sorted(saved["memory"]) == sorted(expected)
    assert saved["memory"]["minidl"]["train_peak_bytes"] > 0
    assert saved["memory"]["minidl_fused"]["infer_peak_bytes"] > 0
    assert "train_peak_bytes" not in saved["memory"]["minidl_fused"]
    peaks = saved["gemm_peak"]
    assert peaks["numpy"]["size"] == 64 and peaks["peak_gflops"] == max(
        v["gflops"] for v in peaks.values() if isinstance(v, dict))
    if HAS_TORCH:
        fraction = saved["fraction_of_gemm_peak"]["minidl"]["train"]
        assert fraction == pytest.approx(saved["speed"]["minidl"]["train_images_per_s"]
                                         * saved["flops"]["train_per_image"] / (peaks["peak_gflops"] * 1e9))
    phases = saved["breakdown"]["phases"]
    assert sorted(phases) == ["infer", "infer_fused", "train"]
    train = phases["train"]
    assert sum(r["total"] for r in train["rows"]) == pytest.approx(train["step_s"])
    assert train["categories"]["gemm"] > 0 and train["categories"]["python"] > 0
    assert "where minidl's time goes" in out and "largest kernels" in out


def test_minidl_only_and_a_failed_export_skip_cleanly(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench_models, "export_onnx", lambda spec, path: "ValueError: no ONNX for this layer")
    _, saved = _run(tmp_path, "--model", "resnet20", "--against", "onnxruntime", "--skip-memory",
                    "--gemm-size", "0", "--breakdown-steps", "0")
    assert sorted(saved["speed"]) == ["minidl", "minidl_fused"]
    assert saved["ratios"] == {} and "gemm_peak" not in saved and "breakdown" not in saved
    if HAS_ORT:
        assert any("ValueError: no ONNX for this layer" in n for n in saved["notes"])
        assert "ONNX Runtime skipped" in capsys.readouterr().out


def test_ratios_come_from_the_same_rounds():
    speed = {"minidl": {"train_times_s": [1.0, 2.0, 4.0], "infer_times_s": [1.0, 1.0, 1.0]},
             "torch": {"train_times_s": [3.0, 2.0, 2.0], "infer_times_s": [2.0, 4.0, 1.0]},
             "onnxruntime": {"infer_times_s": [0.5, 0.5, 4.0]}}
    for s in speed.values():
        for phase in ("train", "infer"):
            if f"{phase}_times_s" in s:
                s[f"{phase}_images_per_s"] = 1 / np.median(s[f"{phase}_times_s"])
    ratios = bench_models.speed_ratios(speed)
    assert sorted(ratios) == ["minidl/onnxruntime", "minidl/torch"]
    assert ratios["minidl/torch"]["train"]["paired"] == pytest.approx(1.0)       # median of 3, 1, 0.5
    assert ratios["minidl/torch"]["train"]["of_medians"] == pytest.approx(1.0)   # 2 / 2
    assert ratios["minidl/torch"]["infer"]["paired"] == pytest.approx(2.0)       # median of 2, 4, 1
    assert ratios["minidl/onnxruntime"]["infer"]["paired"] == pytest.approx(0.5)


def test_against_rejects_unknown_frameworks():
    with pytest.raises(SystemExit):
        bench_models.build_parser().parse_args(["--against", "torch,tensorflow"])
    assert bench_models.build_parser().parse_args(["--against", "none"]).against == []


@needs_torch
@pytest.mark.parametrize("model, variant", [("resnet20", None), ("alexnet", "torchvision"), ("alexnet", "cifar")])
def test_torch_twins_compute_the_same_function(model, variant):
    import torch
    spec = frameworks.model_spec(model, variant or "seed")
    net = frameworks.build_minidl(spec).eval()
    twin = frameworks.build_torch_twin(spec, net).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, spec.input_size, spec.input_size)).astype(np.float32)
    with minidl.no_grad():
        expected = net(minidl.tensor(x)).numpy()
    with torch.no_grad():
        got = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@needs_torch
def test_dense_flops_of_resnet20_are_its_convolutions_and_dense_layer():
    from minidl import backend
    spec = frameworks.model_spec("resnet20")
    runner = frameworks.TorchRunner(spec, backend.parse_device("cpu"), *frameworks.make_batch(spec, 2))
    flops = runner.dense_flops()
    # multiply-adds per image: stem 32*32*16*27; stage 1: 6 convs 32*32*16*144; stages 2 and 3: a
    # strided first conv at half the input channels, then 5 convs, 2,359,296 each; fc 64*10
    macs = 32 * 32 * 16 * 27 + 6 * 2_359_296 + 2 * (1_179_648 + 5 * 2_359_296) + 640
    assert flops["infer_per_image"] == 2 * macs
    # backward: weight and input gradients of every layer, except the stem's input gradient
    assert flops["train_per_image"] == 3 * 2 * macs - 2 * 32 * 32 * 16 * 27


def test_gemm_peak_and_fractions():
    result = yardstick.gemm_peak("numpy", size=32, iters=3, warmup=1)
    assert result["gflops"] == pytest.approx(2 * 32 ** 3 / np.median(result["times_s"]) / 1e9)
    assert yardstick.gemm_peak("minidl", size=32, iters=1, warmup=0)["gflops"] > 0
    speed = {"minidl": {"train_images_per_s": 100.0, "infer_images_per_s": 400.0}, "onnxruntime":
             {"infer_images_per_s": 800.0}}
    got = yardstick.fractions(speed, {"train_per_image": 3e9, "infer_per_image": 1e9}, 600.0)
    assert got == {"minidl": {"train": pytest.approx(0.5), "infer": pytest.approx(400 / 600)},
                   "onnxruntime": {"infer": pytest.approx(800 / 600)}}


def _small_step(model, x, labels, optimizer):
    optimizer.zero_grad()
    loss = F.softmax_cross_entropy(model(x), labels)
    loss.backward()
    optimizer.step()


def test_breakdown_rows_add_up_and_attribute_by_category():
    from minidl.optim import SGD
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, rng=rng), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1, rng=rng), nn.ReLU(), nn.Flatten(),
                          nn.Linear(16 * 8 * 8, 10, rng=rng))
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = minidl.tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
    labels = rng.integers(0, 10, 4)
    matmul = np.matmul
    result = breakdown.profile_phase(lambda: _small_step(model, x, labels, optimizer), model, optimizer, 2)
    assert np.matmul is matmul and nn.Module.__dict__["__call__"].__name__ == "__call__"   # patches undone
    rows = {(r["layer"], r["pass"]): r for r in result["rows"]}
    assert sum(r["total"] for r in result["rows"]) == pytest.approx(result["step_s"])
    assert sum(result["categories"].values()) == pytest.approx(result["step_s"])
    for name in ("0", "3", "6"):   # the products of the convolutions and the dense layer
        assert rows[(name, "forward")]["gemm"] > 0 and rows[(name, "backward")]["gemm"] > 0
    assert rows[("0", "forward")]["transforms"] > 0                       # im2col / Winograd copies
    bn = rows[("1", "forward")]
    assert bn["elementwise"] > 0 and bn["gemm"] == bn["transforms"] == 0
    assert rows[("optimizer step", "step")]["elementwise"] > 0
    assert rows[("(autograd backward walk)", "backward")]["python"] > 0
    assert rows[("5", "forward")]["gemm"] == 0                             # flatten: a copy at most
    ops = {o["op"].split(" ")[0] for o in result["ops"]}
    assert {"Conv2d", "BatchNormReLU", "ReLU", "Linear", "SGD"} <= ops   # layers 1 and 2 run as one op (forward_chain)
    text = report.breakdown({"steps": 2, "phases": {"train": result}}, top=3)
    assert "train step" in text and "GEMM" in text


def test_breakdown_splits_a_parallel_region_by_thread_seconds():
    call = breakdown._KernelCall()
    call.region_s, call.item_s = 1.0, 4.0                # 2 threads busy for the whole second
    call.items["gemm"], call.items["transforms"] = 3.0, 0.0
    call.serial["transforms"] = 0.25
    split = call.split(1.5, "transforms")
    assert split["gemm"] == pytest.approx(0.75)          # 3 of the 4 thread-seconds
    assert split["transforms"] == pytest.approx(0.75)    # 0.25 serial + the 0.5 left of W
    assert sum(split.values()) == pytest.approx(1.5)
