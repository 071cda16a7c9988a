"""What a training step's memory is made of: what backward keeps, per op and per layer, beside the measured peak.

    python benchmarks/memory_peak.py --model resnet18 --batch-size 32
    python benchmarks/memory_peak.py --model alexnet --variant seed --batch-size 32 --json out.json

Issue 19 asks what makes minidl's training peaks. In this one process: one warm-up step
(so the optimizer's state exists), then the forward and loss of a second step. Before
its backward the graph is walked and every array a Function holds for backward (its
attributes and its fast kernel's) is counted once, by the memory block it views (a
ReLU's output that the next convolution keeps too counts once, for the first function
backward meets). Each array is charged to its op ("Conv2d [winograd F(4x4, 3x3)]") and
to the layer that made it: the innermost module whose call created the Function.
Parameters and the optimizer's state are counted beside.

That count is what is alive when backward starts (the previous step's gradients went
at ``zero_grad``). Backward then makes the gradients (their total is printed) while it
frees activations, so the step's peak lies in backward, above the count by the
gradients made by then, the work buffers of the kernels running at that moment and
the allocator's own keeping. The measured peak (VmHWM minus the resident size after
setup, as bench_models.py measures it, over two whole steps) is printed beside.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import numpy as np

import common
from common import format_table, write_json
from frameworks import MODELS, MinidlRunner, make_batch, model_spec
from processes import current_rss, phase_peak

import minidl.functional as F
from minidl import autograd, backend, backprop
from minidl.nn.module import Module

MIB = 2 ** 20


def _arrays(value, out: list, depth: int = 0) -> list:
    """The NumPy arrays in ``value``: itself, in tuples, lists and dicts, and in a kernel object's attributes."""
    if isinstance(value, np.ndarray):
        out.append(value)
    elif isinstance(value, (tuple, list)):
        for v in value:
            _arrays(v, out, depth)
    elif isinstance(value, dict):
        for v in value.values():
            _arrays(v, out, depth)
    elif depth == 0 and type(value).__module__.startswith("minidl.kernels"):
        _arrays(vars(value), out, depth + 1)        # a FastPath's kernel keeps what backward needs
    return out


def block_of(array: np.ndarray) -> np.ndarray:
    """The array that owns the memory ``array`` views."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


class LayerTags:
    """``with LayerTags(model) as tags:`` names each Function made inside by its innermost module."""

    def __init__(self, model):
        self.names = {id(m): name or "(model)" for name, m in model.named_modules()}
        self.stack, self.layer_of = [], {}

    def __enter__(self):
        tags, module_call, function_call = self, Module.__call__, autograd.Function.__call__

        def call_module(module, *args, **kwargs):
            tags.stack.append(tags.names.get(id(module), type(module).__name__))
            try:
                return module_call(module, *args, **kwargs)
            finally:
                tags.stack.pop()

        def call_function(fn, *inputs):
            tags.layer_of[id(fn)] = tags.stack[-1] if tags.stack else "(outside modules)"
            return function_call(fn, *inputs)
        self._undo = [(Module, "__call__", module_call), (autograd.Function, "__call__", function_call)]
        Module.__call__, autograd.Function.__call__ = call_module, call_function
        return self

    def __exit__(self, *exc):
        for owner, name, original in self._undo:
            setattr(owner, name, original)


def saved_for_backward(loss, layer_of: dict, exclude: set) -> list:
    """[(layer, op, bytes)] of every memory block the graph under ``loss`` keeps, each once, in backward's order."""
    rows, seen = [], set(exclude)
    for fn in backprop.topological_order(loss):
        op = getattr(fn, "label", type(fn).__name__)
        kept = {k: v for k, v in vars(fn).items() if k != "inputs"}
        for array in _arrays(kept, []):
            block = block_of(array)
            if id(block) not in seen:
                seen.add(id(block))
                rows.append((layer_of.get(id(fn), "(unknown)"), op, block.nbytes))
    return rows


def measure(spec, batch: int) -> dict:
    """The step's memory by kind, by op and by layer, and its measured peak (bytes)."""
    runner = MinidlRunner(spec, backend.CPU, *make_batch(spec, batch))
    base = current_rss()
    peak = phase_peak(runner.train_step, 2, base)      # the second step runs with the optimizer's state
    params = list(runner.model.parameters())
    state = [a for a in _arrays(getattr(runner.optimizer, "state", {}), []) if a.size > 1]
    gradients = sum(p.grad.data.nbytes for p in params if p.grad is not None)
    kinds = {"parameters": sum(p.data.nbytes for p in params),
             "optimizer state": sum(block_of(a).nbytes for a in state)}
    runner.optimizer.zero_grad()
    with LayerTags(runner.model) as tags:
        loss = F.softmax_cross_entropy(runner.model(runner.x), runner.labels)
    exclude = {id(block_of(p.data)) for p in params} | {id(block_of(a)) for a in state}
    rows = saved_for_backward(loss, tags.layer_of, exclude)
    by_op, by_layer = defaultdict(int), defaultdict(int)
    for layer, op, nbytes in rows:
        by_op[op] += nbytes
        by_layer[layer] += nbytes
    kinds["saved for backward"] = sum(by_op.values())
    loss.backward()                      # frees the graph the walk looked at
    return {"model": spec.name, "batch": batch, "kinds": kinds, "counted": sum(kinds.values()),
            "gradients": gradients, "measured_peak": peak, "by_op": dict(by_op), "by_layer": dict(by_layer)}


def report(result: dict, top: int = 12) -> str:
    mib = lambda b: f"{b / MIB:,.1f}"   # noqa: E731
    lines = [f"{result['model']}, batch {result['batch']}: what a training step keeps (MiB)"]
    lines.append(format_table(["kind", "MiB"], [[k, mib(v)] for k, v in result["kinds"].items()]
                              + [["counted: alive when backward starts", mib(result["counted"])],
                                 ["gradients (made during backward)", mib(result["gradients"])],
                                 ["measured peak of a step (VmHWM above setup)", mib(result["measured_peak"])]]))
    for title, table in (("saved for backward, by op", result["by_op"]), ("by layer", result["by_layer"])):
        ranked = sorted(table.items(), key=lambda kv: -kv[1])
        shown = ranked[:top] + ([(f"({len(ranked) - top} more)", sum(v for _, v in ranked[top:]))]
                                if len(ranked) > top else [])
        lines += ["", title, format_table(["", "MiB"], [[k, mib(v)] for k, v in shown])]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="alexnet")
    parser.add_argument("--variant", default="seed", help="AlexNet's variant (default seed)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="minidl's worker threads (default: its own)")
    parser.add_argument("--top", type=int, default=12, help="rows shown per table")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    try:
        spec = model_spec(args.model, args.variant)
    except ValueError as exc:
        print(f"memory_peak: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        common.set_threads(args.threads)
    result = measure(spec, args.batch_size)
    print(report(result, args.top))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
