"""Data parallelism: collectives, exactness against one process, the launcher CLI, failures.

Multi-process tests run real MPI jobs (``mpiexec -n 2`` on loopback) and skip, with
the reason, only where mpi4py or mpiexec is missing; ``.ci/run`` installs both. The
rest run in-process with a fake world.
"""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from support.cifar_fixture import write_cifar10
from support.mpi import MPIEXEC, mpi_env, needs_mpi
from minidl.checkpoint import load_checkpoint
import minidl.distributed.world as world_module
from minidl.distributed.launch import StartupError, agree
from minidl.distributed.world import DistributedError, World

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "mpi_scripts"
CLI = ROOT / "examples" / "alexnet_cifar10.py"


def _mpiexec(n, *args, timeout=120, **env):
    return subprocess.run([MPIEXEC, "-n", str(n), *args], capture_output=True, text=True, env=mpi_env(**env),
                          cwd=ROOT, timeout=timeout)


# ---- collectives and exactness (real MPI jobs) ---------------------------------------

@needs_mpi
def test_collectives_and_the_gradient_reducer_match_numpy_on_two_processes():
    done = _mpiexec(2, sys.executable, str(SCRIPTS / "collectives_check.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok 0" in done.stdout and "ok 1" in done.stdout


def _exactness_module():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import dp_exactness
    finally:
        sys.path.remove(str(SCRIPTS))
    return dp_exactness


@pytest.fixture(scope="module")
def exactness_runs(tmp_path_factory):
    """Every configuration of mpi_scripts/dp_exactness.py on 2 processes, in one MPI job."""
    out = tmp_path_factory.mktemp("exactness")
    done = _mpiexec(2, sys.executable, str(SCRIPTS / "dp_exactness.py"), str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def _worst_relative_error(got, reference):
    assert set(got.files) == set(reference) | {"metrics"}
    return max(float(np.max(np.abs(got[k] - reference[k])) / np.max(np.abs(reference[k]))) for k in reference)


@needs_mpi
def test_two_processes_train_exactly_like_one_in_float64(exactness_runs):
    script = _exactness_module()
    reference, metrics = script.train(None)  # one process, the global batch of 8

    def worst_relative_error(name):
        got = np.load(exactness_runs / f"{name}.npz")
        np.testing.assert_allclose(got["metrics"], metrics, rtol=1e-10) if name != "no_sync_bn" else None
        return _worst_relative_error(got, reference)

    assert set(script.CONFIGS) == {"sync_overlap", "sync_no_overlap", "no_sync_bn", "factors", "factors_no_overlap"}
    assert worst_relative_error("sync_overlap") < 1e-10       # buckets reduced during backward
    assert worst_relative_error("sync_no_overlap") < 1e-10    # all at the end
    assert worst_relative_error("factors") < 1e-10            # dense weights' gradients from shared factors
    assert worst_relative_error("factors_no_overlap") < 1e-10
    assert worst_relative_error("no_sync_bn") > 1e-3          # per-process statistics: another run


@needs_mpi
def test_a_process_without_rows_takes_part_and_contributes_nothing(exactness_runs):
    # Last batches of 1 image: one process gets none, in training (sync batch norm's sums,
    # the gradient buckets, the metric sums) and in validation; still the one-process run.
    script = _exactness_module()
    reference, metrics = script.train(None, short=True)
    for name in ("short_last_batch", "short_factors"):
        got = np.load(exactness_runs / f"{name}.npz")
        np.testing.assert_allclose(got["metrics"], metrics, rtol=1e-10, err_msg=name)
        assert _worst_relative_error(got, reference) < 1e-10, name


# ---- the world and start-up, in-process ------------------------------------------------

def test_without_a_launcher_the_world_is_one_process_and_mpi4py_stays_unimported():
    code = ("import sys; import minidl.distributed as d; w = d.init(); "
            "print(w.size, w.rank, d.is_main(), 'mpi4py' in sys.modules)")
    env = {k: v for k, v in mpi_env().items() if not k.startswith(("PMI_", "OMPI_", "PMIX_", "MV2_"))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.stdout.split() == ["1", "0", "True", "False"], done.stderr


def test_a_launcher_without_mpi4py_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(world_module, "_world", None)
    monkeypatch.setattr(world_module, "_mpi4py_available", lambda: False)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", "1")
    with pytest.raises(DistributedError, match=r"MPI launcher.*mpi4py is not installed.*\[distributed\]"):
        world_module.init()
    with pytest.raises(DistributedError, match="gpu_comm"):
        world_module.init(gpu_comm="gloo")


class _FakeWorld(World):
    """A world whose allgather returns prepared reports (what each rank would send)."""

    def __init__(self, others, **kwargs):
        super().__init__(**kwargs)
        self.others = others

    def allgather_object(self, obj):
        return [obj] + self.others


def test_agree_stops_every_process_with_the_first_failure_or_disagreement():
    agree(_FakeWorld([(None, {"seed": 0})], size=2), None, {"seed": 0})  # all well: no error
    with pytest.raises(StartupError, match="^rank 1: no data here$"):
        agree(_FakeWorld([("no data here", None)], size=2), None, {"seed": 0})
    with pytest.raises(StartupError, match="^bad flag$"):  # rank 0's own failure, unprefixed
        agree(_FakeWorld([("other", None)], size=2), "bad flag")
    with pytest.raises(StartupError, match="rank 2 disagrees with rank 0 on seed: 1 vs 0"):
        agree(_FakeWorld([(None, {"seed": 0}), (None, {"seed": 1})], size=3), None, {"seed": 0})


# ---- the command line under mpiexec ----------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_per_batch=16, n_test=12)  # 64 train + 16 validation, 12 test
    return root


def _args(data_dir, out, *extra):
    return ["--variant", "cifar", "--widths", "8,8,8,8,8,16,16", "--data-dir", str(data_dir), "--out", str(out),
            "--epochs", "3", "--batch-size", "8", "--val-size", "16", "--device", "cpu", "--checkpoint-every", "3",
            "--no-progress", "--no-plots", *extra]


def _history(out):
    with open(out / "history.csv") as f:
        return np.array([[float(row[k]) for k in ("lr", "train_loss", "train_acc", "val_loss", "val_acc",
                                                  "val_top5")] for row in csv.DictReader(f)])


# The float32 runs below compare 2 processes with 1 to the fast kernels' rounding: their sums
# over a batch are split-invariant by design (slice order, bias sums row by row). The
# references round as NumPy does, and on this 8-channel net an ulp can then move a
# max-pooling tie between ReLU zeros, which changes which pixel gets a gradient (measured:
# 2e-3 in the first epoch's loss). The references' data parallelism is held exact in
# float64 (test_two_processes_train_exactly_like_one_in_float64, any MINIDL_KERNELS).
FAST = {"MINIDL_KERNELS": "fast"}


@pytest.fixture(scope="module")
def one_process(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    done = subprocess.run([sys.executable, str(CLI), *_args(data_dir, out)], capture_output=True, text=True,
                          env=mpi_env(**FAST), cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return out


@needs_mpi
def test_two_processes_write_the_history_of_one(data_dir, one_process, tmp_path):
    out = tmp_path / "two"
    done = _mpiexec(2, sys.executable, str(CLI), *_args(data_dir, out), **FAST)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("test: loss") == 1 and "data parallel: 2 processes" in done.stdout  # rank 0 only
    assert done.stderr == ""
    np.testing.assert_allclose(_history(out), _history(one_process), rtol=1e-5, atol=1e-6)


@needs_mpi
def test_sigkill_of_one_rank_ends_the_run_and_one_process_resumes_it(data_dir, one_process, tmp_path):
    out = tmp_path / "two"
    # Every file write pauses (test hook): the run is slow enough to be killed mid-way.
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, str(CLI), *_args(data_dir, out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                            env=mpi_env(MINIDL_TEST_WRITE_DELAY="0.2", **FAST))
    try:
        deadline = time.monotonic() + 60
        while not (out / "checkpoint.npz").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        victim = _rank_pid(proc.pid, rank=1)
        os.kill(victim, signal.SIGKILL)
        started = time.monotonic()
        assert proc.wait(20) != 0
        assert time.monotonic() - started < 10      # no hang: the other rank was ended too
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    resumed = subprocess.run([sys.executable, str(CLI), *_args(data_dir, out), "--resume"], capture_output=True,
                             text=True, env=mpi_env(**FAST), cwd=ROOT, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at epoch" in resumed.stdout
    assert load_checkpoint(out / "checkpoint.npz")["trainer"]["global_step"] == 24
    # The same run, to float32 rounding; looser than the uninterrupted comparison
    # because the switch from 2 processes to 1 changes the rounding mid-run, and on
    # this tiny net (8 channels) an ulp can move a max-pooling tie between ReLU zeros,
    # which shifts later losses by about 1e-4 (measured).
    np.testing.assert_allclose(_history(out), _history(one_process), rtol=2e-3, atol=1e-6)


def _rank_pid(launcher_pid, rank):
    """The pid of MPI rank ``rank`` among the launcher's descendants (from their environment)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"PMI_RANK={rank}".encode() in environ and str(CLI).encode() in Path(
                    f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"rank {rank} of mpiexec {launcher_pid} not found")


def _error_lines(done):
    return [line for line in done.stderr.splitlines() if "error:" in line]


@needs_mpi
def test_a_batch_that_does_not_split_evenly_is_one_error_on_rank_0(data_dir, tmp_path):
    done = _mpiexec(2, sys.executable, str(CLI), *_args(data_dir, tmp_path / "x", "--batch-size", "7"), timeout=60)
    assert done.returncode != 0
    assert _error_lines(done) == ["alexnet_cifar10: error: --batch-size 7 is the global batch, split evenly over "
                                  "the 2 processes: it must be a multiple of 2"]


@needs_mpi
def test_ranks_with_different_settings_stop_together_naming_the_rank(data_dir, tmp_path):
    args = _args(data_dir, tmp_path / "x")
    done = subprocess.run([MPIEXEC, "-n", "1", sys.executable, str(CLI), *args, ":", "-n", "1", sys.executable,
                           str(CLI), *args, "--seed", "1"], capture_output=True, text=True, env=mpi_env(), cwd=ROOT,
                          timeout=60)
    assert done.returncode != 0
    lines = _error_lines(done)
    assert len(lines) == 1 and "rank 1 disagrees with rank 0 on seed: 1 vs 0" in lines[0], done.stderr


@needs_mpi
def test_a_rank_that_fails_alone_ends_every_rank(data_dir, tmp_path):
    # SIGINT to rank 1 only: it reports, naming itself, and aborts the whole run.
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, str(CLI), *_args(data_dir, tmp_path / "x")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=mpi_env(MINIDL_TEST_WRITE_DELAY="0.2", **FAST))
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "x" / "checkpoint.npz").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(_rank_pid(proc.pid, rank=1), signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "error: rank 1: interrupted" in stderr


def test_mpi4py_missing_under_a_launcher_is_one_line_and_exit_1(data_dir, tmp_path):
    blocker = tmp_path / "site"
    (blocker / "mpi4py").mkdir(parents=True)
    (blocker / "mpi4py" / "__init__.py").write_text("raise ImportError('mpi4py blocked by the test')\n")
    for rank, expected_lines in (("0", 1), ("1", 0)):
        env = mpi_env(PMI_SIZE="2", PMI_RANK=rank)
        env["PYTHONPATH"] = f"{blocker}{os.pathsep}{ROOT}"
        done = subprocess.run([sys.executable, str(CLI), *_args(data_dir, tmp_path / "x")], capture_output=True,
                              text=True, env=env, cwd=ROOT, timeout=60)
        assert done.returncode == 1
        lines = _error_lines(done)
        assert len(lines) == expected_lines and "Traceback" not in done.stderr, done.stderr
        if lines:
            assert "mpi4py is not installed" in lines[0]
