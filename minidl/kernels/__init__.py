"""minidl.kernels: the fast paths, on raw arrays, and the one table that chooses them.

Every op's reference implementation lives in its public module (``minidl.functional``);
this package holds what makes the ops fast on a machine, and nothing a reader needs to
understand them:

    dispatch.py        which implementation runs, per call: the table of all choices
    convolution.py     what the fast convolutions share (their backward's bookkeeping)
    batch_norm.py      batch norm with fused per-channel passes, over a device's passes
    cpu/               Winograd, channels-last im2col, sliced max and average pooling, the
                       global average, chunked passes and activations,
                       the worker threads (threads.py), slice budgets (slices.py),
                       work-buffer memory (memory.py)
    cuda/              the hand-written CUDA kernels (sources.py) and their launches

Raw arrays in, raw arrays out: nothing here imports ``minidl.autograd``, ``nn``, ``train``
or ``distributed``. ``MINIDL_KERNELS=reference``, ``use("reference")`` or
``set_mode("reference")`` makes every op run its reference instead.
"""
from .dispatch import MODES, mode, set_mode, use

__all__ = ["MODES", "mode", "set_mode", "use"]
