"""The SGD update on the CPU: every parameter in cache-sized chunks, all of them in one worker region.

The reference (``minidl.optim.sgd``) updates a parameter with whole-array expressions:
each arithmetic step streams the weights, gradient or momentum buffer through memory
and allocates a temporary as large as the parameter. Here every parameter is cut into
chunks of SGD_CHUNK_ELEMENTS, so a chunk's steps run in cache on two reused scratch
pieces and every array crosses memory once; the chunks of all parameters go to the
worker threads in one region (each thread with its own scratch), so a step costs one
hand-off, not one per parameter. Every element gets the reference's arithmetic in the
reference's order, so the result is the same to the bit whichever thread runs it.
"""
from __future__ import annotations

import threading

import numpy as np

from .slices import SGD_CHUNK_ELEMENTS, flat_chunks
from .threads import map_pieces


class FusedSGD:
    """``step(updates, factor)`` for C-contiguous CPU parameters; one instance per optimizer step.

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

    def step(self, updates, factor=None) -> None:
        """Apply SGD's rule in place.

        Args:
            updates: (w, g, buf, first, hyper) per parameter: its data, gradient, momentum
                buffer (None without momentum), whether this is the buffer's first step,
                and (lr, momentum, dampening, weight_decay, nesterov, maximize).
            factor: the gradient clipping factor, or None.
        """
        pieces, nbytes = [], 0
        for w, g, buf, first, hyper in updates:
            arrays = [a.reshape(-1) for a in ((w, g) if buf is None else (w, g, buf))]
            pieces += [([a[part] for a in arrays], first, hyper) for part in flat_chunks(w.size, SGD_CHUNK_ELEMENTS)]
            nbytes += sum(a.nbytes for a in arrays)
        if pieces:   # pieces write disjoint memory: all of them in one region of the workers
            map_pieces(pieces[0][0][0], lambda piece: self._update(*piece, factor), pieces, nbytes=nbytes)

    def _update(self, arrays, first, hyper, factor):
        """The rule on one chunk, in place on w and buf, through this thread's scratch."""
        w, g = arrays[:2]
        buf = arrays[2] if len(arrays) == 3 else None
        lr, momentum, dampening, weight_decay, nesterov, maximize = hyper
        tmp, step = self._scratch_pair(w, w.size)
        if factor is not None:
            np.multiply(g, factor, out=tmp)     # the clipped gradient
            g = tmp
        if maximize:
            np.negative(g, out=tmp)
            g = tmp
        if weight_decay != 0:
            np.multiply(w, weight_decay, out=step)
            np.add(g, step, out=tmp)            # g + decay * w, never written into p.grad
            g = tmp
        if buf is not None:
            if first:
                buf[...] = g
            else:
                buf *= momentum
                if dampening == 0:
                    buf += g
                else:
                    np.multiply(g, 1 - dampening, out=step)
                    buf += step
            if nesterov:
                np.multiply(buf, momentum, out=step)
                step += g                       # g + momentum * buf
                g = step
            else:
                g = buf
        np.multiply(g, lr, out=step)
        w -= step
