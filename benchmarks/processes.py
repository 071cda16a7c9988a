"""Child processes of the benchmarks: one framework served command by command, and its peak memory.

Each framework runs in a process of its own, so that neither sees the other's
threads (minidl's workers with BLAS pinned to one thread, PyTorch's OpenMP pool,
ONNX Runtime's thread pool) or allocations. The parent writes one command per line
to the child's stdin; the child does it, times it itself (work and device sync) and
answers one JSON line on its stdout.

Peak memory on the CPU: the peak resident set size (VmHWM, reset through
/proc/self/clear_refs before each phase; ru_maxrss when that is not allowed) minus
the resident size right after the imports, so weights, gradients, optimizer state,
activations and BLAS work buffers count and the libraries do not. On CUDA: the
allocator's high-water mark of bytes in use (CuPy's pool through an allocator hook,
``torch.cuda.max_memory_allocated``).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


class ChildProcess:
    """A child process (``argv``: the script and its arguments) answering commands with JSON lines.

    Args:
        name: the framework's name, used in errors.
        argv: the script and its arguments, run with this Python.
        who: the benchmark's name, used in errors.
    """

    def __init__(self, name: str, argv: list, who: str = "benchmark"):
        self.name, self.who = name, who
        self.proc = subprocess.Popen([sys.executable] + [str(a) for a in argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.info = self.ask("ready")

    def ask(self, command: str) -> dict:
        """Send one command; return the child's JSON answer."""
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.who}: the {self.name} process stopped (exit {self.proc.wait()}); "
                               "its error is above")
        return json.loads(line)

    def seconds(self, command: str) -> float:
        """Send a timed command (the child answers {"seconds": s}); return the child's time."""
        return float(self.ask(command)["seconds"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.ask("quit")
        self.proc.wait()


def serve(actions: dict) -> None:
    """The child's side: answer each command on stdin with ``actions[command]()`` as JSON, until "quit"."""
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            print("{}", flush=True)
            return
        print(json.dumps(actions[command]() or {}), flush=True)


def timed(fn) -> float:
    """Seconds that ``fn()`` takes (fn runs once and synchronises its device)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---- peak memory --------------------------------------------------------------------------
def current_rss() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> bool:
    """Reset VmHWM (the peak resident set size) to the current size; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux >= 4.0
        return True
    except OSError:
        return False


def peak_rss(reset_ok: bool) -> int:
    """The peak resident set size in bytes since the last ``reset_peak`` (since the start without one)."""
    if reset_ok:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def cuda_peak_tracker(framework: str, device):
    """Start tracking the GPU high-water mark; returns a function giving (peak_bytes, reserved_bytes)."""
    from minidl import backend
    if framework == "torch":
        import torch
        torch.cuda.reset_peak_memory_stats(device.index)
        return lambda: (torch.cuda.max_memory_allocated(device.index), torch.cuda.max_memory_reserved(device.index))
    cupy = backend.get_array_module(backend.to_device(np.zeros(1), device))
    pool = cupy.get_default_memory_pool()
    peak = [pool.used_bytes(), pool.total_bytes()]

    def malloc(size):
        memory = pool.malloc(size)
        peak[0], peak[1] = max(peak[0], pool.used_bytes()), max(peak[1], pool.total_bytes())
        return memory
    cupy.cuda.set_allocator(malloc)
    return lambda: (peak[0], peak[1])


def phase_peak(fn, repeats: int, base: int) -> int:
    """Peak resident bytes above ``base`` while ``fn()`` runs ``repeats`` times (CPU)."""
    reset_ok = reset_peak()
    for _ in range(repeats):
        fn()
    return peak_rss(reset_ok) - base


def run_memory_child(argv: list, timeout: float) -> dict:
    """Run a memory child (its last stdout line is JSON); its result, or {"error": [last error line]}."""
    proc = subprocess.run([sys.executable] + [str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["exit %d" % proc.returncode]}
    return json.loads(proc.stdout.strip().splitlines()[-1])
