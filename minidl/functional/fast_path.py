"""How an op runs a fast path from ``minidl.kernels`` as a ``Function``.

A fast path computes what the op's reference ``Function`` computes, on raw arrays,
but it cannot be a ``Function`` itself: ``minidl.kernels`` sits below the autograd core.
``FastPath`` is the adaptor: forward and backward go to the fast kernel, and the graph
labels the node with the op's name and the implementation that ran
(e.g. "Conv2d [winograd F(4x4, 3x3)]").
"""
from __future__ import annotations

from ..autograd import Function, is_grad_enabled


class FastPath(Function):
    """A fast kernel as a Function.

    Args:
        op: the op's name as its reference Function is called ("Conv2d", "MaxPool2d", ...).
        impl: an object with ``forward(*arrays) -> array`` and
            ``backward(*grads, needs) -> one gradient (or None) per input``, where
            ``needs`` is ``Function.needs_input_grad``.
    """

    def __init__(self, op: str, impl):
        self.op, self.impl = op, impl

    @property
    def label(self) -> str:
        algorithm = getattr(self.impl, "algorithm", type(self.impl).__name__)
        return f"{self.op} [{algorithm}]"

    def forward(self, *arrays):
        self.impl.keep_for_backward = is_grad_enabled()   # kernels that cache work may skip it
        return self.impl.forward(*arrays)

    def backward(self, *grads):
        return self.impl.backward(*grads, needs=self.needs_input_grad)
