"""Output-size arithmetic for convolutions and pools, shared by the layers and summaries.

For one spatial axis with input size n, kernel k, stride s and total padding p
(top + bottom), the output size is floor((n + p - k) / s) + 1. TensorFlow's
"same" padding picks p so that the output is ceil(n / s):
p = max((ceil(n / s) - 1) * s + k - n, 0), with the odd pixel at the bottom/right.
"""
from __future__ import annotations

import math


def pair(value, what: str, name: str) -> tuple:
    """(a, b) from an int or a pair of ints; ``what`` and ``name`` are for the error."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name}: {what} must be an int or a pair of ints, got {value!r}")


def check_padding(padding, name: str):
    """Validate a padding spec: int, (ph, pw), ((top, bottom), (left, right)), "valid" or "same"."""
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError(f"{name}: padding string must be 'valid' or 'same', got {padding!r}")
        return padding
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(p, (tuple, list)) for p in padding)):
        pads = tuple(pair(tuple(p), "padding", name) for p in padding)
    else:
        ph, pw = pair(padding, "padding", name)
        pads = ((ph, ph), (pw, pw))
    if min(min(p) for p in pads) < 0:
        raise ValueError(f"{name}: padding must be >= 0, got {padding!r}")
    return pads


def resolve_padding(padding, in_hw, kernel, stride) -> tuple:
    """((top, bottom), (left, right)) for a (validated) padding spec and an input size."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        pads = []
        for n, k, s in zip(in_hw, kernel, stride):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))  # extra pixel bottom/right, like TF
        return tuple(pads)
    return padding


def out_size(n: int, pad_total: int, k: int, s: int) -> int:
    return (n + pad_total - k) // s + 1


def size_formula(n: int, pad_total: int, k: int, s: int) -> str:
    """The output-size computation as text, e.g. "(224 + 7 - 11) / 4 + 1 = 56".

    Written floor((...) / s) + 1 when the division is not exact.
    """
    inner = f"({n} + {pad_total} - {k}) / {s}"
    if (n + pad_total - k) % s:
        inner = f"floor({inner})"
    return f"{inner} + 1 = {out_size(n, pad_total, k, s)}"


def window_output(in_hw, kernel, stride, padding, name: str):
    """Output (OH, OW) and formula text of a sliding window over an (H, W) input.

    Raises:
        ValueError: if the window does not fit (output size below 1).
    """
    pads = resolve_padding(padding, in_hw, kernel, stride)
    sizes, formulas = [], []
    for n, k, s, (a, b) in zip(in_hw, kernel, stride, pads):
        size = out_size(n, a + b, k, s)
        if size < 1:
            raise ValueError(f"{name}: a {k}-wide window with stride {s} and padding {a + b} does not fit "
                             f"an input of size {n}")
        sizes.append(size)
        formulas.append(size_formula(n, a + b, k, s))
    if formulas[0] == formulas[1]:
        text = formulas[0]
    else:
        text = f"H: {formulas[0]}; W: {formulas[1]}"
    return tuple(sizes), text
