#!/usr/bin/env python3
"""Why minidl's worker threads scale less than processes: each kernel region, on 1 thread and on N.

    python benchmarks/thread_scaling.py --model resnet20 --batch-size 128
    python benchmarks/thread_scaling.py --model alexnet --variant cifar --threads 2 --steps 5

minidl's CPU kernels cut their work into pieces (batch slices, chunks) and hand them to
worker threads (``minidl/kernels/cpu/threads.py``). For each kernel that does so, a
child process of 1 thread and one of ``--threads`` threads (single-threaded BLAS in
both, so the 1-thread child uses one core) train the network for ``--steps`` timed
steps after 2 warm-up steps, and record per step:

* ``wall``: the time of the kernel's parallel regions (``map_pieces``), and
* ``in pieces``: the time summed over its pieces, on every thread.

With one thread the two agree. With N threads, ``wall`` shrinks by the scaling, and
``in pieces`` shows whether each piece took as long as alone: it grows when the
threads slow each other down (shared caches and memory, Python's GIL between NumPy
calls), while the gap between ``in pieces`` / N and ``wall`` is what the hand-offs
and the last pieces of each region cost.

``--calls`` adds a second measurement that needs no network: four short NumPy
calls (a vector-matrix product, a column sum, an element-wise product, a 6x6 matrix
times a wide one: the shapes of minidl's batch-norm sums and Winograd's transforms)
and one long one (an element-wise product on 8 MB), each timed in a loop alone, then
in two threads of one process at once, then in two processes at once.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, format_table, machine_info, median, write_json  # noqa: E402
from frameworks import MODELS, make_batch, model_spec  # noqa: E402

from minidl import backend  # noqa: E402

ONE_BLAS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ---- child: one thread count ------------------------------------------------------------

def _instrument(stats: dict) -> None:
    """Wrap map_pieces wherever the CPU kernels imported it: wall and in-piece time per caller."""
    import importlib
    import pkgutil

    import minidl.kernels.cpu as cpu_kernels
    from minidl.kernels.cpu import threads

    original = threads.map_pieces

    def map_pieces(array, work, items, nbytes=None):
        caller = sys._getframe(1).f_code
        key = f"{Path(caller.co_filename).stem}.{caller.co_name}"
        inside = [0.0]

        def timed(item):
            start = time.perf_counter()
            try:
                return work(item)
            finally:
                inside[0] += time.perf_counter() - start   # a float add: atomic enough under the GIL
        start = time.perf_counter()
        result = original(array, timed, items, nbytes)
        entry = stats.setdefault(key, [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += time.perf_counter() - start
        entry[2] += inside[0]
        return result

    for info in pkgutil.iter_modules(cpu_kernels.__path__):
        module = importlib.import_module(f"{cpu_kernels.__name__}.{info.name}")
        if getattr(module, "map_pieces", None) is original:
            module.map_pieces = map_pieces


def child(args) -> None:
    import minidl
    import minidl.functional as F
    from frameworks import build_minidl
    from minidl.optim import SGD

    stats: dict = {}
    _instrument(stats)
    spec = model_spec(args.model, args.variant)
    model = build_minidl(spec)
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = make_batch(spec, args.batch_size)
    x = minidl.tensor(images)
    steps = []
    for i in range(2 + args.steps):
        if i == 2:
            stats.clear()
        start = time.perf_counter()
        optimizer.zero_grad()
        F.softmax_cross_entropy(model(x), labels).backward()
        optimizer.step()
        steps.append(time.perf_counter() - start)
    per_step = {k: {"calls": v[0] / args.steps, "wall_s": v[1] / args.steps, "in_pieces_s": v[2] / args.steps}
                for k, v in stats.items()}
    print("RESULT " + json.dumps({"step_s": median(steps[2:]), "regions": per_step}), flush=True)


def run_child(args, threads: int) -> dict:
    command = [sys.executable, __file__, "--child", "--model", args.model, "--variant", args.variant,
               "--batch-size", str(args.batch_size), "--steps", str(args.steps)]
    env = dict(os.environ, MINIDL_NUM_THREADS=str(threads), **ONE_BLAS)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"thread_scaling: the {threads}-thread child failed:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# ---- short calls: threads of one process against processes -------------------------------

def _calls():
    """name -> (setup, call): four short NumPy calls of the shapes minidl's kernels make."""
    import numpy as np

    def setup(seed):
        rng = np.random.default_rng(seed)
        blocks = [rng.standard_normal((256, 512), dtype=np.float32) for _ in range(8)]   # 512 KB each
        wide = [rng.standard_normal((6, 6 * 4096), dtype=np.float32) for _ in range(8)]
        big = rng.standard_normal((2048, 1024), dtype=np.float32)
        return {"blocks": blocks, "wide": wide, "ones": np.ones(256, np.float32),
                "six": rng.standard_normal((6, 6), dtype=np.float32), "big": big, "big_out": np.empty_like(big)}
    # name -> (call, how many times fewer loops than --count: the last call is 32x longer)
    calls = {
        "vector @ matrix (256x512)": (lambda d, i: np.matmul(d["ones"], d["blocks"][i % 8]), 1),
        "sum over axis 0 (256x512)": (lambda d, i: d["blocks"][i % 8].sum(axis=0), 1),
        "x * 2 (256x512)": (lambda d, i: d["blocks"][i % 8] * 2, 1),
        "6x6 @ 6x24576": (lambda d, i: np.matmul(d["six"], d["wide"][i % 8]), 1),
        "x * 2 (2048x1024, one long call)": (lambda d, i: np.multiply(d["big"], 2, out=d["big_out"]), 32),
    }
    return setup, calls


def _loop(call, data, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        call(data, i)
    return (time.perf_counter() - start) / count


def calls_child(args) -> None:
    """Each call in a loop: alone, then (``--pair threads``) in two threads of this process at once."""
    import threading
    setup, calls = _calls()
    mine, other = setup(1), setup(2)
    out = {}
    for name, (call, fewer) in calls.items():
        count = max(1, args.count // fewer)
        _loop(call, mine, max(1, count // 10))                 # warm
        if args.pair == "threads":
            times = []
            peer = threading.Thread(target=lambda: times.append(_loop(call, other, count)))
            peer.start()
            times.append(_loop(call, mine, count))
            peer.join()
            out[name] = sum(times) / len(times)
        else:
            out[name] = _loop(call, mine, count)
    print("RESULT " + json.dumps(out), flush=True)


def short_calls(args) -> dict:
    """Seconds per call: alone, two threads of one process, two processes (medians over --rounds)."""
    base = [sys.executable, __file__, "--calls-child", "--count", str(args.count)]
    env = dict(os.environ, **ONE_BLAS)

    def result(done_stdout: str) -> dict:
        return json.loads([line for line in done_stdout.splitlines() if line.startswith("RESULT ")][-1][7:])
    rounds = {"alone": [], "2 threads": [], "2 processes": []}
    for _ in range(args.rounds):
        rounds["alone"].append(result(subprocess.run(base, capture_output=True, text=True, env=env,
                                                     check=True).stdout))
        rounds["2 threads"].append(result(subprocess.run(base + ["--pair", "threads"], capture_output=True,
                                                         text=True, env=env, check=True).stdout))
        pair = [subprocess.Popen(base, stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
        outs = [p.communicate()[0] for p in pair]
        if any(p.returncode for p in pair):
            raise SystemExit("thread_scaling: a --calls child failed")
        both = [result(o) for o in outs]
        rounds["2 processes"].append({k: (both[0][k] + both[1][k]) / 2 for k in both[0]})
    names = list(rounds["alone"][0])
    return {how: {k: median([r[k] for r in runs]) for k in names} for how, runs in rounds.items()}


# ---- driver ---------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20", help=f"one of {MODELS} (default resnet20)")
    p.add_argument("--variant", default="cifar", help="AlexNet's variant (default cifar)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2, help="the threaded child's worker threads (default 2)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per child, after 2 warm-up steps")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (1 thread, N threads)")
    p.add_argument("--calls", action="store_true", help="also time short NumPy calls: threads against processes")
    p.add_argument("--count", type=int, default=20000, help="--calls: calls per loop")
    p.add_argument("--json", type=Path)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--calls-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--pair", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if args.calls_child:
        calls_child(args)
        return 0
    try:
        spec = model_spec(args.model, args.variant)
    except ValueError as exc:
        print(str(exc).replace("bench_models", "thread_scaling"), file=sys.stderr)
        return 2
    if args.threads < 2 or args.steps < 1 or args.rounds < 1 or args.batch_size < 1 or args.count < 10:
        print(f"thread_scaling: need --threads >= 2, --steps, --rounds, --batch-size >= 1 and --count >= 10, got "
              f"{args.threads}, {args.steps}, {args.rounds}, {args.batch_size}, {args.count}", file=sys.stderr)
        return 2
    runs = {1: [], args.threads: []}
    for r in range(args.rounds):
        for n in runs:
            runs[n].append(run_child(args, n))
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(
            f"{n} thread(s) {1e3 * runs[n][-1]['step_s']:.1f} ms/step" for n in runs), flush=True)
    n = args.threads
    steps = {k: median([x["step_s"] for x in v]) for k, v in runs.items()}
    keys = sorted(set(runs[1][0]["regions"]) | set(runs[n][0]["regions"]),
                  key=lambda k: -median([x["regions"].get(k, {}).get("wall_s", 0.0) for x in runs[1]]))
    rows, regions = [], {}
    for key in keys:
        one, many = ([x["regions"].get(key, {"calls": 0, "wall_s": 0.0, "in_pieces_s": 0.0}) for x in runs[t]]
                     for t in (1, n))
        wall1, pieces1, wall_n, pieces_n = (median([x[f] for x in v]) for v, f in (
            (one, "wall_s"), (one, "in_pieces_s"), (many, "wall_s"), (many, "in_pieces_s")))
        regions[key] = {"calls": one[0]["calls"], "one_thread_s": wall1, "one_thread_in_pieces_s": pieces1,
                        "wall_s": wall_n, "in_pieces_s": pieces_n}
        if wall1 * 1e3 < 0.5:
            continue
        rows.append([key, f"{one[0]['calls']:.0f}", f"{1e3 * wall1:.1f}", f"{1e3 * wall_n:.1f}",
                     f"{wall1 / wall_n:.2f}x" if wall_n else "-", f"{1e3 * pieces_n:.1f}",
                     f"{pieces_n / wall1:.2f}x" if wall1 else "-"])
    outside = {1: steps[1] - sum(r["one_thread_s"] for r in regions.values()),
               n: steps[n] - sum(r["wall_s"] for r in regions.values())}
    rows.append(["(outside the regions)", "", f"{1e3 * outside[1]:.1f}", f"{1e3 * outside[n]:.1f}",
                 f"{outside[1] / outside[n]:.2f}x" if outside[n] > 0 else "-", "", ""])
    rows.append(["whole step", "", f"{1e3 * steps[1]:.1f}", f"{1e3 * steps[n]:.1f}",
                 f"{steps[1] / steps[n]:.2f}x", "", ""])
    print(f"{spec.name}, batch {args.batch_size}: per step, medians of {args.rounds} rounds")
    print(format_table(["kernel region", "calls", "1 thread ms", f"{n} threads: wall ms", "scaling",
                        "in pieces ms (all threads)", "pieces / alone"], rows))
    payload = {"machine": machine_info(backend.CPU), "model": spec.name,
               "batch_size": args.batch_size, "threads": n, "rounds": args.rounds, "step_s": steps,
               "regions": regions, "runs": runs}
    if args.calls:
        calls = short_calls(args)
        payload["calls"] = calls
        rows = [[name, f"{1e6 * calls['alone'][name]:.1f}"] +
                [f"{1e6 * calls[how][name]:.1f} ({calls[how][name] / calls['alone'][name]:.2f}x)"
                 for how in ("2 threads", "2 processes")] for name in calls["alone"]]
        print(format_table(["short call", "alone us", "2 threads of one process us", "2 processes us"], rows))
    path = args.json or RESULTS_DIR / f"thread_scaling_{time.strftime('%Y%m%d_%H%M%S')}.json"
    write_json(path, payload)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
