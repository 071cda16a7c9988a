"""Weights prepared once for a frozen model: a kernel's own form of a filter, kept between calls.

Some fast paths do not multiply by the weight as it is stored but by a transform of
it: Winograd's convolution multiplies by U = G w G^T (a*a numbers per filter and
input channel where the weight has r*r). During training the weight changes every
step, so the transform is redone every call; in a model rewritten for inference
(``minidl.nn.fuse_for_inference``) it never changes, and computing it once is enough.

``PreparedWeights`` is that memory. Its owner (a fused layer) passes it into the
kernel with each call; the kernel asks ``get(weight, key, prepare)``, and the prepared
form is recomputed only when the weight is another array than last time (the layer's
weight was replaced, or the model moved to another device) or the kernel asks for
another form (``key``: say, another Winograd tile for another image size). The owner
must never change its weight in place: fused layers make their weights read-only
(NumPy refuses writes), so a stale prepared form cannot be read by mistake.
"""
from __future__ import annotations


class PreparedWeights:
    """Prepared forms of one layer's weight, each recomputed only when the weight array is replaced.

    Example (what ``WinogradConv2d`` does with the one it is given)::

        u = prepared.get(weight, ("winograd", m, r, groups), lambda: transform(weight))
    """

    def __init__(self):
        self._forms = {}   # key -> (the weight array it was prepared from, the prepared array)

    def get(self, weight, key, prepare):
        """The prepared form of ``weight`` named ``key``: cached, or ``prepare()`` when new.

        Args:
            weight: the layer's weight array (NumPy or CuPy), compared by identity.
            key: a hashable name of the form (the kernel and its parameters).
            prepare: a function of no arguments returning the form for this weight.
        Returns:
            the prepared array (do not write into it; it is shared by every call).
        """
        kept = self._forms.get(key)
        if kept is not None and kept[0] is weight:
            return kept[1]
        form = prepare()
        self._forms[key] = (weight, form)
        return form

    def clear(self) -> None:
        """Forget every prepared form (the next call prepares again)."""
        self._forms.clear()

    def __len__(self) -> int:
        return len(self._forms)
