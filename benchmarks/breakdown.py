"""Where minidl's step goes, per layer and by category: GEMMs, transforms and copies, element-wise passes, Python.

Used by bench_models.py in a child process of its own (the patches below never touch
the processes that are timed against other frameworks). The method, approximate but
honest:

1. Per layer, exact wall time on the calling thread. ``Module.__call__``, every
   autograd ``Function``'s ``forward``/``backward``, ``Tensor.backward`` and the
   optimizer's ``step`` are wrapped with timers. A Function's kernel time is charged
   to the innermost module running when it was created (its backward too), e.g.
   ``layer1.0.conv1``; what a module's call takes beyond its sub-modules and kernels
   is that layer's Python cost (module call, graph recording, Tensor wrapping). The
   backward graph walk and the optimizer's loop beyond their kernels get rows of their
   own; "(step glue)" is the rest of the step (zero_grad, the loss's Python), so the
   rows add up to the profiled step exactly.
2. Within a kernel call (wall W), by category. ``np.matmul`` is wrapped and each call
   classified by the kernel function that makes it: the products of the convolutions
   (im2col, Winograd's per-tile products) and of the dense layers are GEMMs; Winograd's
   transforms (``winograd_transforms.sandwich``, small matrix products) are transforms;
   the row sums of batch norm and pooling are element-wise. The dense layers' split
   product (``threads.matmul``) counts as GEMM whole. minidl runs a kernel's batch
   slices on worker threads (``threads.parallel_map``): the region's wall time R is
   shared out in proportion to the thread-seconds of each category inside the slices
   (all threads), and the kernel's serial part (W - R) by what ran in it. What is left
   of W is the op's own category: transforms and copies for convolutions (im2col
   gathers, col2im adds, Winograd's data/output tile copies, layout changes; also the
   bias and ReLU epilogue, which is small) and for the copying ops (Pad, GetItem,
   Reshape/Flatten, Transpose, Concat); element-wise for everything else (batch norm,
   ReLU, pooling, Add, dropout, the loss, the SGD update, the dense layers' bias).

Known limits: the timers themselves cost a few microseconds per call (the profiled
step is reported beside an unprofiled one); the gradient sums where a tensor feeds two
layers (every residual block's input) are done by the graph walk itself, outside any
kernel, so they count in the walk's Python row; the split by thread-seconds assumes
a region's categories were spread evenly over its threads.
"""
from __future__ import annotations

import statistics
import sys
import threading
import time
from collections import defaultdict

import numpy as np

from minidl import autograd
from minidl.functional.fast_path import FastPath
from minidl.kernels.cpu import linear as cpu_linear
from minidl.kernels.cpu import sgd as cpu_sgd
from minidl.kernels.cpu import threads as cpu_threads
from minidl.nn.module import Module

CATEGORIES = ("gemm", "transforms", "elementwise", "python")
KERNEL_CATEGORIES = CATEGORIES[:3]
TRANSFORM_OPS = {"Conv2d", "Conv2dReLU", "Pad", "GetItem", "Reshape", "Transpose", "Concat", "Cast", "ToDevice"}
_TRANSFORM_CALLERS = ("winograd_transforms.py",)
_ELEMENTWISE_CALLERS = ("channel_passes.py", "average_pooling.py", "pooling.py", "activations.py")


def _all_subclasses(cls):
    out, todo = [], [cls]
    while todo:
        for sub in todo.pop().__subclasses__():
            out.append(sub)
            todo.append(sub)
    return out


class _KernelCall:
    """What happened inside one kernel call: matmul seconds by category, serial or in worker slices."""

    def __init__(self):
        self.serial = dict.fromkeys(KERNEL_CATEGORIES, 0.0)
        self.items = dict.fromkeys(KERNEL_CATEGORIES, 0.0)
        self.region_s = 0.0      # wall time of the parallel regions, on the calling thread
        self.item_s = 0.0        # thread-seconds inside the regions' slices, all threads
        self.whole_gemm = False  # inside threads.matmul: everything is GEMM already
        self.lock = threading.Lock()

    def split(self, wall: float, rest_category: str) -> dict:
        """The call's wall time shared out by category (module doc, point 2)."""
        out = dict(self.serial)
        if self.item_s > 0:
            for cat, seconds in self.items.items():
                out[cat] += self.region_s * seconds / self.item_s
        measured = sum(out.values())
        if measured > wall:   # timer noise: never more than the call took
            out = {cat: s * wall / measured for cat, s in out.items()}
            measured = wall
        out[rest_category] += wall - measured
        return out


class Profiler:
    """Per-layer, per-category seconds of what runs inside ``with Profiler(model):``.

    Args:
        model: the model whose module names label the rows.
    Attributes after use: ``rows`` (layer, pass) -> category -> s; ``ops`` (op label,
    pass) -> category -> s and "calls".
    """

    def __init__(self, model, optimizer=None):
        self.names = {}
        for name, module in model.named_modules():
            self.names.setdefault(id(module), name or "(model)")
        self.optimizer = optimizer
        self.rows = defaultdict(lambda: dict.fromkeys(CATEGORIES, 0.0))
        self.ops = defaultdict(lambda: dict(dict.fromkeys(KERNEL_CATEGORIES, 0.0), calls=0))
        self.frames = []          # [row, pass, seconds of what ran inside and was charged elsewhere]
        self.call = None          # the _KernelCall being measured
        self.local = threading.local()
        self.main = threading.main_thread()
        self._undo = []

    # ---- charging ---------------------------------------------------------------------
    def _frame(self, row, pass_, fn, *args, **kwargs):
        frame = [row, pass_, 0.0]
        self.frames.append(frame)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            wall = time.perf_counter() - start
            self.frames.pop()
            self.rows[(row, pass_)]["python"] += wall - frame[2]
            if self.frames:
                self.frames[-1][2] += wall

    def _kernel(self, row, pass_, label, op, fn, *args):
        call = self.call = _KernelCall()
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            wall = time.perf_counter() - start
            self.call = None
            split = call.split(wall, "transforms" if op in TRANSFORM_OPS else "elementwise")
            for cat, seconds in split.items():
                self.rows[(row, pass_)][cat] += seconds
                self.ops[(label, pass_)][cat] += seconds
            self.ops[(label, pass_)]["calls"] += 1
            if self.frames:
                self.frames[-1][2] += wall

    def _idle(self) -> bool:
        """True where nothing is charged: another thread, or inside a kernel already."""
        return self.call is not None or threading.current_thread() is not self.main

    # ---- the wrappers -----------------------------------------------------------------
    def _patch(self, owner, name, wrapper):
        self._undo.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)))
        setattr(owner, name, wrapper)

    def _wrap_function(self, cls, method, original):
        prof = self

        def wrapper(fn_self, *arrays, **kwargs):
            if prof._idle():
                return original(fn_self, *arrays, **kwargs)
            if method == "forward":
                row = prof.frames[-1][0] if prof.frames else "(outside modules)"
                fn_self.__dict__["_bench_row"] = row
            else:
                row = fn_self.__dict__.get("_bench_row", "(unknown)")
            op = fn_self.op if isinstance(fn_self, FastPath) else type(fn_self).__name__
            label = fn_self.label if isinstance(fn_self, FastPath) else f"{op} [reference]"
            return prof._kernel(row, method, label, op, lambda: original(fn_self, *arrays, **kwargs))
        return wrapper

    def __enter__(self):
        prof, local = self, self.local
        module_call = Module.__call__

        def call_module(module, *args, **kwargs):
            if prof._idle():
                return module_call(module, *args, **kwargs)
            row = prof.names.get(id(module), type(module).__name__)
            return prof._frame(row, "forward", module_call, module, *args, **kwargs)
        self._patch(Module, "__call__", call_module)

        for cls in _all_subclasses(autograd.Function):
            for method in ("forward", "backward"):
                if method in cls.__dict__:
                    self._patch(cls, method, self._wrap_function(cls, method, cls.__dict__[method]))

        tensor_backward = autograd.Tensor.backward

        def backward(tensor, *args, **kwargs):
            if prof._idle():
                return tensor_backward(tensor, *args, **kwargs)
            return prof._frame("(autograd backward walk)", "backward", tensor_backward, tensor, *args, **kwargs)
        self._patch(autograd.Tensor, "backward", backward)

        if self.optimizer is not None:
            step = type(self.optimizer).step

            def optimizer_step(optimizer, *args, **kwargs):
                if prof._idle():
                    return step(optimizer, *args, **kwargs)
                return prof._frame("optimizer step", "step", step, optimizer, *args, **kwargs)
            self._patch(type(self.optimizer), "step", optimizer_step)
            sgd_step = cpu_sgd.FusedSGD.step

            def fused_sgd(kernel, *args):
                if prof._idle():
                    return sgd_step(kernel, *args)
                return prof._kernel("optimizer step", "step", "SGD [fused]", "SGD", sgd_step, kernel, *args)
            self._patch(cpu_sgd.FusedSGD, "step", fused_sgd)

        matmul = np.matmul

        def timed_matmul(*args, **kwargs):
            call = prof.call
            if call is None or call.whole_gemm or getattr(local, "busy", False):
                return matmul(*args, **kwargs)
            caller = sys._getframe(1).f_code.co_filename
            cat = ("transforms" if caller.endswith(_TRANSFORM_CALLERS) else
                   "elementwise" if caller.endswith(_ELEMENTWISE_CALLERS) else "gemm")
            local.busy = True
            start = time.perf_counter()
            try:
                return matmul(*args, **kwargs)
            finally:
                seconds = time.perf_counter() - start
                local.busy = False
                with call.lock:
                    (call.items if getattr(local, "in_item", False) else call.serial)[cat] += seconds
        self._patch(np, "matmul", timed_matmul)

        parallel_map = cpu_threads.parallel_map

        def timed_parallel_map(fn, items):
            call = prof.call
            if call is None or call.whole_gemm or prof.call is None or threading.current_thread() is not prof.main \
                    or getattr(local, "in_item", False):
                return parallel_map(fn, items)

            def item(piece):
                local.in_item = True
                start = time.perf_counter()
                try:
                    return fn(piece)
                finally:
                    seconds = time.perf_counter() - start
                    local.in_item = False
                    with call.lock:
                        call.item_s += seconds
            start = time.perf_counter()
            try:
                return parallel_map(item, items)
            finally:
                call.region_s += time.perf_counter() - start
        self._patch(cpu_threads, "parallel_map", timed_parallel_map)

        split_matmul = cpu_linear.matmul

        def whole_gemm(a, b):
            call = prof.call
            if call is None or threading.current_thread() is not prof.main or getattr(local, "in_item", False):
                return split_matmul(a, b)
            call.whole_gemm = True
            start = time.perf_counter()
            try:
                return split_matmul(a, b)
            finally:
                call.whole_gemm = False
                call.serial["gemm"] += time.perf_counter() - start
        self._patch(cpu_linear, "matmul", whole_gemm)
        return self

    def __exit__(self, *exc):
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()
        return False


def profile_phase(step, model, optimizer, steps: int) -> dict:
    """Run ``step()`` ``steps`` times unprofiled, then ``steps`` times under a Profiler; per-step seconds.

    Returns:
        {"unprofiled_step_s" (median), "step_s" (profiled, mean), "categories" {cat: s},
         "rows" [{"layer", "pass", cat..., "total"}] (add up to step_s), "ops" [{"op", "pass",
         "calls", cat..., "total"}]}, every number per step, rows and ops largest first.
    """
    plain = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        plain.append(time.perf_counter() - start)
    profiler = Profiler(model, optimizer)
    total = 0.0
    with profiler:
        for _ in range(steps):
            start = time.perf_counter()
            step()
            total += time.perf_counter() - start
    rows = [{"layer": layer, "pass": pass_, **{c: s / steps for c, s in cats.items()}}
            for (layer, pass_), cats in profiler.rows.items()]
    glue = total / steps - sum(sum(r[c] for c in CATEGORIES) for r in rows)
    rows.append({"layer": "(step glue)", "pass": "step", **dict.fromkeys(CATEGORIES, 0.0), "python": glue})
    for r in rows:
        r["total"] = sum(r[c] for c in CATEGORIES)
    ops = [{"op": label, "pass": pass_, "calls": v["calls"] // steps,
            **{c: v[c] / steps for c in KERNEL_CATEGORIES}} for (label, pass_), v in profiler.ops.items()]
    for o in ops:
        o["total"] = sum(o[c] for c in KERNEL_CATEGORIES)
    categories = {c: sum(r[c] for r in rows) for c in CATEGORIES}
    return {"unprofiled_step_s": statistics.median(plain), "step_s": total / steps, "categories": categories,
            "rows": sorted(rows, key=lambda r: -r["total"]), "ops": sorted(ops, key=lambda o: -o["total"])}


def by_prefix(rows, depth: int = 1) -> list:
    """Rows summed over layers sharing the first ``depth`` parts of their dotted names (passes kept apart)."""
    sums = defaultdict(lambda: dict.fromkeys(CATEGORIES + ("total",), 0.0))
    for r in rows:
        key = (".".join(r["layer"].split(".")[:depth]), r["pass"])
        for c in CATEGORIES + ("total",):
            sums[key][c] += r[c]
    return sorted(({"layer": k[0], "pass": k[1], **v} for k, v in sums.items()), key=lambda r: -r["total"])
