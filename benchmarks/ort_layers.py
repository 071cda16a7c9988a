"""Inference layer by layer: minidl's fused model against ONNX Runtime's own profile of the same network.

    python benchmarks/ort_layers.py --model alexnet --variant cifar --batch-size 128
    python benchmarks/ort_layers.py --model resnet20 --batch-size 128 --json benchmarks/results/ort_layers_resnet20.json

Issue 19 asks why ONNX Runtime's inference is faster than minidl's, with measurements. Both
sides run the same network at the same batch in this one process, in alternating rounds:

* minidl: ``nn.fuse_for_inference`` of the model (what ``evaluate`` and ``predict`` run),
  under ``no_grad``; every leaf module's ``forward`` is wrapped with a timer, so a layer's
  time is its whole call (kernel, Python, Tensor wrapping). What the leaves do not cover
  (the residual additions in a block's own forward, the model's glue) is the row "(rest)".
* ONNX Runtime: minidl's ONNX export of the unfused model, an InferenceSession on the CPU
  provider with default options (its graph rewrites on) and ``enable_profiling``; its JSON
  trace gives every node's kernel time per run. Its rewrites rename and merge nodes
  (batch norm folded, ReLU fused into the convolution, blocked "NCHWc" layouts with their
  reorder nodes), so the nodes are listed as they ran.

The two lists are put side by side by category (convolution, pooling, dense, layout
changes, element-wise, rest) and convolution by convolution in order (the k-th
convolution of each; the rewrites keep every convolution a node of its own). Medians over
the rounds. The timers and the profiler cost a few microseconds per layer or node; the
unprofiled whole-batch times are printed beside the sums.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np

import common
from common import format_table, median, write_json
from frameworks import MODELS, build_minidl, export_onnx, make_batch, model_spec
import minidl
from minidl import backend, nn

CATEGORIES = ("conv", "pool", "dense", "layout", "element-wise", "rest")
ORT_CATEGORY = {"Conv": "conv", "FusedConv": "conv", "NchwcConv": "conv", "QLinearConv": "conv",
                "MaxPool": "pool", "NchwcMaxPool": "pool", "AveragePool": "pool", "NchwcAveragePool": "pool",
                "GlobalAveragePool": "pool", "GlobalMaxPool": "pool", "NchwcGlobalAveragePool": "pool",
                "NchwcGlobalMaxPool": "pool", "Gemm": "dense", "FusedGemm": "dense", "MatMul": "dense",
                "FusedMatMul": "dense", "ReorderInput": "layout", "ReorderOutput": "layout", "Flatten": "layout",
                "Reshape": "layout", "Transpose": "layout", "Pad": "layout", "Concat": "layout", "Slice": "layout"}


def minidl_category(module) -> str:
    """The category of a minidl leaf module, by what its class is."""
    name = type(module).__name__
    if "Conv" in name:
        return "conv"
    if "Pool" in name:
        return "pool"
    if "Linear" in name:
        return "dense"
    if name in ("Flatten", "Identity", "ZeroPadShortcut") or "Pad" in name:
        return "layout"
    return "element-wise"


class TimedLeaves:
    """Wraps the ``forward`` of every leaf module of ``model`` with a timer; ``times`` holds this round's."""

    def __init__(self, model):
        self.leaves = [(name, m) for name, m in model.named_modules() if name and not list(m.children())]
        self.times = {}
        for name, module in self.leaves:
            module.forward = self._timed(name, module.forward)

    def _timed(self, name, forward):
        def run(*args, **kwargs):
            start = time.perf_counter()
            out = forward(*args, **kwargs)
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start
            return out
        return run


def ort_node_times(profile_path, runs_to_skip: int) -> tuple[list, dict]:
    """(nodes in execution order as (name, op), {name: [seconds per run]}) from an ONNX Runtime trace.

    The first ``runs_to_skip`` runs (warm-up) are left out. Kernel times are the "Node"
    events named ``<node>_kernel_time``, in time order; a run begins where the first node
    of the graph comes round again.
    """
    with open(profile_path) as f:
        events = json.load(f)
    order, times, run = [], defaultdict(list), -1
    for event in sorted(events, key=lambda e: e.get("ts", 0)):
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        name = event["name"][:-len("_kernel_time")]
        if not order or name == order[0][0]:
            run += 1        # the first node again: a new run begins
        if run == 0:
            order.append((name, event.get("args", {}).get("op_name", "?")))
        if run >= runs_to_skip:
            times[name].append(event["dur"] * 1e-6)
    return order, dict(times)


def by_category(rows) -> dict:
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for category, seconds in rows:
        totals[category] += seconds
    return totals


def measure(spec, batch: int, warmup: int, iters: int) -> dict:
    import onnxruntime
    images, _ = make_batch(spec, batch)
    model = build_minidl(spec).eval()
    fused = nn.fuse_for_inference(model)
    timed = TimedLeaves(fused)
    x = minidl.tensor(images)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        error = export_onnx(spec, path)
        if error is not None:
            raise RuntimeError(f"ort_layers: the ONNX export failed: {error}")
        options = onnxruntime.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(images)}
        ours, ours_total, theirs_total = defaultdict(list), [], []
        for i in range(warmup + iters):   # alternating: minidl's batch, then ONNX Runtime's
            timed.times = {}
            start = time.perf_counter()
            with minidl.no_grad():
                fused(x)
            middle = time.perf_counter()
            session.run(None, feed)
            end = time.perf_counter()
            if i >= warmup:
                ours_total.append(middle - start)
                theirs_total.append(end - middle)
                for name, seconds in timed.times.items():
                    ours[name].append(seconds)
        order, node_times = ort_node_times(session.end_profiling(), warmup)
    modules = dict(timed.leaves)
    minidl_rows = [(name, type(modules[name]).__name__, minidl_category(modules[name]), median(ours[name]))
                   for name, _ in timed.leaves if name in ours]
    rest = median(ours_total) - sum(r[3] for r in minidl_rows)
    ort_rows = [(name, op, ORT_CATEGORY.get(op, "element-wise"), median(node_times[name]))
                for name, op in order if node_times.get(name)]
    ort_rest = median(theirs_total) - sum(r[3] for r in ort_rows)
    return {"model": spec.name, "batch": batch, "iters": iters, "minidl_batch_s": median(ours_total),
            "onnxruntime_batch_s": median(theirs_total), "minidl_layers": minidl_rows, "minidl_rest_s": rest,
            "onnxruntime_nodes": ort_rows, "onnxruntime_rest_s": ort_rest,
            "minidl_by_category": by_category([(r[2], r[3]) for r in minidl_rows] + [("rest", rest)]),
            "onnxruntime_by_category": by_category([(r[2], r[3]) for r in ort_rows] + [("rest", ort_rest)]),
            "onnxruntime": onnxruntime.__version__}


def report(result) -> str:
    ms = 1e3
    lines = [f"{result['model']}, batch {result['batch']}: minidl fused {result['minidl_batch_s'] * ms:.1f} ms, "
             f"ONNX Runtime {result['onnxruntime_batch_s'] * ms:.1f} ms per batch (medians of {result['iters']})", ""]
    ours, theirs = result["minidl_by_category"], result["onnxruntime_by_category"]
    rows = [(c, ours[c] * ms, theirs[c] * ms, ours[c] / theirs[c] if theirs[c] > 0 else float("nan"))
            for c in CATEGORIES]
    lines += [format_table(("category", "minidl ms", "ONNX Runtime ms", "minidl / ORT"), rows), ""]
    convs = [r for r in result["minidl_layers"] if r[2] == "conv"]
    ort_convs = [r for r in result["onnxruntime_nodes"] if r[2] == "conv"]
    rows = [(a[0], b[0][:28], b[1], a[3] * ms, b[3] * ms, a[3] / b[3] if b[3] > 0 else float("nan"))
            for a, b in zip(convs, ort_convs)]
    lines += [format_table(("minidl conv", "ONNX Runtime node", "op", "minidl ms", "ORT ms", "ratio"), rows)]
    if len(convs) != len(ort_convs):
        lines.append(f"(minidl has {len(convs)} convolutions, ONNX Runtime {len(ort_convs)}: paired in order)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="alexnet")
    parser.add_argument("--variant", default="cifar", help="AlexNet's variant (default cifar)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=7)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    try:
        spec = model_spec(args.model, args.variant)
        import onnxruntime  # noqa: F401
    except (ValueError, ImportError) as exc:
        print(f"ort_layers: {exc}", file=sys.stderr)
        return 2
    result = measure(spec, args.batch_size, args.warmup, args.iters)
    result["machine"] = common.machine_info(backend.parse_device("cpu"))
    print(report(result))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
