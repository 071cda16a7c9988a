"""Per-layer breakdown of an AlexNet training step, for minidl and PyTorch (used by bench_alexnet).

The layers run one at a time on the detached output of the previous layer, in
training mode, with a fixed random upstream gradient per layer (the same numbers in
both frameworks); each layer's forward and backward (weight and input gradients;
conv1's input needs none, as in the full step) are timed, each framework in its own
process, in alternating rounds, then the loss and the SGD step. The sum is close to, not the same as, a full step: no graph spans
layers, so each layer's backward starts from its own upstream gradient.
"""
from __future__ import annotations

import time

import numpy as np

import common
import minidl
import minidl.functional as F
from common import format_table, median, sync
from minidl import backend

def _time_loss_and_step(runner, times, loss_fn):
    """Time the loss (forward, backward) and the SGD step into ``times``; either framework.

    zero_grad() leaves the gradients unset in both (minidl always, torch by default).
    """
    device = runner.device
    start = time.perf_counter()
    loss = loss_fn()
    sync(device)
    mid = time.perf_counter()
    loss.backward()
    sync(device)
    times["loss"] = (mid - start, time.perf_counter() - mid)
    start = time.perf_counter()
    runner.optimizer.step()
    sync(device)
    times["sgd step"] = (time.perf_counter() - start, 0.0)
    runner.optimizer.zero_grad()


def _time_layers(device, layers, h, fresh_input, upstream):
    """Forward and backward time of each (name, layer), run one at a time on a detached input.

    Args:
        layers: (name, layer) pairs in order; h: the first layer's input.
        fresh_input(h, i): layer i's input, a new leaf holding h's values.
        upstream(name, i, out): the gradient sent back into the layer's output.
    Returns:
        name -> (forward s, backward s), and the last output, detached.
    """
    times = {}
    for i, (name, layer) in enumerate(layers):
        inp = fresh_input(h, i)
        start = time.perf_counter()
        out = layer(inp)
        sync(device)
        mid = time.perf_counter()
        g = upstream(name, i, out)
        sync(device)
        mid2 = time.perf_counter()
        out.backward(g)
        sync(device)
        times[name] = (mid - start, time.perf_counter() - mid2)
        h = out.detach()
    return times, h


def _upstream_gradient(i, shape):
    """Layer i's upstream gradient: the same numbers in both frameworks (drawn from seed i)."""
    return np.random.default_rng(i).standard_normal(tuple(shape), dtype=np.float32)


def _minidl_upstream(device, i, out):
    """Layer i's upstream gradient in the memory layout of its output, as the next layer's
    backward would hand it over (channels-last after the CPU's convolutions)."""
    values = backend.to_device(_upstream_gradient(i, out.shape), device)
    g = backend.get_array_module(values).empty_like(out.data)   # keeps out's strides
    g[...] = values
    return g


def _minidl_layer_pass(runner):
    """Forward and backward time of each layer of the minidl model, and the loss and step."""
    device = runner.device
    times, h = _time_layers(device, runner.model.named_children(), runner.x,
                            lambda h, i: minidl.Tensor(h.data, requires_grad=i > 0),   # conv1: no gx
                            lambda name, i, out: _minidl_upstream(device, i, out))
    logits = minidl.Tensor(h.data, requires_grad=True)
    _time_loss_and_step(runner, times, lambda: F.softmax_cross_entropy(logits, runner.labels))
    return times


def _torch_layer_pass(runner):
    """The same for the torch twin."""
    torch, device = runner.torch, runner.device
    tdev = common.torch_device(device)
    times, h = _time_layers(
        device, runner.model.named_children(), runner.x, lambda h, i: h.detach().requires_grad_(i > 0),
        lambda name, i, out: torch.from_numpy(_upstream_gradient(i, out.shape)).to(tdev))
    logits = h.detach().requires_grad_(True)
    _time_loss_and_step(runner, times, lambda: torch.nn.functional.cross_entropy(logits, runner.labels))
    return times


def _set_lr(runner, lr):
    """Set the runner's learning rate; returns the old one."""
    if runner.name == "torch":
        old = runner.optimizer.param_groups[0]["lr"]
        for group in runner.optimizer.param_groups:
            group["lr"] = lr
        return old
    old, runner.optimizer.lr = runner.optimizer.lr, lr
    return old


def layer_pass(runner) -> dict:
    """One timed pass over the layers of a runner in this process: name -> (forward s, backward s).

    The upstream gradients are random, so the SGD step runs with lr 0: same arithmetic,
    weights unchanged (random gradients would otherwise blow the weights up into NaNs).
    """
    saved_lr = _set_lr(runner, 0.0)
    runner.model.train()
    try:
        return (_torch_layer_pass if runner.name == "torch" else _minidl_layer_pass)(runner)
    finally:
        _set_lr(runner, saved_lr)


def measure_per_layer(runners, warmup, iters) -> list:
    """Rows (layer, minidl fwd/bwd, torch fwd/bwd) of median seconds, layers in execution order.

    Each runner's ``layer_pass()`` runs one pass (in its own process, for the benchmark's
    process runners); the frameworks alternate round by round.
    """
    samples = {r.name: [] for r in runners}
    for round_ in range(warmup + iters):
        for r in runners:
            t = r.layer_pass()
            if round_ >= warmup:
                samples[r.name].append(t)
    rows = []
    for name in samples["minidl"][0]:
        row = {"layer": name}
        for fw, runs in samples.items():
            row[f"{fw}_fwd_s"] = median([t[name][0] for t in runs]) if name in runs[0] else float("nan")
            row[f"{fw}_bwd_s"] = median([t[name][1] for t in runs]) if name in runs[0] else float("nan")
        rows.append(row)
    return rows


def per_layer_table(rows, has_torch: bool) -> str:
    total = sum(r["minidl_fwd_s"] + r["minidl_bwd_s"] for r in rows)
    headers = ["layer", "fwd ms", "bwd ms", "% of step"]
    if has_torch:
        headers += ["torch fwd", "torch bwd", "fwd speed", "bwd speed", "lost ms"]
    table, sums = [], [0.0, 0.0, 0.0, 0.0]
    for r in rows:
        mf, mb = 1e3 * r["minidl_fwd_s"], 1e3 * r["minidl_bwd_s"]
        line = [r["layer"], mf, mb, 100 * (mf + mb) / (1e3 * total)]
        sums[0] += mf
        sums[1] += mb
        if has_torch:
            tf, tb = 1e3 * r["torch_fwd_s"], 1e3 * r["torch_bwd_s"]
            sums[2] += tf
            sums[3] += tb
            line += [tf, tb, tf / mf if mf else float("nan"), tb / mb if mb else float("nan"), (mf + mb) - (tf + tb)]
        table.append(line)
    last = ["total", sums[0], sums[1], 100.0]
    if has_torch:
        last += [sums[2], sums[3], sums[2] / sums[0], sums[3] / sums[1] if sums[1] else float("nan"),
                 sum(sums[:2]) - sum(sums[2:])]
    table.append(last)
    note = ("speed = torch time / minidl time (< 1: minidl slower); lost ms = minidl - torch, fwd + bwd"
            if has_torch else "")
    return format_table(headers, table) + ("\n" + note if note else "")
