"""The Adam/AdamW update on the CPU: every parameter in cache-sized chunks, all of them in one worker region.

The reference (``minidl.optim.adam``) updates a parameter with whole-array expressions:
each of its ten or so steps streams a parameter-sized array through memory and most
allocate a parameter-sized temporary. Here every parameter is cut into chunks of
ADAM_CHUNK_ELEMENTS, so a chunk's steps run in cache on two reused scratch pieces and
the weights, gradient and moments cross memory once; the chunks of all parameters go
to the worker threads in one region (each thread with its own scratch). Every element
gets the reference's arithmetic in the reference's order (the same float32/float64
operations, each correctly rounded), so the result is the reference's to the bit,
whichever thread runs it.
"""
from __future__ import annotations

import threading

import numpy as np

from .slices import ADAM_CHUNK_ELEMENTS, flat_chunks
from .threads import map_pieces


class FusedAdam:
    """``step(updates)`` for C-contiguous CPU parameters and moments; one instance per optimizer step.

    A gradient may have any layout (it is only read): flattening a strided one copies it.
    """

    def __init__(self):
        self._scratch = {}   # (dtype, thread) -> two flat scratch arrays

    def _scratch_pair(self, like, size: int):
        key = (like.dtype.str, threading.get_ident())
        pair = self._scratch.get(key)
        if pair is None or pair[0].size < size:
            pair = self._scratch[key] = (np.empty(size, like.dtype), np.empty(size, like.dtype))
        return pair[0][:size], pair[1][:size]

    def step(self, updates) -> None:
        """Apply Adam's rule in place on the weights and the moments.

        Args:
            updates: (w, g, m, v, v_max, hyper) per parameter: its data, gradient, first
                and second moments, the largest second moment (None without amsgrad),
                and (lr, beta1, beta2, eps, weight_decay, decoupled, maximize, step_size,
                bias_correction2_sqrt), the last two this step's lr / (1 - beta1**t) and
                (1 - beta2**t) ** 0.5 as Python floats.
        """
        pieces, nbytes = [], 0
        for w, g, m, v, v_max, hyper in updates:
            arrays = [a.reshape(-1) for a in ((w, g, m, v) if v_max is None else (w, g, m, v, v_max))]
            parts = flat_chunks(w.size, ADAM_CHUNK_ELEMENTS)
            pieces += [([a[part] for a in arrays], hyper) for part in parts]
            nbytes += sum(a.nbytes for a in arrays)
        if pieces:   # pieces write disjoint memory: all of them in one region of the workers
            map_pieces(pieces[0][0][0], lambda piece: self._update(*piece), pieces, nbytes=nbytes)

    def _update(self, arrays, hyper):
        """The rule on one chunk, in place on w, m, v (and v_max), through this thread's scratch."""
        # w, g, m, v, v_max (n,) -> tmp, tmp2 (n,) scratch -> w, m, v, v_max updated in place
        w, g, m, v = arrays[:4]
        v_max = arrays[4] if len(arrays) == 5 else None
        lr, beta1, beta2, eps, decay, decoupled, maximize, step_size, bias_correction2_sqrt = hyper
        tmp, tmp2 = self._scratch_pair(w, w.size)
        if maximize:
            np.negative(g, out=tmp)
            g = tmp
        if decay != 0:
            if decoupled:
                w *= 1 - lr * decay
            else:
                np.multiply(w, decay, out=tmp2)
                np.add(g, tmp2, out=tmp)            # g + decay * w, never written into p.grad
                g = tmp
        np.subtract(g, m, out=tmp2)
        tmp2 *= 1 - beta1
        m += tmp2                                   # m + (1 - beta1) * (g - m)
        np.multiply(g, 1 - beta2, out=tmp2)
        tmp2 *= g
        v *= beta2
        v += tmp2                                   # beta2 * v + (1 - beta2) * g * g
        if v_max is not None:
            np.maximum(v_max, v, out=v_max)
            v = v_max
        np.sqrt(v, out=tmp2)
        tmp2 /= bias_correction2_sqrt
        tmp2 += eps                                 # the denominator; g is no longer needed
        np.multiply(m, step_size, out=tmp)
        tmp /= tmp2
        w -= tmp
