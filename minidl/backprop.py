"""Backpropagation: how ``Tensor.backward`` walks the graph that autograd.py records.

The functions reachable from the root are put in reverse topological order (each after
every function that consumes its outputs), without recursion. Each function's
``backward`` is then called once, with the summed gradient of each of its outputs (zeros
for an output that did not reach the root), and what it returns is passed on: added up
where a tensor feeds several functions, and accumulated into ``.grad`` where the input
is a leaf that requires grad.

Hooks: ``Tensor.register_post_accumulate_grad_hook(hook)`` on a leaf calls ``hook(leaf)``
once per backward, as soon as that leaf's gradient is final (every function that
consumes the leaf has delivered its part), while backward goes on with the rest of the
graph. Data-parallel training uses it to start reducing gradients before backward has
finished (``minidl.distributed``).

Memory: after a function's backward has run, its saved arrays and its links to its
inputs are dropped (unless ``retain_graph=True``), so activations are released as soon
as backward is done with them; a second backward through such a graph raises a clear
error instead of silently using stale state. A leaf's ``.grad`` owns its memory, since
optimizers and hooks change it in place.
"""
from __future__ import annotations

from . import backend
from .autograd import Tensor, graph_key


def topological_order(root: Tensor) -> list:
    """Functions reachable from ``root``, each after every function that consumes its outputs.

    Iterative depth-first search (no recursion, so chains of any length work); the
    reversed post-order is a valid order for backward.
    """
    order, visited = [], set()
    stack = [(root.creator, False)]
    while stack:
        fn, expanded = stack.pop()
        if expanded:
            order.append(fn)
            continue
        if id(fn) in visited:
            continue
        visited.add(id(fn))
        if getattr(fn, "freed", False):
            raise RuntimeError(
                f"backward: the graph through {type(fn).__name__} was already freed by an earlier "
                "backward; call backward(retain_graph=True) the first time to run it again")
        stack.append((fn, True))
        for t in fn.inputs:
            if t.creator is not None and id(t.creator) not in visited:
                stack.append((t.creator, False))
    order.reverse()
    return order


def _hooked_leaf_uses(order: list) -> dict:
    """id(leaf) -> how many gradient contributions it awaits, for leaves with grad hooks."""
    pending = {}
    for fn in order:
        for t, needed in zip(fn.inputs, fn.needs_input_grad):
            if needed and t.creator is None and t._grad_hooks:
                pending[id(t)] = pending.get(id(t), 0) + 1
    return pending


def _run_hooks(t: Tensor) -> None:
    for hook in list(t._grad_hooks):
        hook(t)


def run_backward(root: Tensor, grad_array, retain_graph: bool, caller_owns_grad: bool) -> None:
    """Accumulate d(root)/d(leaf) * grad_array into every leaf's ``.grad`` (``Tensor.backward``).

    Args:
        root: the tensor backward started from; grad_array: its upstream gradient.
        retain_graph: keep the functions' saved arrays for another backward.
        caller_owns_grad: grad_array is the caller's, so no leaf may keep it as its .grad.
    """
    # shared: memory a leaf must not keep as its own .grad (the caller's, or another
    # leaf's already: Add's backward hands one array to both of its inputs)
    shared = {id(_memory_owner(grad_array))} if caller_owns_grad else set()
    if root.creator is None:  # a leaf: its gradient is the upstream gradient itself
        _accumulate_leaf(root, grad_array, shared)
        if root._grad_hooks:
            _run_hooks(root)
        return
    grads = {graph_key(root): grad_array}  # (id(creator), output index) -> summed gradient array
    order = topological_order(root)
    # Leaves with hooks count down their consumers; at zero their gradient is final.
    pending = _hooked_leaf_uses(order)
    for fn in order:
        with backend.device_context(fn.device):  # zeros and backward's arrays on fn's GPU
            grad_outputs = []
            for index, (shape, dtype) in enumerate(fn.output_meta):
                g = grads.pop((id(fn), index), None)
                if g is None:  # an output that did not reach the root: zero gradient
                    g = backend.array_module_of(fn.device).zeros(shape, dtype)
                grad_outputs.append(g)
            grad_inputs = fn.backward(*grad_outputs)
        if not isinstance(grad_inputs, tuple):
            grad_inputs = (grad_inputs,)
        if len(grad_inputs) != len(fn.inputs):
            raise RuntimeError(f"{type(fn).__name__}.backward returned {len(grad_inputs)} gradients "
                               f"for {len(fn.inputs)} inputs")
        for t, g, needed in zip(fn.inputs, grad_inputs, fn.needs_input_grad):
            if not needed or g is None:
                continue
            if tuple(g.shape) != t.shape:
                raise RuntimeError(f"{type(fn).__name__}.backward returned a gradient of shape "
                                   f"{tuple(g.shape)} for an input of shape {t.shape}")
            if t.creator is None:
                _accumulate_leaf(t, g, shared)
            elif t.key in grads:
                # a tensor used twice: gradients add up, on t's GPU (which is not fn's
                # when fn moved data between devices)
                with backend.device_context(backend.device_of(g)):
                    grads[t.key] = grads[t.key] + g
            else:
                grads[t.key] = g
        if pending:
            for t, needed in zip(fn.inputs, fn.needs_input_grad):
                if needed and id(t) in pending:
                    pending[id(t)] -= 1
                    if pending[id(t)] == 0:
                        del pending[id(t)]
                        _run_hooks(t)
        if not retain_graph:
            fn.release()


def _accumulate_leaf(t: Tensor, g, shared: set) -> None:
    if not t.requires_grad:
        return
    with backend.device_context(backend.device_of(t.data)):  # the sum lives where the leaf does
        if g.dtype != t.data.dtype:
            g = g.astype(t.data.dtype)
        if t.grad is None:
            # .grad is the leaf's own: optimizers and hooks change it in place. Keep g's
            # memory only when nothing else holds it: not the data's, not the caller's, not
            # another leaf's (Add's backward hands one array to both of its inputs).
            owner = _memory_owner(g)
            if id(owner) in shared or owner is _memory_owner(t.data):
                g = g.copy()
                owner = g
            shared.add(id(owner))
            t.grad = Tensor(g)
        else:
            t.grad = Tensor(t.grad.data + g)


def _memory_owner(a):
    """The array that owns ``a``'s memory: ``a`` itself, or the base its views lead to."""
    while getattr(a, "base", None) is not None:
        a = a.base
    return a
