"""Finite-difference gradient checking: the reason to trust every kernel.

For a function y = f(x1, x2, ...) and a fixed upstream gradient g (random by
default), backpropagation claims dL/dxi for the scalar L = sum(g * y). This
module measures the same numbers directly, one input element at a time, with
central differences  (L(x + eps) - L(x - eps)) / (2 eps),  and compares.

Why a random g and not g = 1 (i.e. checking sum(y))? Some wrong backwards are
invisible to a sum: softmax's outputs always sum to 1, so d(sum softmax)/dx = 0
and a backward that returns zeros would pass. A random g sees every direction.
"""
from __future__ import annotations

import numpy as np

from . import backend
from .autograd import Tensor, no_grad


def _outputs(result):
    outs = result if isinstance(result, (tuple, list)) else (result,)
    for o in outs:
        if not isinstance(o, Tensor):
            raise TypeError(f"check_gradients: fn must return Tensors, got {type(o).__name__}")
    return tuple(outs)


def _weighted_sum(outs, grads) -> float:
    """L = sum_i <out_i, g_i> as a Python float (float64 accumulation)."""
    total = 0.0
    for o, g in zip(outs, grads):
        total += float((o.data.astype(np.float64) * g).sum())
    return total


def check_gradients(fn, inputs, grad_output=None, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Compare backprop gradients of ``fn`` with central finite differences.

    Args:
        fn: callable taking the ``inputs`` Tensors and returning a Tensor or a
            tuple of Tensors. It must be deterministic (create any rng inside).
        inputs: list of Tensors; every one with ``requires_grad`` is checked and
            must be float64.
        grad_output: upstream gradient(s) for the output(s): an array or a tuple
            of arrays; by default standard normal from ``seed``.
        eps: finite-difference step.
        atol, rtol: an element passes when |analytic - numeric| <= atol + rtol * |numeric|.
        seed: seed of the default random upstream gradient.
    Returns:
        True when every checked element passes.
    Raises:
        AssertionError naming the input, the worst element, the analytic and the
        numeric value; ValueError for inputs that cannot be checked.
    """
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("check_gradients: no input requires grad, so there is nothing to check")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise ValueError(f"check_gradients: input {i} has dtype {inputs[i].dtype}; use float64, "
                             "since float32 rounding swamps finite differences")
        xp = backend.get_array_module(inputs[i].data)
        inputs[i].data = xp.ascontiguousarray(inputs[i].data)  # so a flat view can poke elements
        inputs[i].grad = None

    outs = _outputs(fn(*inputs))
    if grad_output is None:
        rng = np.random.default_rng(seed)
        grads = tuple(backend.to_device(rng.standard_normal(o.shape), o.device) for o in outs)
    else:
        grads = grad_output if isinstance(grad_output, (tuple, list)) else (grad_output,)
        grads = tuple(backend.to_device(np.asarray(backend.to_numpy(g), np.float64), o.device)
                      for g, o in zip(grads, outs))
        if len(grads) != len(outs) or any(tuple(g.shape) != o.shape for g, o in zip(grads, outs)):
            raise ValueError(f"check_gradients: grad_output shapes {[tuple(g.shape) for g in grads]} do not "
                             f"match output shapes {[o.shape for o in outs]}")

    # Analytic: one backward pass of L = sum_i <out_i, g_i>.
    if len(outs) == 1:
        outs[0].backward(grads[0])
    else:
        total = None
        for o, g in zip(outs, grads):
            if o.requires_grad:
                term = (o * Tensor(g.astype(o.dtype))).sum()
                total = term if total is None else total + term
        total.backward()

    for i in checked:
        t = inputs[i]
        analytic = backend.to_numpy(t.grad.data) if t.grad is not None else np.zeros(t.shape)
        numeric = np.zeros(t.shape, np.float64)
        flat = t.data.reshape(-1)  # a view: writing flat[k] moves one element of t
        num_flat = numeric.reshape(-1)
        with no_grad():
            for k in range(flat.size):
                original = flat[k].item()
                flat[k] = original + eps
                plus = _weighted_sum(_outputs(fn(*inputs)), grads)
                flat[k] = original - eps
                minus = _weighted_sum(_outputs(fn(*inputs)), grads)
                flat[k] = original
                num_flat[k] = (plus - minus) / (2 * eps)
        error = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if error.size and error.max() > 0:
            worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(error)), t.shape))
            name = f"input {i}" + (f" ({t.name})" if t.name else "")
            raise AssertionError(
                f"check_gradients: gradient of {name} with shape {t.shape} is wrong at element {worst}: "
                f"analytic {analytic[worst]:.8g}, numeric {numeric[worst]:.8g} "
                f"(atol={atol}, rtol={rtol}; {int((error > 0).sum())} of {error.size} elements fail)")
    return True
