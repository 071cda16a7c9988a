#!/usr/bin/env python3
"""AlexNet training and inference speed and peak memory: minidl against PyTorch.

    python benchmarks/bench_alexnet.py --device cpu --batch-size 32
    python benchmarks/bench_alexnet.py --device cuda --batch-size 128 --per-layer
    python benchmarks/bench_alexnet.py --device cuda --tf32          # TF32 on both sides

What is timed, for minidl and for the same network built in PyTorch
(benchmarks/torch_alexnet.py, starting from minidl's weights), on one device, one
batch of random float32 images, in alternating runs (minidl, torch, minidl, ...).
Each framework runs in a child process of its own, which times every command it is
given (work and device sync) and reports back; so neither sees the other's threads
(minidl's workers with BLAS pinned to one thread, PyTorch's OpenMP pool), and each
runs at its own default thread count unless ``--threads N`` sets both to N:
  train step  = zero_grad, forward (training mode), softmax cross-entropy, backward,
                SGD step (lr 0.001, momentum 0.9)
  inference   = forward in eval mode under no_grad
``--warmup`` untimed rounds, then ``--iters`` timed ones; the medians are reported,
as images/s, with the speed ratio minidl/PyTorch (> 1: minidl is faster).

Peak memory: each framework runs in a child process of its own (so neither sees
the other's allocations). CPU: the peak resident set size (VmHWM, reset through
/proc/self/clear_refs before each phase; ru_maxrss when that is not allowed) minus
the resident size right after the imports, so the weights, gradients, optimizer
state, activations and BLAS work buffers all count and the libraries do not.
CUDA: the high-water mark of bytes in use: CuPy's memory pool (tracked through an
allocator hook) and torch.cuda.max_memory_allocated.

``--per-layer`` (benchmarks/per_layer.py) runs the layers one at a time on a
detached input (the previous layer's output), timing each layer's forward and its
backward (weight and input gradients, like in the full step; conv1 computes no input
gradient), for both frameworks in alternation (in the same child processes), and
shows where minidl loses time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (puts the repo root on sys.path)
from common import LEAD_IN_S, SETTLE_S, format_table, median, sync, time_alternating  # noqa: E402
from per_layer import layer_pass, measure_per_layer, per_layer_table  # noqa: E402
from processes import (ChildProcess, cuda_peak_tracker, current_rss, peak_rss, reset_peak,  # noqa: E402
                       run_memory_child, serve, timed)

import numpy as np  # noqa: E402

import minidl  # noqa: E402
import minidl.functional as F  # noqa: E402
from minidl import backend  # noqa: E402
from minidl.kernels.cpu import threads as cpu_threads  # noqa: E402
from minidl.models import AlexNet  # noqa: E402
from minidl.models.alexnet import INPUT_SIZE  # noqa: E402
from minidl.optim import SGD  # noqa: E402

LR, MOMENTUM = 0.001, 0.9


def make_batch(variant: str, batch: int, seed: int = 0):
    """Random float32 images (N,3,S,S) and int64 labels (N,) on the host."""
    rng = np.random.default_rng(seed)
    s = INPUT_SIZE[variant]
    return rng.standard_normal((batch, 3, s, s), dtype=np.float32), rng.integers(0, 10, batch)


# ---- the two frameworks: setup, one train step, one inference pass ------------------
class MinidlRunner:
    name = "minidl"

    def __init__(self, variant, device, images, labels):
        self.device = device
        self.model = AlexNet(num_classes=10, variant=variant).to(device)
        self.optimizer = SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.x = minidl.tensor(images, device=device)
        self.labels = backend.to_device(labels, device)
        self.last_loss = float("nan")

    def train_step(self):
        self.optimizer.zero_grad()
        loss = F.softmax_cross_entropy(self.model(self.x), self.labels)
        loss.backward()
        self.optimizer.step()
        sync(self.device)
        self.loss = loss

    def infer(self):
        with minidl.no_grad():
            self.model(self.x)
        sync(self.device)

    def finish(self):
        self.last_loss = float(self.loss.item()) if hasattr(self, "loss") else float("nan")


class TorchRunner:
    name = "torch"

    def __init__(self, variant, device, images, labels, minidl_model=None):
        import torch
        from torch_alexnet import TorchAlexNet, copy_minidl_weights
        self.torch, self.device = torch, device
        tdev = common.torch_device(device)
        model = TorchAlexNet(num_classes=10, variant=variant)
        if minidl_model is not None:
            copy_minidl_weights(model, minidl_model)  # the same starting point
        self.model = model.to(tdev)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.x = torch.from_numpy(images).to(tdev)
        self.labels = torch.from_numpy(labels).to(tdev)
        self.last_loss = float("nan")

    def train_step(self):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.torch.nn.functional.cross_entropy(self.model(self.x), self.labels)
        loss.backward()
        self.optimizer.step()
        sync(self.device)
        self.loss = loss

    def infer(self):
        with self.torch.no_grad():
            self.model(self.x)
        sync(self.device)

    def finish(self):
        self.last_loss = float(self.loss.item()) if hasattr(self, "loss") else float("nan")


# ---- each framework in a process of its own ---------------------------------------------
def _child_argv(args) -> list:
    argv = ["--device", args.device, "--variant", args.variant, "--batch-size", str(args.batch_size),
            "--threads", str(args.threads)]
    return argv + (["--tf32"] if args.tf32 else [])


class ProcessRunner(ChildProcess):
    """A framework's runner in a child process (``--runner-child``), driven one command at a time.

    Commands: train, infer (each answered with the seconds it took in the child),
    train_mode, eval_mode, finish (the last training loss), layers (one per-layer
    pass), quit. Replies are JSON lines on the child's stdout.
    """

    def __init__(self, name, args):
        super().__init__(name, [Path(__file__).resolve(), "--runner-child", name] + _child_argv(args),
                         who="bench_alexnet")
        self.last_loss = float("nan")

    def train_step(self) -> float:
        return self.seconds("train")

    def infer(self) -> float:
        return self.seconds("infer")

    def set_training(self, training: bool) -> None:
        self.ask("train_mode" if training else "eval_mode")

    def finish(self) -> None:
        self.last_loss = self.ask("finish")["loss"]

    def layer_pass(self) -> dict:
        return {name: tuple(t) for name, t in self.ask("layers")["times"].items()}


def runner_child(framework, args) -> None:
    """The child's side of ProcessRunner: build the runner, then serve commands from stdin."""
    device, torch, threads, _ = common.setup(args, torch_wanted=framework == "torch")
    images, labels = make_batch(args.variant, args.batch_size)
    if framework == "torch":
        runner = TorchRunner(args.variant, device, images, labels, AlexNet(num_classes=10, variant=args.variant))
        threads_used = torch.get_num_threads()
    else:
        runner = MinidlRunner(args.variant, device, images, labels)
        threads_used = cpu_threads.num_threads()

    actions = {"train": lambda: {"seconds": timed(runner.train_step)},
               "infer": lambda: {"seconds": timed(runner.infer)},
               "train_mode": lambda: runner.model.train() and {},
               "eval_mode": lambda: runner.model.eval() and {},
               "finish": lambda: runner.finish() or {"loss": runner.last_loss},
               "layers": lambda: {"times": layer_pass(runner)},
               "ready": lambda: {"threads": threads_used, "settings": threads,
                                 "version": torch.__version__ if torch is not None else None}}
    serve(actions)


# ---- speed ------------------------------------------------------------------------------
def measure_speed(runners, batch, warmup, iters, settle: float = SETTLE_S) -> dict:
    """Median train-step and inference times of each runner, timed in alternation."""
    for r in runners:
        r.set_training(True)
    log = lambda text: print(text, flush=True)  # noqa: E731
    log("train steps:")
    train = time_alternating([(r.name, r.train_step) for r in runners], warmup, iters, log, settle)
    for r in runners:
        r.finish()
        r.set_training(False)
    log("inference:")
    infer = time_alternating([(r.name, r.infer) for r in runners], warmup, iters, log, settle)
    out = {}
    for r in runners:
        t, i = median(train[r.name]), median(infer[r.name])
        out[r.name] = {"train_step_s": t, "train_images_per_s": batch / t, "train_times_s": train[r.name],
                       "infer_s": i, "infer_images_per_s": batch / i, "infer_times_s": infer[r.name],
                       "final_train_loss": r.last_loss}
    return out


# ---- peak memory (one child process per framework) -------------------------------------
def memory_child(framework, args) -> dict:
    """Runs in a child process: setup, inference, then training; reports peak bytes of each phase."""
    device = backend.parse_device(args.device)
    torch = common.torch_or_none() if framework == "torch" else None
    if args.threads:
        common.set_threads(args.threads, torch)
    if device.type == "cuda":
        common.precision_settings(device, args.tf32, torch)
    images, labels = make_batch(args.variant, args.batch_size)
    if device.type == "cuda":
        tracker = cuda_peak_tracker(framework, device)
    base = current_rss()
    runner = (TorchRunner if framework == "torch" else MinidlRunner)(args.variant, device, images, labels)
    sync(device)
    result = {"method": "cuda allocator high-water mark" if device.type == "cuda" else "VmHWM - RSS after imports",
              "setup_bytes": (current_rss() - base) if device.type == "cpu" else tracker()[0]}
    runner.model.eval()
    reset_ok = reset_peak()
    for _ in range(2):
        runner.infer()
    if device.type == "cpu":
        result["infer_peak_bytes"] = peak_rss(reset_ok) - base
    runner.model.train()
    reset_ok = reset_peak()
    for _ in range(3):
        runner.train_step()
    if device.type == "cpu":
        result["train_peak_bytes"] = peak_rss(reset_ok) - base
        result["peak_reset"] = reset_ok
    else:  # on the GPU the train phase includes the inference one: weights + activations + grads
        result["train_peak_bytes"], result["reserved_peak_bytes"] = tracker()
    return result


def measure_memory(framework, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", framework, "--device", args.device,
           "--batch-size", str(args.batch_size), "--variant", args.variant, "--threads", str(args.threads)]
    if args.tf32:
        cmd.append("--tf32")
    return run_memory_child(cmd[1:], args.memory_timeout)


# ---- command line -------------------------------------------------------------------------
def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--variant", default="seed", choices=sorted(INPUT_SIZE), help="AlexNet variant (default seed)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    p.add_argument("--iters", type=int, default=7, help="timed rounds (default 7)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument("--settle", type=float, default=SETTLE_S,
                   help=f"seconds of idleness before each case's calls (default {SETTLE_S}; 0: none); each timed "
                   f"call follows {LEAD_IN_S} s of untimed calls of its case")
    p.add_argument("--per-layer", action="store_true", help="also time every layer's forward and backward")
    p.add_argument("--per-layer-iters", type=int, default=3, help="timed rounds of the per-layer breakdown")
    p.add_argument("--tf32", action="store_true", help="GPU: allow TF32 matrix products on both sides")
    p.add_argument("--skip-torch", action="store_true", help="time minidl only")
    p.add_argument("--skip-memory", action="store_true", help="skip the peak-memory child processes")
    common.add_threads_argument(p, default=0)
    p.add_argument("--memory-timeout", type=float, default=600, help="seconds allowed per memory child")
    p.add_argument("--json", help="output file (default benchmarks/results/alexnet_<device>.json)")
    p.add_argument("--memory-child", choices=["minidl", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--runner-child", choices=["minidl", "torch"], help=argparse.SUPPRESS)
    return p


def run(args) -> dict:
    """Run the benchmark, print the tables, write and return the JSON payload."""
    device = backend.parse_device(args.device)
    has_torch = common.torch_or_none(args.skip_torch, import_it=False)
    runners = [ProcessRunner("minidl", args)] + ([ProcessRunner("torch", args)] if has_torch else [])
    try:
        return _run(args, device, runners)
    finally:
        for r in runners:
            r.close()


def _run(args, device, runners) -> dict:
    threads = {r.name: r.info["threads"] for r in runners}
    how = "each at its own default" if not args.threads else f"both set to {args.threads}"
    threads_text = f"{', '.join(f'{n} {t}' for n, t in threads.items())} ({how})"
    precision = common.precision_settings(device, args.tf32, None)
    payload = {"benchmark": "alexnet", "device": str(device), "variant": args.variant,
               "batch_size": args.batch_size, "warmup": args.warmup, "iters": args.iters, "lr": LR,
               "momentum": MOMENTUM, "precision": precision, "threads": threads_text,
               "processes": "one child process per framework, alternating rounds",
               "machine": common.machine_info(device)}
    if len(runners) > 1:
        payload["machine"]["torch"] = runners[1].info["version"]
        payload["machine"]["torch_threads"] = runners[1].info["threads"]
    print(f"AlexNet '{args.variant}' batch {args.batch_size} on {device}: {args.warmup} warmup + {args.iters} "
          f"timed alternating rounds, medians; each framework in its own process; threads: {threads_text}; "
          f"precision {precision}")
    speed = measure_speed(runners, args.batch_size, args.warmup, args.iters, args.settle)
    payload["speed"] = speed
    if len(runners) > 1:
        payload["ratio_minidl_over_torch"] = {
            "train": speed["minidl"]["train_images_per_s"] / speed["torch"]["train_images_per_s"],
            "infer": speed["minidl"]["infer_images_per_s"] / speed["torch"]["infer_images_per_s"]}
        # Each round times minidl and then torch back to back, so the per-round ratio
        # cancels the machine's slow drifts (other tenants); its median is a second opinion.
        payload["paired_ratio_minidl_over_torch"] = {
            phase: median([t / m for m, t in zip(speed["minidl"][f"{phase}_times_s"],
                                                 speed["torch"][f"{phase}_times_s"])])
            for phase in ("train", "infer")}
    if not args.skip_memory:
        payload["memory"] = {r.name: measure_memory(r.name, args) for r in runners}
    print(summary_table(payload))
    if args.per_layer:
        rows = measure_per_layer(runners, 1, args.per_layer_iters)
        payload["per_layer"] = rows
        print(f"\nper-layer breakdown (median of {args.per_layer_iters}; layers run one at a time, "
              "training mode; conv1 computes no input gradient):")
        print(per_layer_table(rows, len(runners) > 1))
    payload["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    path = common.write_json(args.json or common.default_json("alexnet", device), payload)
    print(f"wrote {path}")
    return payload


def summary_table(payload) -> str:
    speed, memory = payload["speed"], payload.get("memory", {})
    rows = []
    for fw, s in speed.items():
        mem = memory.get(fw, {})
        peak = mem.get("train_peak_bytes")
        rows.append([fw, s["train_images_per_s"], 1e3 * s["train_step_s"], s["infer_images_per_s"],
                     1e3 * s["infer_s"], peak / 2**20 if peak is not None else mem.get("error", "-")])
    text = format_table(["framework", "train img/s", "train ms", "infer img/s", "infer ms", "peak MiB"], rows)
    ratio = payload.get("ratio_minidl_over_torch")
    if ratio:
        text += f"\nminidl/PyTorch speed: train {ratio['train']:.2f}x, inference {ratio['infer']:.2f}x"
        paired = payload.get("paired_ratio_minidl_over_torch")
        if paired:
            text += f" (median of per-round ratios: train {paired['train']:.2f}x, inference {paired['infer']:.2f}x)"
        peaks = [memory.get(fw, {}).get("train_peak_bytes") for fw in ("minidl", "torch")]
        if None not in peaks and peaks[1]:
            text += f"; peak memory minidl/PyTorch {peaks[0] / peaks[1]:.2f}x"
    return text


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.memory_child:
        common.prepare_tf32_env(args.tf32)
        print(json.dumps(memory_child(args.memory_child, args)))
        return 0
    if args.runner_child:
        runner_child(args.runner_child, args)
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
