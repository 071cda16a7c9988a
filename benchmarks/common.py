"""Shared helpers of the benchmarks: timing, synchronisation, machine facts, tables, JSON.

Every timed call is followed by a device synchronisation, so a GPU's asynchronous
launches are counted where they run. Cases are timed in alternating rounds
(a, b, a, b, ...) and summarised by their median, so a burst of load from other
processes on a shared machine hits both frameworks alike and an outlier moves
nothing.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from minidl import backend  # noqa: E402

RESULTS_DIR = ROOT / "benchmarks" / "results"


def torch_or_none(skip: bool = False, import_it: bool = True):
    """The torch module, or None when it is not installed (or ``skip``).

    With ``import_it=False``, only whether it is installed (True or None), without
    importing it (a parent that runs torch in a child process leaves it out of its own).
    """
    if skip:
        return None
    if not import_it:
        import importlib.util
        return True if importlib.util.find_spec("torch") is not None else None
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_device(device: backend.Device) -> str:
    return "cpu" if device.type == "cpu" else f"cuda:{device.index}"


def sync(device: backend.Device) -> None:
    """Wait for all queued work on ``device`` (minidl's stream and, if loaded, torch's)."""
    if device.type == "cpu":
        return
    backend.synchronize(device)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.cuda.synchronize(device.index)


SETTLE_S = 0.05   # the pause before each case: longer than PyTorch's threads keep spinning after a call
LEAD_IN_S = 0.1   # untimed calls of a case, back to back, for at least this long before its timed one


def time_alternating(cases, warmup: int, iters: int, log=None, settle: float = SETTLE_S,
                     lead_in: float = LEAD_IN_S) -> dict:
    """Time each case ``iters`` times in alternating rounds after ``warmup`` untimed rounds.

    In each round a case gets a pause of ``settle`` seconds, then untimed calls back to
    back for at least ``lead_in`` seconds (one call at least), then its timed call: a
    steady state, as in a training or inference loop, not the moment one framework hands
    the cores to another. Both matter on a small machine: PyTorch's OpenMP threads keep
    spinning after a call and slow whatever runs next, and minidl's threads, which sleep
    instead, need a few calls after idleness to get back to speed (the measurements are
    in benchmarks/README.md, "Method").

    Args:
        cases: list of (name, fn); fn runs once and synchronises its device. When fn
            returns a number, that is its time in seconds (a case run and timed in
            another process); otherwise it is timed here.
        warmup, iters: untimed and timed rounds.
        settle: seconds of idleness before each case's calls (0: none).
        lead_in: seconds of untimed calls right before each timed call (0: none).
    Returns:
        dict name -> list of seconds, one per timed round.
    """
    times = {name: [] for name, _ in cases}
    for _ in range(warmup):
        for _, fn in cases:
            fn()
    for i in range(iters):
        for name, fn in cases:
            time.sleep(settle)
            if lead_in > 0:
                until = time.perf_counter() + lead_in
                fn()
                while time.perf_counter() < until:
                    fn()
            start = time.perf_counter()
            reported = fn()
            elapsed = time.perf_counter() - start
            times[name].append(reported if isinstance(reported, float) else elapsed)
        if log is not None:
            log(f"  round {i + 1}/{iters}: " + ", ".join(f"{n} {1e3 * t[-1]:.0f} ms" for n, t in times.items()))
    return times


def median(values) -> float:
    return float(statistics.median(values)) if values else float("nan")


def set_threads(n: int, torch=None) -> str:
    """Use ``n`` CPU threads in NumPy's BLAS (via threadpoolctl), minidl's kernels and torch; say what was set.

    On a machine shared with other jobs, OpenBLAS's busy-waiting threads can lose
    an order of magnitude when a core is taken away mid-GEMM (seen here: conv1's
    weight-gradient GEMM 0.18 s with 1 thread, 2.7 s with 2 threads and another
    job running); torch's OpenMP pool suffers less. ``--threads 1`` on both sides
    gives a comparison that load disturbs least.
    """
    done = []
    if torch is not None:
        torch.set_num_threads(n)
        done.append(f"torch {n}")
    os.environ["MINIDL_NUM_THREADS"] = str(n)  # minidl's CPU kernel workers (minidl/kernels/cpu/threads.py)
    done.append(f"minidl workers {n}")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        done.append("numpy BLAS: default (threadpoolctl not installed)")
    else:
        _LIMITS.append(threadpool_limits(limits=n, user_api="blas"))
        done.append(f"numpy BLAS {n}" + (" (minidl pins it to 1 once its workers run)" if n > 1 else ""))
    return ", ".join(done)


_LIMITS = []  # keeps the threadpool limits alive for the whole run


def blas_info() -> list:
    """What BLAS numpy runs (threadpoolctl when installed), e.g. OpenBLAS's kernel and threads."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "threadpoolctl not installed; numpy " + np.__version__}]
    keep = ("internal_api", "version", "architecture", "num_threads", "threading_layer", "prefix")
    return [{k: info.get(k) for k in keep} for info in threadpool_info()]


def machine_info(device: backend.Device) -> dict:
    """Facts that change benchmark numbers: CPU, load, BLAS, versions, GPU name."""
    info = {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "cpu": _cpu_name(), "blas": blas_info(),
            "openblas_env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                            "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}}
    if hasattr(os, "getloadavg"):
        info["loadavg_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    if device.type == "cuda":
        xp = backend.get_array_module(backend.to_device(np.zeros(1), device))
        props = xp.cuda.runtime.getDeviceProperties(device.index)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        info["cupy"] = xp.__version__
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def precision_settings(device: backend.Device, tf32: bool, torch=None) -> dict:
    """Make float32 matrix products full precision (default) or TF32 on both sides; say which.

    minidl/CuPy read CUPY_TF32 when CuPy is first imported, so the caller sets it
    before parsing the device. PyTorch's cuDNN convolutions default to TF32, so it is
    switched off explicitly unless asked for.
    """
    settings = {"dtype": "float32", "tf32": bool(tf32) and device.type == "cuda"}
    if device.type == "cuda":
        settings["minidl"] = f"CUPY_TF32={os.environ.get('CUPY_TF32', '0')}"
        if torch is not None:
            torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
            torch.backends.cudnn.allow_tf32 = bool(tf32)
            settings["torch"] = (f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}, "
                                 f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
                                 f"cudnn.benchmark={torch.backends.cudnn.benchmark}")
    else:
        settings["note"] = "CPU: IEEE float32 on both sides (TF32 does not apply)"
    return settings


def prepare_tf32_env(tf32: bool) -> None:
    """Set CUPY_TF32 for this process before CuPy is imported (by parse_device)."""
    if tf32:
        os.environ["CUPY_TF32"] = "1"
    else:
        os.environ.pop("CUPY_TF32", None)


def format_table(headers, rows) -> str:
    """A plain-text table; floats printed with 3 significant digits-ish."""
    def cell(v):
        if isinstance(v, float):
            if v != v:
                return "-"
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)
    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in text)) if text else len(str(h)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).rjust(w) for h, w in zip(headers, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in text]
    return "\n".join(out)


def default_json(prefix: str, device: backend.Device) -> Path:
    return RESULTS_DIR / f"{prefix}_{str(device).replace(':', '')}.json"


def write_json(path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def add_threads_argument(parser, default=None) -> None:
    """The --threads flag that every benchmark shares (``default``: the number of cores)."""
    default = os.cpu_count() or 2 if default is None else default
    parser.add_argument("--threads", type=int, default=default,
                        help=f"CPU threads of torch, of minidl's workers and of NumPy's BLAS (default {default}; "
                        "0 leaves each framework at its own default; 1 on both sides is the comparison that "
                        "other jobs' load disturbs least)")


def setup(args, torch_wanted: bool = True):
    """What every benchmark does first: TF32 setting, device, torch, threads, precision.

    Args:
        torch_wanted: False leaves torch unimported (a process that runs minidl only).
    Returns:
        (device, torch module or None, threads description, precision settings dict).
    """
    prepare_tf32_env(args.tf32)
    device = backend.parse_device(args.device)
    torch = torch_or_none(getattr(args, "skip_torch", False) or not torch_wanted)
    threads = set_threads(args.threads, torch) if args.threads else "default"
    return device, torch, threads, precision_settings(device, args.tf32, torch)


def top1_top5_hits(logits, labels) -> tuple[int, int]:
    """How many rows of ``logits`` (torch, (N, K)) rank ``labels`` (N,) first, and within their top 5."""
    best = logits.topk(min(5, logits.shape[1]), dim=1).indices
    return int((best[:, 0] == labels).sum()), int((best == labels[:, None]).any(dim=1).sum())
