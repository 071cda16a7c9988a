"""Smoke tests of benchmarks/: every benchmark function runs at trivially small sizes.

They keep the benchmark code from rotting (the real runs take minutes) and check
the numbers it is built on: the PyTorch AlexNet is the same function as minidl's,
parity on cpu-vs-cpu is exact, throughput is batch / median time, and the data
subset reads back as the source's first images. PyTorch parts skip without torch.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minidl.data import load_cifar10
from minidl.models import AlexNet

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_alexnet  # noqa: E402
import bench_kernels  # noqa: E402
import parity  # noqa: E402
import prepare_gpu_data  # noqa: E402
from support.cifar_fixture import write_cifar10  # noqa: E402

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch not installed (optional 'bench' extra)")


@needs_torch
def test_torch_alexnet_computes_the_same_function_as_minidl():
    import torch
    import minidl
    from torch_alexnet import TorchAlexNet, copy_minidl_weights

    model = AlexNet(variant="cifar", seed=3).eval()
    twin = TorchAlexNet(variant="cifar").eval()
    assert [n for n, _ in model.named_children()] == [n for n, _ in twin.named_children()]
    copy_minidl_weights(twin, model)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with minidl.no_grad():
        expected = model(minidl.tensor(x)).numpy()
    with torch.no_grad():
        got = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@needs_torch
def test_torch_seed_alexnet_has_the_specified_layers():
    from torch_alexnet import PaddedConv2d, TorchAlexNet

    twin = TorchAlexNet(variant="seed")
    assert sum(p.numel() for p in twin.parameters()) == 56_909_898
    assert isinstance(twin.conv1, PaddedConv2d) and twin.conv1.pad == (3, 4, 3, 4)
    assert twin.conv1.stride == (4, 4) and twin.conv1.padding == (0, 0)
    assert (twin.bn1.eps, twin.bn1.momentum) == (1e-3, 0.01)
    assert [twin.conv2.groups, twin.conv3.groups, twin.conv4.groups, twin.conv5.groups] == [2, 1, 2, 2]
    assert twin.conv2.padding == (2, 2) and twin.fc6.in_features == 9216


@pytest.mark.parametrize("with_torch", [False, pytest.param(True, marks=needs_torch)])
def test_bench_alexnet_runs_and_reports(tmp_path, with_torch):
    out = tmp_path / "alexnet.json"
    argv = ["--variant", "cifar", "--batch-size", "2", "--warmup", "0", "--iters", "2", "--per-layer",
            "--per-layer-iters", "1", "--skip-memory", "--threads", "0", "--json", str(out)]
    payload = bench_alexnet.run(bench_alexnet.build_parser().parse_args(argv + ([] if with_torch else
                                                                                 ["--skip-torch"])))
    saved = json.loads(out.read_text())
    frameworks = ["minidl", "torch"] if with_torch else ["minidl"]
    assert sorted(saved["speed"]) == frameworks
    for fw in frameworks:
        s = saved["speed"][fw]
        assert len(s["train_times_s"]) == 2
        assert s["train_images_per_s"] == pytest.approx(2 / np.median(s["train_times_s"]))
        assert s["infer_images_per_s"] == pytest.approx(2 / np.median(s["infer_times_s"]))
        assert np.isfinite(s["final_train_loss"])
    layers = [r["layer"] for r in payload["per_layer"]]
    assert layers == [n for n, _ in AlexNet(variant="cifar").named_children()] + ["loss", "sgd step"]
    assert all(r["minidl_fwd_s"] > 0 for r in payload["per_layer"])
    if with_torch:
        ratio = saved["ratio_minidl_over_torch"]["train"]
        assert ratio == pytest.approx(saved["speed"]["minidl"]["train_images_per_s"]
                                      / saved["speed"]["torch"]["train_images_per_s"])
        m, t = saved["speed"]["minidl"]["train_times_s"], saved["speed"]["torch"]["train_times_s"]
        assert saved["paired_ratio_minidl_over_torch"]["train"] == pytest.approx(
            np.median([b / a for a, b in zip(m, t)]))
        assert all(r["torch_bwd_s"] > 0 for r in payload["per_layer"][:-1])
        assert "lost ms" in bench_alexnet.per_layer_table(payload["per_layer"], True)


def test_bench_alexnet_memory_child_reports_peaks():
    cmd = [sys.executable, str(BENCH / "bench_alexnet.py"), "--memory-child", "minidl", "--variant", "cifar",
           "--batch-size", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    params_bytes = 4 * sum(p.data.size for p in AlexNet(variant="cifar").parameters())
    # training holds at least weights, gradients and momentum buffers (first touch aside)
    assert result["train_peak_bytes"] >= 2 * params_bytes
    assert result["infer_peak_bytes"] >= result["setup_bytes"] * 0.9 > 0


@pytest.mark.parametrize("with_torch", [False, pytest.param(True, marks=needs_torch)])
def test_bench_kernels_runs_at_batch_one(tmp_path, with_torch):
    argv = ["--batch-size", "1", "--iters", "1", "--warmup", "0", "--peak-size", "64",
            "--only", "conv1,conv4,pool5,bn2,relu3", "--threads", "0", "--json", str(tmp_path / "k.json")]
    payload = bench_kernels.run(bench_kernels.build_parser().parse_args(argv + ([] if with_torch else
                                                                                ["--skip-torch"])))
    convs = {r["op"]: r for r in payload["convs"]}
    assert sorted(convs) == ["conv1", "conv4"]
    # FLOPs of conv4 at batch 1: 2 * 13*13 outputs * 384 filters * 192*3*3 taps
    assert convs["conv4"]["flops_fwd"] == 2 * 13 * 13 * 384 * 192 * 9
    assert convs["conv4"]["flops_bwd"] == 2 * convs["conv4"]["flops_fwd"]
    assert convs["conv1"]["flops_bwd"] == convs["conv1"]["flops_fwd"]  # no input gradient for conv1
    for r in payload["convs"]:
        assert r["roofline_fwd"] == pytest.approx(r["gemm_fwd_s"] / r["minidl_fwd_s"])
        assert ("torch_fwd_s" in r) == with_torch
    assert [r["op"] for r in payload["memory_bound"]] == ["pool5", "bn2", "relu3"]
    assert all(r["bandwidth_fwd"] > 0 and r["copy_gbs"] > 0 for r in payload["memory_bound"])


def test_bench_kernels_cifar_shows_winograd_against_im2col(tmp_path):
    argv = ["--variant", "cifar", "--batch-size", "2", "--iters", "1", "--warmup", "0", "--peak-size", "0",
            "--only", "conv1,conv3", "--skip-torch", "--threads", "0", "--json", str(tmp_path / "k.json")]
    rows = {r["op"]: r for r in bench_kernels.run(bench_kernels.build_parser().parse_args(argv))["convs"]}
    assert rows["conv1"]["algorithm"] == "im2col" and "speedup_over_im2col_fwd" not in rows["conv1"]
    assert rows["conv3"]["algorithm"] == "winograd_4x4"
    assert rows["conv3"]["speedup_over_im2col_fwd"] == pytest.approx(rows["conv3"]["im2col_fwd_s"]
                                                                     / rows["conv3"]["minidl_fwd_s"])
    assert rows["conv3"]["x"] == (2, 64, 8, 8)


def test_set_threads_limits_numpy_blas():
    import common
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_info

    text = common.set_threads(1)
    try:
        assert "numpy BLAS 1" in text
        assert all(info["num_threads"] == 1 for info in threadpool_info() if info["user_api"] == "blas")
    finally:
        common._LIMITS.pop().restore_original_limits()


def test_bench_kernels_rejects_unknown_names():
    with pytest.raises(SystemExit, match="conv9"):
        bench_kernels.run(bench_kernels.build_parser().parse_args(["--only", "conv9", "--skip-torch"]))


def test_parity_cpu_against_cpu_is_exact(tmp_path, capsys):
    assert parity.main(["--device", "cpu", "--json", str(tmp_path / "p.json")]) == 0
    rows = json.loads((tmp_path / "p.json").read_text())["rows"]
    assert len(rows) == 2 * len(parity.KERNELS)
    assert all(r[2] == 0.0 and r[-1] == "ok" for r in rows)


def test_parity_flags_a_broken_kernel(monkeypatch, capsys):
    calls = []

    def unstable(x):  # a different answer on every call, like a device kernel with a bug
        calls.append(1)
        return x * float(len(calls))
    monkeypatch.setattr(parity, "KERNELS", {"unstable": (unstable, [(2, 3)])})
    assert parity.main(["--device", "cpu"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_prepare_gpu_data_writes_a_loadable_prefix(tmp_path):
    fx = write_cifar10(tmp_path / "src", n_per_batch=6, n_test=5)
    size = prepare_gpu_data.prepare(fx.root, tmp_path / "out", train_per_batch=4, test=3)
    assert size > 0
    data = load_cifar10(data_dir=tmp_path / "out", download=False, val_size=2)
    keep = np.concatenate([np.arange(i * 6, i * 6 + 4) for i in range(5)])  # first 4 of each batch
    np.testing.assert_array_equal(np.concatenate([data.val_images, data.train_images]), fx.train_images[keep])
    np.testing.assert_array_equal(np.concatenate([data.val_labels, data.train_labels]), fx.train_labels[keep])
    np.testing.assert_array_equal(data.test_images, fx.test_images[:3])
    assert data.label_names == fx.label_names
    with pytest.raises(ValueError, match="max-mb"):
        prepare_gpu_data.prepare(fx.root, tmp_path / "big", train_per_batch=6, test=5, max_mb=0.01)


class _Payload:
    """Unpickling this would create a file: the proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_prepare_gpu_data_never_runs_code_from_a_batch_file(tmp_path, capsys):
    import pickle

    fx = write_cifar10(tmp_path / "src", n_per_batch=6, n_test=5)
    marker = tmp_path / "ran"
    hostile = {b"data": np.zeros((6, 3072), np.uint8), b"labels": [0] * 6, b"batch_label": _Payload(marker)}
    (fx.root / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(hostile, protocol=4))
    code = prepare_gpu_data.main(["--data-dir", str(fx.root), "--out", str(tmp_path / "out"),
                                 "--train-per-batch", "4", "--test", "3"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and not marker.exists()
    assert len(err.splitlines()) == 1 and "data_batch_3" in err and "unexpected object" in err


def test_gpu_check_script_parses():
    assert subprocess.run(["bash", "-n", str(BENCH / "gpu_check.sh")]).returncode == 0


def test_gpu_check_script_has_no_stop_at_first_failure():
    """One device run must show every failure: pytest runs without -x, and the env step checks the GPU libraries."""
    text = (BENCH / "gpu_check.sh").read_text()
    pytest_line = next(line for line in text.splitlines() if line.startswith("step pytest"))
    assert " -x" not in pytest_line and "--exitfirst" not in pytest_line
    assert "set -e" not in text
    assert "benchmarks/gpu_env.py --device" in text


def test_gpu_env_on_cpu_prints_versions(capsys):
    import gpu_env
    assert gpu_env.main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "numpy" in out and "no GPU libraries to check" in out


def _fake_gpu(monkeypatch, tmp_path):
    """A fake CuPy (tests/support/fake_cupy.py) whose raw kernels run through the g++ emulation."""
    from support.cuda_emulation import Emulator

    from support import fake_cupy
    from minidl import backend
    if not Emulator.available():
        pytest.skip("g++ is not on PATH")
    fake = fake_cupy.install(monkeypatch)
    monkeypatch.setattr(backend, "raw_kernel", Emulator(tmp_path).kernel)
    return fake


def test_gpu_env_checks_nvrtc_and_cublas(monkeypatch, tmp_path, capsys):
    import gpu_env
    fake = _fake_gpu(monkeypatch, tmp_path)
    assert gpu_env.main(["--device", "cuda:1"]) == 0
    out = capsys.readouterr().out
    assert "NVRTC: compiled and ran minidl_centered_affine" in out and "cuBLAS: float32" in out
    assert not fake.cross_device


def test_gpu_env_names_each_broken_library(monkeypatch, tmp_path, capsys):
    import gpu_env
    from minidl import backend
    fake = _fake_gpu(monkeypatch, tmp_path)

    def no_nvrtc(source, name, options=()):
        raise RuntimeError("nvrtc: libnvrtc.so.12 not found")

    monkeypatch.setattr(backend, "raw_kernel", no_nvrtc)
    monkeypatch.setattr(fake.ndarray, "__matmul__", lambda a, b: np.zeros((a.shape[0], b.shape[1]), np.float32))
    assert gpu_env.main(["--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert "NVRTC check failed on cuda:0: RuntimeError: nvrtc: libnvrtc.so.12 not found" in err
    assert "cuBLAS check failed on cuda:0" in err


def test_alternating_rounds_time_a_call_after_a_pause_and_a_lead_in():
    # The case timed is in a steady state: after a pause (the other framework's spinning
    # threads gone quiet), untimed calls of the same case for `lead_in` seconds (at least
    # one), then the timed one.
    import time
    import common
    calls = []

    def case(name):
        def run():
            calls.append((name, time.perf_counter()))
            time.sleep(0.004 if name == "a" else 0.001)
        return run

    times = common.time_alternating([("a", case("a")), ("b", case("b"))], warmup=1, iters=2, settle=0.03,
                                    lead_in=0.01)
    names = "".join(name for name, _ in calls)
    assert names.startswith("ab")
    rounds = names[2:]
    # per round: a's lead-in (>= 10 ms of 4 ms calls: 3) and timed call, then b's (>= 10 of 1 ms: ~10 and more)
    a_runs = [len(run) for run in rounds.replace("b", " ").split()]
    b_runs = [len(run) for run in rounds.replace("a", " ").split()]
    assert a_runs == [4, 4] and all(n >= 8 for n in b_runs) and len(b_runs) == 2
    assert [len(v) for v in times.values()] == [2, 2] and all(t >= 0.004 for t in times["a"])
    starts = {k: t for k, (name, t) in enumerate(calls)}
    a_first = [k for k in range(2, len(calls)) if calls[k][0] == "a" and calls[k - 1][0] != "a"]
    assert all(starts[k] - starts[k - 1] >= 0.03 for k in a_first)   # the pause before a's calls
    once = common.time_alternating([("c", lambda: time.sleep(0.002))], warmup=0, iters=1, settle=0, lead_in=0)
    assert len(once["c"]) == 1
    assert common.SETTLE_S >= 0.03 and common.LEAD_IN_S >= 0.05
