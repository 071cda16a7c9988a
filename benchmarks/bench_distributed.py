#!/usr/bin/env python3
"""Data-parallel scaling on this machine: 1 process against N processes, one thread each.

    python benchmarks/bench_distributed.py                      # cifar (batch 128) and seed (batch 32), 2 processes
    python benchmarks/bench_distributed.py --variants cifar --rounds 7 --processes 2
    python benchmarks/bench_distributed.py --variants resnet20 --threaded   # also 1 process on N threads

For each variant, rounds alternate (1 process, N processes, 1 process, ...); each
round is a fresh job that trains ``--steps`` steps of the global batch (after one
untimed epoch of ``--warmup`` steps) through the real ``Trainer`` and
``DataParallel``, on random images with the variant's training transform. Every
process gets one worker thread and single-threaded BLAS, so N processes use N
cores and the 1-process baseline uses one: the efficiency is N-process images/s
over N times the 1-process images/s. ``resnet20`` (batch 128) stands beside the
AlexNet variants. ``--threaded`` adds a third job to each round: one process with N
worker threads (minidl's default on N cores), so the table also says which of the
two ways to use N cores trains faster here (N processes / 1 process on N threads).
``--torch`` adds PyTorch to each round: the same network with minidl's starting
weights (benchmarks/frameworks.py's twin), in one process at PyTorch's default
threads, trained on the same loader, transform and batches in a plain loop (zero_grad,
forward, cross-entropy, backward, SGD step), timed like the Trainer's epoch
(images over the loop's wall time, loading included); minidl's N processes against it.

The N-process jobs also report their communication, on rank 0:

* ``wait`` (median per step): time blocked in ``GradientReducer.wait`` after
  backward: the all-reduce time that backward did not hide, plus any time this
  process waited for a slower one;
* after training, timed alternately: the all-reduce of minidl's buckets through its
  own collectives, the reducer's whole path (plus packing and unpacking), and bare
  ``mpi4py`` ``Allreduce`` calls on the same bytes (per bucket, and all in one
  call): the ratios to the per-bucket calls are minidl's overhead over plain MPI;
* ``started in backward``: the share of the gradient bytes whose all-reduce began
  while backward was still running (the rest starts in ``wait``).

Results go to benchmarks/results/bench_distributed_<date>.json.
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

import numpy as np  # noqa: E402

BATCH = {"cifar": 128, "seed": 32, "resnet20": 128}
ONE_THREAD = {"MINIDL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}


# ---- one job (runs in each process) ---------------------------------------------------

def _job(args):
    """What every job trains: (the network's ModelSpec, random uint8 images, labels, training transform)."""
    from frameworks import model_spec
    from minidl.data import build_transform

    spec = model_spec("resnet20") if args.variant == "resnet20" else model_spec("alexnet", args.variant)
    rng = np.random.default_rng(0)
    count = args.steps * args.batch_size
    images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, spec.classes, count)
    return spec, images, labels, build_transform(spec.input_size, augment=True)


def worker(args) -> None:
    from frameworks import build_minidl
    from minidl import distributed
    from minidl.data import DataLoader
    from minidl.distributed.launch import share_cpu_cores
    from minidl.optim import SGD
    from minidl.train import Trainer

    world = distributed.init()
    share_cpu_cores(world)
    batch = args.batch_size
    spec, images, labels, transform = _job(args)
    model = build_minidl(spec)     # seed 0
    share = {"auto": None, "on": True, "off": False}[args.share_factors]
    parallel = distributed.DataParallel(model, world, bucket_bytes=int(args.bucket_mb * 2**20), share_factors=share) \
        if world.size > 1 else None
    shard = None if parallel is None else parallel.shard
    warm = DataLoader(images[:args.warmup * batch], labels[:args.warmup * batch], batch, transform=transform,
                      shard=shard)
    timed = DataLoader(images, labels, batch, transform=transform, shard=shard)
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)
    waits, early = [], []
    log = (lambda *a: None)
    Trainer(model, optimizer, warm, None, epochs=1, progress=False, plots=False, parallel=parallel, log=log).fit()
    trainer = Trainer(model, optimizer, timed, None, epochs=1, progress=False, plots=False, parallel=parallel,
                      log=log)
    if parallel is not None:  # record the reducer's blocked time of every step
        original = parallel.finish_gradients

        def finish():
            original()
            waits.append(parallel.reducer.stats["wait_seconds"])
            early.append(parallel.reducer.stats["bytes_started_in_backward"] / parallel.reducer.stats["bytes"])
        parallel.finish_gradients = finish
    history = trainer.fit()
    report = {"images_per_s": history[-1]["images_per_s"], "processes": world.size}
    if parallel is not None:
        report.update(wait_s=median(waits), started_in_backward=median(early), **allreduce_times(parallel, world),
                      buckets=parallel.reducer.stats["buckets"], bytes=parallel.reducer.stats["bytes"])
    if world.is_main:
        print("RESULT " + json.dumps(report), flush=True)


def torch_worker(args) -> None:
    """The PyTorch job: the torch twin trained on minidl's loader for the same steps, one process."""
    import torch

    from frameworks import build_minidl, build_torch_twin
    from minidl.data import DataLoader

    batch = args.batch_size
    spec, images, labels, transform = _job(args)
    twin = build_torch_twin(spec, build_minidl(spec)).train()
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)

    def epoch(loader) -> float:
        seen, start = 0, time.perf_counter()
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(np.ascontiguousarray(x.numpy()))),
                                                     torch.from_numpy(np.asarray(y, dtype=np.int64)))
            loss.backward()
            optimizer.step()
            seen += len(y)
        return seen / (time.perf_counter() - start)
    epoch(DataLoader(images[:args.warmup * batch], labels[:args.warmup * batch], batch, transform=transform))
    speed = epoch(DataLoader(images, labels, batch, transform=transform))
    print("RESULT " + json.dumps({"images_per_s": speed, "processes": 1, "threads": torch.get_num_threads()}),
          flush=True)


def allreduce_times(parallel, world) -> dict:
    """Median seconds of minidl's all-reduce of its buckets, of its whole bucket path, and of bare MPI.

    * ``buckets``: ``distributed.iall_reduce`` + wait on each bucket's flat array (the
      collectives minidl issues, through its transport);
    * ``reducer``: ``GradientReducer.wait`` with nothing started during a backward:
      packs (scaled copies of the gradients), the all-reduces and the unpacking;
    * ``bare``: a bare ``mpi4py`` ``Allreduce`` in place on NumPy arrays of the same
      bytes, one per bucket (what minidl's transport adds is the difference);
    * ``bare_one``: one bare ``Allreduce`` of all the bytes at once (MPI's choice of
      algorithm depends on the message size, so this can differ either way).
    Timed alternately, each after a barrier.
    """
    from mpi4py import MPI

    from minidl.distributed import iall_reduce
    reducer = parallel.reducer
    repeats = 60 if reducer.stats["bytes"] < 2**25 else 15  # millisecond timings need more samples
    bare = [np.ones(b.flat.size, dtype=np.float32) for b in reducer.buckets]
    bare_one = np.ones(sum(b.flat.size for b in reducer.buckets), dtype=np.float32)

    def buckets():
        for request in [iall_reduce(b.flat, world=world) for b in reducer.buckets]:
            request.wait()

    def bare_buckets():
        for array in bare:
            world.comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)

    cases = {"buckets": buckets, "reducer": reducer.wait, "bare": bare_buckets,
             "bare_one": lambda: world.comm.Allreduce(MPI.IN_PLACE, bare_one, op=MPI.SUM)}
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            world.barrier()
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {f"allreduce_{name}_s": median(values) for name, values in times.items()}


# ---- the driver -----------------------------------------------------------------------

def run_job(args, variant: str, processes: int, threads: int = 1, framework: str = "minidl") -> dict:
    """One fresh job: ``processes`` processes of one worker thread, or one process of ``threads``.

    framework "torch": one PyTorch process at its default threads (``threads`` unused).
    """
    command = [sys.executable, __file__, "--worker", "--variant", variant, "--batch-size", str(args.batch[variant]),
               "--steps", str(args.steps[variant]), "--warmup", str(args.warmup), "--bucket-mb", str(args.bucket_mb),
               "--share-factors", args.share_factors, "--framework", framework]
    if processes > 1:
        command = [args.mpiexec, "-n", str(processes)] + command
    env = dict(os.environ, **ONE_THREAD)
    if framework == "torch":
        env = {k: v for k, v in os.environ.items() if k not in ONE_THREAD}
    elif threads > 1:  # minidl's own threads; BLAS is pinned to one thread by minidl itself then
        env.update(MINIDL_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                   OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"bench_distributed: the {processes}-process {framework} {variant} job failed:\n"
                         f"{done.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="cifar,seed", help="any of cifar, seed, resnet20, comma-separated")
    p.add_argument("--threaded", action="store_true",
                   help="also time 1 process with --processes worker threads in each round")
    p.add_argument("--torch", action="store_true",
                   help="also time PyTorch (1 process, its default threads) on the same loader in each round")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=None, help="timed steps per job (default: 8 cifar, 4 seed)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--bucket-mb", type=float, default=25.0)
    p.add_argument("--share-factors", choices=["auto", "on", "off"], default="auto",
                   help="DataParallel(share_factors=...): the large dense layers split over the host's processes "
                        "(auto: on one host), or all-reduced in buckets (off)")
    p.add_argument("--mpiexec", default=str(Path(sys.executable).parent / "mpiexec"))
    p.add_argument("--json", type=Path)
    # worker mode (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--framework", default="minidl", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        torch_worker(args) if args.framework == "torch" else worker(args)
        return 0
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in BATCH]
    if unknown or args.processes < 2 or args.rounds < 1:
        print(f"bench_distributed: --variants must be among {sorted(BATCH)} (got {args.variants!r}), "
              f"--processes >= 2 and --rounds >= 1 (got {args.processes}, {args.rounds})", file=sys.stderr)
        return 2
    args.batch = BATCH
    args.steps = {v: args.steps or (4 if v == "seed" else 8) for v in variants}
    if not os.access(args.mpiexec, os.X_OK):
        args.mpiexec = "mpiexec"
    results, rows = {}, []
    for variant in variants:
        runs, threaded, torch_runs = {1: [], args.processes: []}, [], []
        for r in range(args.rounds):
            for n in runs:
                runs[n].append(run_job(args, variant, n))
            if args.threaded:
                threaded.append(run_job(args, variant, 1, threads=args.processes))
            if args.torch:
                torch_runs.append(run_job(args, variant, 1, framework="torch"))
            print(f"  {variant} round {r + 1}/{args.rounds}: " + ", ".join(
                f"{n} proc {runs[n][-1]['images_per_s']:.1f} img/s" for n in runs) +
                (f", 1 proc x {args.processes} threads {threaded[-1]['images_per_s']:.1f} img/s" if threaded else "") +
                (f", PyTorch {torch_runs[-1]['images_per_s']:.1f} img/s" if torch_runs else ""), flush=True)
        one = median([x["images_per_s"] for x in runs[1]])
        many = median([x["images_per_s"] for x in runs[args.processes]])
        per_round = [m["images_per_s"] / (args.processes * o["images_per_s"])
                     for o, m in zip(runs[1], runs[args.processes])]
        comm = runs[args.processes]
        wait, buckets, reducer, bare, bare_one = (median([x[k] for x in comm]) for k in (
            "wait_s", "allreduce_buckets_s", "allreduce_reducer_s", "allreduce_bare_s", "allreduce_bare_one_s"))
        efficiency = many / (args.processes * one)
        overlapped = median([x["started_in_backward"] for x in comm])
        # N processes against the same cores used as threads of one process: ratio of medians,
        # and the median of the per-round ratios (each round's jobs ran back to back).
        on_threads = median([x["images_per_s"] for x in threaded]) if threaded else None
        over_threads = [m["images_per_s"] / t["images_per_s"] for t, m in zip(threaded, runs[args.processes])]
        torch_speed = median([x["images_per_s"] for x in torch_runs]) if torch_runs else None
        over_torch = [m["images_per_s"] / t["images_per_s"] for t, m in zip(torch_runs, runs[args.processes])]
        results[variant] = {"torch_img_s": torch_speed, "torch_runs": torch_runs,
                            "processes_over_torch": many / torch_speed if torch_runs else None,
                            "processes_over_torch_per_round_median": median(over_torch) if torch_runs else None,
                            "threaded_img_s": on_threads, "threads": args.processes, "threaded_runs": threaded,
                            "processes_over_threads": many / on_threads if threaded else None,
                            "processes_over_threads_per_round_median": median(over_threads) if threaded else None,
                            "batch": args.batch[variant], "one_process_img_s": one, "n_process_img_s": many,
                            "efficiency": efficiency, "efficiency_per_round_median": median(per_round),
                            "wait_s": wait, "allreduce_buckets_s": buckets, "allreduce_reducer_s": reducer,
                            "allreduce_bare_s": bare, "allreduce_bare_one_s": bare_one,
                            "buckets_over_bare": buckets / bare,
                            "reducer_over_bare": reducer / bare, "overlapped": overlapped,
                            "bytes": comm[0]["bytes"], "buckets": comm[0]["buckets"], "runs": runs}
        rows.append([variant, args.batch[variant], f"{one:.1f}", f"{many:.1f}",
                     f"{100 * efficiency:.0f}% ({100 * median(per_round):.0f}%)",
                     f"{1e3 * bare:.1f} ms", f"{1e3 * bare_one:.1f} ms",
                     f"{1e3 * buckets:.1f} ms ({buckets / bare:.2f}x)",
                     f"{1e3 * reducer:.1f} ms ({reducer / bare:.2f}x)", f"{1e3 * wait:.1f} ms",
                     f"{100 * overlapped:.0f}%", f"{comm[0]['bytes'] / 2**20:.1f} MB in {comm[0]['buckets']}",
                     f"{on_threads:.1f}" if threaded else "-",
                     f"{many / on_threads:.2f}x ({median(over_threads):.2f}x)" if threaded else "-",
                     f"{torch_speed:.1f}" if torch_runs else "-",
                     f"{many / torch_speed:.2f}x ({median(over_torch):.2f}x)" if torch_runs else "-"])
    print(format_table(["variant", "batch", "1 proc img/s", f"{args.processes} proc img/s",
                        "efficiency (per-round median)", "bare Allreduce, per bucket", "in one call",
                        "minidl buckets", "+ pack/unpack",
                        "wait after backward", "started in backward", "gradients",
                        f"1 proc x {args.processes} threads img/s", "processes / threads (per-round median)",
                        "PyTorch img/s", "processes / PyTorch (per-round median)"], rows))
    from minidl import backend
    path = args.json or RESULTS_DIR / f"bench_distributed_{time.strftime('%Y%m%d_%H%M%S')}.json"
    write_json(path, {"machine": machine_info(backend.CPU), "processes": args.processes, "rounds": args.rounds,
                      "results": results})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
