#!/usr/bin/env python3
"""Training and inference speed, peak memory and GEMM-peak fraction: minidl against PyTorch and ONNX Runtime.

    python benchmarks/bench_models.py --model alexnet --variant cifar --batch-size 128 --against torch,onnxruntime
    python benchmarks/bench_models.py --model resnet20 --batch-size 128 --against torch,onnxruntime
    python benchmarks/bench_models.py --model resnet18 --batch-size 32 --iters 5

What runs (benchmarks/frameworks.py), each framework in a child process of its own at
its own default threads (``--threads N`` sets every one to N), on one batch of random
float32 images, in alternating rounds (``--warmup`` untimed, then ``--iters`` timed):
  train step  minidl and PyTorch (the same network with minidl's weights): zero_grad,
              forward, softmax cross-entropy, backward, SGD (lr 0.001, momentum 0.9)
  inference   minidl plain (eval mode under no_grad), minidl fused
              (``nn.fuse_for_inference``), PyTorch (eval, no_grad) and ONNX Runtime on
              minidl's own ONNX export of the unfused model (CPU provider, default
              session options and threads)
Medians as images/s; speed ratios both as the ratio of the medians and as the median
of the per-round ratios (each round times every framework back to back, so slow drifts
of a shared machine cancel). Peak memory per framework and phase in separate processes
(benchmarks/processes.py: VmHWM minus the resident size after the imports).

The yardstick (benchmarks/yardstick.py): the machine's float32 GEMM peak (a
``--gemm-size`` cube product in NumPy/OpenBLAS at minidl's threads, in minidl's split
product and in torch, each in its own process; the best of them is the peak), and the
step's dense-equivalent FLOPs per image (FlopCounterMode on the torch twin: every
convolution as if done directly); each throughput is printed as a fraction of the peak.

The breakdown (benchmarks/breakdown.py, its own child process, minidl only): per layer
and by category (GEMMs, transforms and copies, element-wise passes, Python) of the
train step and of plain and fused inference; its docstring has the method.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (puts the repo root on sys.path)
import report  # noqa: E402
import yardstick  # noqa: E402
from common import LEAD_IN_S, SETTLE_S, median, time_alternating  # noqa: E402
from frameworks import (MODELS, MinidlRunner, OnnxRuntimeRunner, TorchRunner, export_onnx, make_batch,  # noqa: E402
                        model_spec)
from processes import (ChildProcess, cuda_peak_tracker, current_rss, phase_peak, run_memory_child, serve,  # noqa: E402
                       timed)

from minidl import backend  # noqa: E402
from minidl.kernels.cpu import threads as cpu_threads  # noqa: E402
from minidl.models.alexnet import INPUT_SIZE  # noqa: E402

AGAINST = ("torch", "onnxruntime")
SCRIPT = Path(__file__).resolve()
# (faster?, than whom, phase) pairs whose speed ratio is reported
PAIRS = (("minidl", "torch", "train"), ("minidl", "torch", "infer"), ("minidl_fused", "torch", "infer"),
         ("minidl", "onnxruntime", "infer"), ("minidl_fused", "onnxruntime", "infer"))


def _spec(args):
    return model_spec(args.model, args.variant, args.num_classes)


def _child_argv(args, *extra) -> list:
    argv = [SCRIPT, "--model", args.model, "--variant", args.variant, "--batch-size", args.batch_size,
            "--device", args.device, "--threads", args.threads] + list(extra)
    argv += ["--num-classes", args.num_classes] if args.num_classes else []
    argv += ["--onnx", args.onnx] if args.onnx else []
    return argv + (["--tf32"] if args.tf32 else [])


# ---- the children ---------------------------------------------------------------------------
def runner_child(framework: str, args) -> None:
    """Build ``framework``'s runner, then serve the parent's commands (processes.serve)."""
    device, torch, threads, _ = common.setup(args, torch_wanted=framework == "torch")
    spec = _spec(args)
    images, labels = make_batch(spec, args.batch_size)
    if framework == "onnxruntime":
        runner = OnnxRuntimeRunner(args.onnx, images, args.threads)
        ready = {"threads": runner.threads, "version": runner.onnxruntime.__version__}
        serve({"infer": lambda: {"seconds": timed(runner.infer)}, "ready": lambda: ready})
        return
    if framework == "torch":
        runner = TorchRunner(spec, device, images, labels)
        ready = {"threads": torch.get_num_threads(), "version": torch.__version__, "settings": threads}
    else:
        runner = MinidlRunner(spec, device, images, labels)
        ready = {"threads": cpu_threads.num_threads(), "settings": threads}
    actions = {"train": lambda: {"seconds": timed(runner.train_step)},
               "infer": lambda: {"seconds": timed(runner.infer)},
               "train_mode": lambda: runner.model.train() and {},
               "eval_mode": lambda: runner.model.eval() and {},
               "finish": lambda: {"loss": runner.last_loss()},
               "ready": lambda: ready}
    if framework == "torch":
        actions["flops"] = runner.dense_flops
    else:
        actions["infer_fused"] = lambda: {"seconds": timed(runner.infer_fused)}
        actions["fusion"] = runner.fusion
    serve(actions)


def memory_child(framework: str, args) -> dict:
    """Peak bytes of each phase of ``framework`` (minidl, minidl_fused, torch, onnxruntime), in this process.

    minidl and torch: setup, 2 inferences, then 3 train steps. minidl_fused: the fused
    model alone (the unfused one dropped before the phase), 2 inferences. onnxruntime:
    the session, 2 inferences.
    """
    device = backend.parse_device(args.device)
    torch = common.torch_or_none() if framework == "torch" else None
    if framework == "onnxruntime":
        import onnxruntime  # noqa: F401  (a library: loaded before the base line)
    if args.threads:
        common.set_threads(args.threads, torch)
    if device.type == "cuda":
        common.precision_settings(device, args.tf32, torch)
    spec = _spec(args)
    images, labels = make_batch(spec, args.batch_size)
    tracker = cuda_peak_tracker(framework, device) if device.type == "cuda" else None
    base = current_rss()
    if framework == "onnxruntime":
        runner = OnnxRuntimeRunner(args.onnx, images, args.threads)
    elif framework == "torch":
        runner = TorchRunner(spec, device, images, labels)
    else:
        runner = MinidlRunner(spec, device, images, labels)
        if framework == "minidl_fused":
            runner.fuse()
            runner.model = runner.optimizer = None   # deployed alone: only the fused weights stay
    common.sync(device)
    result = {"method": "cuda allocator high-water mark" if tracker else "VmHWM - RSS after imports",
              "setup_bytes": tracker()[0] if tracker else current_rss() - base}
    infer = runner.infer_fused if framework == "minidl_fused" else runner.infer

    def phase(fn, repeats):
        if tracker is None:
            return phase_peak(fn, repeats, base)
        for _ in range(repeats):
            fn()
        return None
    if framework in ("minidl", "torch"):
        runner.model.eval()
    result["infer_peak_bytes"] = phase(infer, 2)
    if framework in ("minidl", "torch"):
        runner.model.train()
        result["train_peak_bytes"] = phase(runner.train_step, 3)
    if tracker:   # on a GPU one high-water mark for everything (inference and training)
        result["peak_bytes"], result["reserved_peak_bytes"] = tracker()
    return result


def profile_child(args) -> dict:
    """The breakdown (breakdown.py) of minidl's train step, plain and fused inference, in this process."""
    from breakdown import profile_phase
    device, _, _, _ = common.setup(args, torch_wanted=False)
    spec = _spec(args)
    runner = MinidlRunner(spec, device, *make_batch(spec, args.batch_size))
    for _ in range(2):   # warm up: first-touch of the work buffers, the worker threads
        runner.train_step()
    phases = {"train": profile_phase(runner.train_step, runner.model, runner.optimizer, args.breakdown_steps)}
    runner.model.eval()
    for _ in range(2):
        runner.infer_fused()   # the first builds the fused model
        runner.infer()
    phases["infer"] = profile_phase(runner.infer, runner.model, None, args.breakdown_steps)
    phases["infer_fused"] = profile_phase(runner.infer_fused, runner.fused, None, args.breakdown_steps)
    return {"steps": args.breakdown_steps, "threads": cpu_threads.num_threads(), "phases": phases}


# ---- the parent ----------------------------------------------------------------------------
class Runner(ChildProcess):
    def __init__(self, framework, args):
        super().__init__(framework, _child_argv(args, "--runner-child", framework), who="bench_models")


def measure_speed(children: dict, batch: int, warmup: int, iters: int, settle: float = SETTLE_S) -> dict:
    """Median times of every framework and phase, timed in alternating rounds (children by name)."""
    log = lambda text: print(text, flush=True)  # noqa: E731
    trainers = [n for n in ("minidl", "torch") if n in children]
    for n in trainers:
        children[n].ask("train_mode")
    log("train steps:")
    train = time_alternating([(n, lambda c=children[n]: c.seconds("train")) for n in trainers], warmup, iters, log,
                             settle)
    losses = {n: children[n].ask("finish")["loss"] for n in trainers}
    for n in trainers:
        children[n].ask("eval_mode")
    cases = [("minidl", lambda: children["minidl"].seconds("infer")),
             ("minidl_fused", lambda: children["minidl"].seconds("infer_fused"))]
    cases += [(n, lambda c=children[n]: c.seconds("infer")) for n in ("torch", "onnxruntime") if n in children]
    log("inference:")
    infer = time_alternating(cases, warmup, iters, log, settle)
    out = {}
    for name, times in infer.items():
        i = median(times)
        out[name] = {"infer_s": i, "infer_images_per_s": batch / i, "infer_times_s": times}
        if name in train:
            t = median(train[name])
            out[name].update(train_step_s=t, train_images_per_s=batch / t, train_times_s=train[name],
                             final_train_loss=losses[name])
    return out


def speed_ratios(speed: dict) -> dict:
    """"a/b" -> phase -> {"of_medians", "paired"}: a's speed over b's (> 1: a is faster), same rounds."""
    out = {}
    for a, b, phase in PAIRS:
        if a in speed and b in speed and f"{phase}_times_s" in speed[a] and f"{phase}_times_s" in speed[b]:
            ta, tb = speed[a][f"{phase}_times_s"], speed[b][f"{phase}_times_s"]
            out.setdefault(f"{a}/{b}", {})[phase] = {
                "of_medians": speed[a][f"{phase}_images_per_s"] / speed[b][f"{phase}_images_per_s"],
                "paired": median([y / x for x, y in zip(ta, tb)])}
    return out


def gemm_peaks(args, has_torch: bool) -> dict:
    """GEMM peak children (yardstick.py), one per kind; {"numpy": ..., "minidl": ..., "torch": ..., "peak_gflops"}."""
    out = {}
    for kind in ("numpy", "minidl") + (("torch",) if has_torch else ()):
        out[kind] = run_memory_child([Path(yardstick.__file__), "--kind", kind, "--size", args.gemm_size,
                                      "--iters", args.gemm_iters, "--threads", args.threads], args.memory_timeout)
    rates = {k: v["gflops"] for k, v in out.items() if "gflops" in v}
    if rates:
        best = max(rates, key=rates.get)
        out["peak_gflops"], out["peak_from"] = rates[best], best
    return out


def _available(against: list, device) -> tuple:
    """(frameworks to run, notes on the ones skipped)."""
    run, notes = [], []
    for name in against:
        if name == "torch" and importlib.util.find_spec("torch") is None:
            notes.append("PyTorch is not installed: skipped")
        elif name == "onnxruntime" and device.type != "cpu":
            notes.append("ONNX Runtime runs on the CPU provider only: skipped on " + str(device))
        elif name == "onnxruntime" and (importlib.util.find_spec("onnxruntime") is None
                                        or importlib.util.find_spec("onnx") is None):
            notes.append("onnx or onnxruntime is not installed: ONNX Runtime skipped")
        else:
            run.append(name)
    return run, notes


def run(args) -> dict:
    """Run the benchmark, print the tables, write and return the JSON payload."""
    device = backend.parse_device(args.device)
    spec = _spec(args)
    frameworks, notes = _available(args.against, device)
    with tempfile.TemporaryDirectory(prefix="bench_models_") as tmp:
        if "onnxruntime" in frameworks:
            args.onnx = str(Path(tmp) / f"{spec.name}.onnx")
            error = export_onnx(spec, args.onnx)
            if error:
                notes.append(f"minidl.onnx.export failed, ONNX Runtime skipped: {error}")
                frameworks.remove("onnxruntime")
                args.onnx = None
        for note in notes:
            print(note, flush=True)
        children = {}
        try:
            for name in ["minidl"] + frameworks:
                children[name] = Runner(name, args)
            return _run(args, device, spec, children, notes)
        finally:
            for child in children.values():
                child.close()


def _run(args, device, spec, children, notes) -> dict:
    threads = {n: c.info["threads"] for n, c in children.items()}
    how = "each at its own default" if not args.threads else f"all set to {args.threads}"
    threads_text = f"{', '.join(f'{n} {t}' for n, t in threads.items())} ({how})"
    payload = {"benchmark": "models", "model": args.model, "network": spec.name, "variant": spec.variant,
               "num_classes": spec.classes, "input_shape": [3, spec.input_size, spec.input_size],
               "device": str(device), "batch_size": args.batch_size, "warmup": args.warmup, "iters": args.iters,
               "settle_s": args.settle, "lead_in_s": LEAD_IN_S,
               "against": list(c for c in children if c != "minidl"), "notes": notes,
               "precision": common.precision_settings(device, args.tf32, None), "threads": threads_text,
               "processes": "one child process per framework, alternating rounds",
               "machine": common.machine_info(device),
               "versions": {n: c.info.get("version") for n, c in children.items() if c.info.get("version")}}
    print(f"{spec.name} batch {args.batch_size} on {device}: {args.warmup} warmup + {args.iters} timed alternating "
          f"rounds, medians; each framework in its own process; threads: {threads_text}", flush=True)
    payload["speed"] = speed = measure_speed(children, args.batch_size, args.warmup, args.iters, args.settle)
    payload["ratios"] = speed_ratios(speed)
    payload["fusion"] = children["minidl"].ask("fusion")
    if "torch" in children:
        payload["flops"] = children["torch"].ask("flops")
    if not args.skip_memory:
        payload["memory"] = {fw: run_memory_child(_child_argv(args, "--memory-child", fw), args.memory_timeout)
                             for fw in ["minidl", "minidl_fused"] + [c for c in children if c != "minidl"]}
    if args.gemm_size and device.type == "cpu":
        payload["gemm_peak"] = peaks = gemm_peaks(args, "torch" in children)
        if "flops" in payload and "peak_gflops" in peaks:
            payload["fraction_of_gemm_peak"] = yardstick.fractions(speed, payload["flops"], peaks["peak_gflops"])
    print(report.summary(payload))
    if args.breakdown_steps and device.type == "cpu":
        payload["breakdown"] = run_memory_child(_child_argv(args, "--profile-child"), args.memory_timeout)
        print(report.breakdown(payload["breakdown"], args.top))
    payload["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    path = common.write_json(args.json or common.RESULTS_DIR / f"models_{spec.name}_b{args.batch_size}_"
                             f"{str(device).replace(':', '')}.json", payload)
    print(f"wrote {path}")
    return payload


# ---- command line -------------------------------------------------------------------------
def _against(text: str) -> list:
    names = [] if text in ("", "none") else [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in AGAINST]
    if unknown:
        raise argparse.ArgumentTypeError(f"--against takes a comma list of {AGAINST} (or none), got {unknown}")
    return names


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="alexnet", choices=MODELS, help="the network (default alexnet)")
    p.add_argument("--variant", default="seed", choices=sorted(INPUT_SIZE), help="AlexNet's variant (default seed)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="logits (default 10, and 1000 for resnet18/resnet34 as torchvision's)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    p.add_argument("--against", type=_against, default=["torch"],
                   help="comma list of torch, onnxruntime, or none (default torch)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--iters", type=int, default=7, help="timed rounds (default 7)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument("--settle", type=float, default=SETTLE_S,
                   help=f"seconds of idleness before each case's calls, so that no framework's spinning threads "
                   f"run into the next one's (default {SETTLE_S}; 0: none); each timed call follows "
                   f"{LEAD_IN_S} s of untimed calls of its case")
    common.add_threads_argument(p, default=0)
    p.add_argument("--tf32", action="store_true", help="GPU: allow TF32 matrix products on both sides")
    p.add_argument("--skip-memory", action="store_true", help="skip the peak-memory child processes")
    p.add_argument("--gemm-size", type=int, default=2048, help="GEMM peak: n of the n^3 product (0: skip)")
    p.add_argument("--gemm-iters", type=int, default=5, help="GEMM peak: timed products (median)")
    p.add_argument("--breakdown-steps", type=int, default=3,
                   help="profiled steps of minidl's per-layer, per-category breakdown (0: skip)")
    p.add_argument("--top", type=int, default=10, help="rows of the breakdown shown (all are in the JSON)")
    p.add_argument("--memory-timeout", type=float, default=600, help="seconds allowed per helper child process")
    p.add_argument("--json", help="output file (default benchmarks/results/models_<network>_b<batch>_<device>.json)")
    p.add_argument("--onnx", help=argparse.SUPPRESS)
    p.add_argument("--runner-child", choices=["minidl", "torch", "onnxruntime"], help=argparse.SUPPRESS)
    p.add_argument("--memory-child", choices=["minidl", "minidl_fused", "torch", "onnxruntime"],
                   help=argparse.SUPPRESS)
    p.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.memory_child or args.profile_child:
        import json
        common.prepare_tf32_env(args.tf32)
        print(json.dumps(memory_child(args.memory_child, args) if args.memory_child else profile_child(args)))
        return 0
    if args.runner_child:
        runner_child(args.runner_child, args)
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
