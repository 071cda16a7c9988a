"""Sliding windows, the one home for their arithmetic: sizes, strides, padding, output size.

Convolution and pooling (their references in ``minidl.functional`` and their fast
paths in ``minidl.kernels``), the layers that call them, the model summary and the
ONNX export all read their window arithmetic from here. It sits on the lowest floor,
beside ``backend``, so that every one of them may import it.

For one spatial axis with input size n, kernel k, stride s and padding before/after
a/b, the window fits floor((n + a + b - k) / s) + 1 times. TensorFlow's "same"
padding picks a + b so that the output is ceil(n / s):
a + b = max((ceil(n / s) - 1) * s + k - n, 0), the odd pixel after (bottom/right).

Dilation d spreads a kernel's k taps d pixels apart, so the window spans
d * (k - 1) + 1 pixels (``effective_kernel``): every formula above holds with that
span in place of k, and tap i reads offset i * d. PyTorch's ``ceil_mode`` counts a
last, partial window when one starts inside the input or its leading padding;
``ceil_mode_pads`` turns that into extra padding after the input, so the formulas
above (and every kernel that uses them) stay as they are.
"""
from __future__ import annotations

import numbers

from . import backend


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def int_pair(fn: str, name: str, value, minimum: int = 1) -> tuple:
    """``value`` as a pair of ints >= ``minimum`` (positive by default): 3 -> (3, 3), (3, 2) -> (3, 2).

    Args:
        fn, name: the caller and the argument, for the error message.
        minimum: the smallest value allowed (0 for paddings).
    Raises:
        ValueError naming ``fn`` and ``name`` for anything else (below the minimum,
        wrong length, not an int).
    """
    pair_ = (value, value) if _is_int(value) else value
    if isinstance(pair_, (tuple, list)) and len(pair_) == 1:   # PyTorch accepts one value in a list
        pair_ = (pair_[0], pair_[0])
    if (not isinstance(pair_, (tuple, list)) or len(pair_) != 2
            or not all(_is_int(v) and v >= minimum for v in pair_)):
        what = "a positive int or a pair of positive ints" if minimum == 1 else \
            f"an int >= {minimum} or a pair of them"
        raise ValueError(f"{fn}: {name} must be {what}, got {value!r}")
    return int(pair_[0]), int(pair_[1])


def check_padding(fn: str, padding):
    """A padding spec checked without knowing the input size.

    Args:
        fn: the caller, for the error message.
        padding: an int (all four sides), (ph, pw) (symmetric per axis),
            ((top, bottom), (left, right)), "valid" or "same".
    Returns:
        "valid" or "same" (which depend on the input size), else ((top, bottom), (left, right)).
    Raises:
        ValueError naming ``fn`` for anything else, or a negative pad.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode in ("valid", "same"):
            return mode
        raise ValueError(f"{fn}: padding string must be 'valid' or 'same', got {padding!r}")
    spec = (padding, padding) if _is_int(padding) else padding
    if isinstance(spec, (tuple, list)) and len(spec) == 1 and _is_int(spec[0]):   # PyTorch's (p,)
        spec = (spec[0], spec[0])
    pads = None
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        if all(_is_int(p) for p in spec):
            pads = ((spec[0], spec[0]), (spec[1], spec[1]))
        elif all(isinstance(p, (tuple, list)) and len(p) == 2 and all(_is_int(q) for q in p) for p in spec):
            pads = (tuple(spec[0]), tuple(spec[1]))
    if pads is None:
        raise ValueError(f"{fn}: padding must be an int, (ph, pw), ((top, bottom), (left, right)), "
                         f"'valid' or 'same', got {padding!r}")
    if any(p < 0 for side in pads for p in side):
        raise ValueError(f"{fn}: padding must be non-negative, got {padding!r}")
    return tuple((int(a), int(b)) for a, b in pads)


def effective_kernel(kernel: tuple, dilation: tuple = (1, 1)) -> tuple:
    """The pixels a dilated window spans per axis: d * (k - 1) + 1 (the kernel itself when d = 1)."""
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))


def resolve_padding(fn: str, padding, in_hw: tuple, kernel: tuple, stride: tuple, dilation: tuple = (1, 1)) -> tuple:
    """Any accepted ``padding`` as explicit ((top, bottom), (left, right)) for an input size.

    Args:
        fn: the caller, for error messages.
        padding: as ``check_padding`` takes it ("same" follows TensorFlow's rule, with
            the dilated window's span as its kernel size).
        in_hw: (H, W) of the input.
        kernel, stride, dilation: (KH, KW), (SH, SW) and (DH, DW).
    Returns:
        ((top, bottom), (left, right)) as non-negative ints.
    """
    spec = check_padding(fn, padding)
    if spec == "valid":
        return (0, 0), (0, 0)
    if spec == "same":
        pads = []
        for size, k, s in zip(in_hw, effective_kernel(kernel, dilation), stride):
            out = -(-size // s)  # ceil(size / s)
            total = max((out - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))  # the odd pixel bottom/right, like TF
        return tuple(pads)
    return spec


def output_hw(fn: str, in_hw: tuple, kernel: tuple, stride: tuple, pads: tuple, dilation: tuple = (1, 1)) -> tuple:
    """(OH, OW) = floor((in + before + after - span) / stride) + 1 per axis, span = d * (k - 1) + 1.

    Raises:
        ValueError naming ``fn`` when the (dilated) kernel is larger than the padded input.
    """
    out = []
    for size, k, s, (before, after) in zip(in_hw, effective_kernel(kernel, dilation), stride, pads):
        padded = size + before + after
        if k > padded:
            spans = "" if tuple(dilation) == (1, 1) else \
                f" (dilation {tuple(dilation)}: it spans {effective_kernel(kernel, dilation)})"
            raise ValueError(f"{fn}: kernel {tuple(kernel)}{spans} is larger than the padded input "
                             f"{tuple(h + a + b for h, (a, b) in zip(in_hw, pads))} "
                             f"(input {tuple(in_hw)}, padding {tuple(pads)})")
        out.append((padded - k) // s + 1)
    return tuple(out)


def ceil_mode_pads(in_hw: tuple, kernel: tuple, stride: tuple, pads: tuple, dilation: tuple = (1, 1)) -> tuple:
    """``pads`` with the extra padding after each axis that PyTorch's ``ceil_mode=True`` implies.

    The windows ceil_mode adds (``pool_output_hw``) hang off the end of the padded input;
    padding the end by what they need makes the floor formula of ``output_hw`` count them,
    so every kernel runs ceil_mode unchanged. Call it after ``output_hw`` has checked that
    the kernel fits.

    Returns:
        ((top, bottom + extra_h), (left, right + extra_w)).
    """
    out_hw = pool_output_hw("ceil_mode_pads", in_hw, kernel, stride, pads, True, dilation)
    return covering_pads(in_hw, effective_kernel(kernel, dilation), stride, pads, out_hw)


def size_formula(n: int, pad_total: int, k: int, s: int) -> str:
    """The output-size computation as text, e.g. "(224 + 7 - 11) / 4 + 1 = 56".

    Written floor((...) / s) + 1 when the division is not exact.
    """
    inner = f"({n} + {pad_total} - {k}) / {s}"
    if (n + pad_total - k) % s:
        inner = f"floor({inner})"
    return f"{inner} + 1 = {(n + pad_total - k) // s + 1}"


def window_output(fn: str, in_hw: tuple, kernel: tuple, stride: tuple, padding) -> tuple:
    """Output (OH, OW) of a sliding window over an (H, W) input, and the formula as text.

    Args:
        fn: the caller (a layer's name), for the error message.
        padding: as ``check_padding`` takes it.
    Returns:
        ((OH, OW), text); the text shows both axes only when they differ.
    Raises:
        ValueError when the window does not fit the padded input.
    """
    pads = resolve_padding(fn, padding, in_hw, kernel, stride)
    sizes = output_hw(fn, in_hw, kernel, stride, pads)
    formulas = [size_formula(n, a + b, k, s) for n, k, s, (a, b) in zip(in_hw, kernel, stride, pads)]
    text = formulas[0] if formulas[0] == formulas[1] else f"H: {formulas[0]}; W: {formulas[1]}"
    return sizes, text


def tap_slice(offset: int, stride: int, out: int) -> slice:
    """The positions kernel tap ``offset`` sees over ``out`` windows: offset, offset + stride, ...

    For a fixed tap (kh, kw), the pixels every window reads form one strided slice of
    the padded image, ``xpad[..., tap_slice(kh, SH, OH), tap_slice(kw, SW, OW)]``: the
    trick that lets convolution and pooling loop over the KH*KW taps, never the pixels.
    """
    return slice(offset, offset + stride * (out - 1) + 1, stride)


def transposed_padding(kernel: tuple, pads: tuple) -> tuple:
    """The padding of gy that turns a stride-1 convolution's input gradient into a convolution.

    gx[c, i] = sum_(o, k) W[o, c, k] gy[o, i + pad_before - k]: a correlation of gy, padded by
    K - 1 - before in front and K - 1 - after behind, with the spatially flipped kernel.

    Returns:
        ((KH-1-top, KH-1-bottom), (KW-1-left, KW-1-right)).
    """
    (top, bottom), (left, right) = pads
    kh, kw = kernel
    return (kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right)


def pad2d(x, pads: tuple, value: float = 0.0, axes: tuple = (-2, -1)):
    """``x`` with its two spatial ``axes`` (by default the last two) padded by ``pads`` filled with ``value``.

    A new contiguous array, so when ``x`` is a transposed view the copy also
    transposes it for free; with no padding at all ``x`` itself comes back.

    Shapes: x (..., H, W) -> (..., top + H + bottom, left + W + right); with
    axes=(1, 2) a channels-last (N, H, W, C) -> (N, top + H + bottom, left + W + right, C).
    """
    xp = backend.get_array_module(x)
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return x  # nothing to pad: the input itself (possibly a view), no copy
    row_axis, col_axis = (axis % x.ndim for axis in axes)
    shape, inside = list(x.shape), [slice(None)] * x.ndim
    shape[row_axis] += top + bottom
    shape[col_axis] += left + right
    inside[row_axis] = slice(top, top + x.shape[row_axis])
    inside[col_axis] = slice(left, left + x.shape[col_axis])
    out = xp.full(shape, value, dtype=x.dtype)
    out[tuple(inside)] = x
    return out


# ---- pooling with PyTorch's ceil_mode, and how many cells each window averages ----------

def pool_output_hw(fn: str, in_hw: tuple, kernel: tuple, stride: tuple, pads: tuple, ceil_mode: bool,
                   dilation: tuple = (1, 1)) -> tuple:
    """(OH, OW) of a pooling window, with PyTorch's ``ceil_mode`` rule.

    floor mode: ``output_hw``. ceil mode: ceil((in + before + after - span) / s) + 1, so a
    last window may hang off the padded input; but a window that would start past the
    input (in the after-padding) is dropped, so every window starts inside the input or
    its before-padding (PyTorch's ``pooling_output_shape``).

    Raises:
        ValueError naming ``fn`` when the (dilated) kernel is larger than the padded input.
    """
    out = output_hw(fn, in_hw, kernel, stride, pads, dilation)
    if not ceil_mode:
        return out
    sizes = []
    for size, k, s, (before, after) in zip(in_hw, effective_kernel(kernel, dilation), stride, pads):
        o = -(-(size + before + after - k) // s) + 1
        if (o - 1) * s >= size + before:   # the last window would start in the after-padding
            o -= 1
        sizes.append(o)
    return tuple(sizes)


def pool_window_output(fn: str, in_hw: tuple, kernel: tuple, stride: tuple, padding, ceil_mode: bool) -> tuple:
    """``window_output`` for a pool with PyTorch's ``ceil_mode``: ((OH, OW), the formula as text).

    In ceil mode the text reads "ceil((32 + 0 - 3) / 2) + 1 = 16", with "- 1" before the
    result when the last window, starting in the padding, is dropped.
    """
    if not ceil_mode:
        return window_output(fn, in_hw, kernel, stride, padding)
    pads = resolve_padding(fn, padding, in_hw, kernel, stride)
    sizes = pool_output_hw(fn, in_hw, kernel, stride, pads, True)
    formulas = []
    for n, k, s, (a, b), o in zip(in_hw, kernel, stride, pads, sizes):
        inner = f"({n} + {a + b} - {k}) / {s}"
        full = -(-(n + a + b - k) // s) + 1
        if (n + a + b - k) % s:
            inner = f"ceil({inner})"
        formulas.append(f"{inner} + 1{' - 1' if o < full else ''} = {o}")
    text = formulas[0] if formulas[0] == formulas[1] else f"H: {formulas[0]}; W: {formulas[1]}"
    return sizes, text


def covering_pads(in_hw: tuple, kernel: tuple, stride: tuple, pads: tuple, out_hw: tuple) -> tuple:
    """``pads`` with the after-padding grown so that all ``out_hw`` windows lie inside the padded input.

    In ceil mode the last window may hang past the after-padding; padding that overhang
    too lets every window be one strided slice (``tap_slice``) of the padded input.
    """
    grown = []
    for size, k, s, (before, after), o in zip(in_hw, kernel, stride, pads, out_hw):
        grown.append((before, max(after, (o - 1) * s + k - size - before)))
    return tuple(grown)


def window_cells(size: int, k: int, s: int, before: int, after: int, out: int, count_padding: bool):
    """How many cells along one axis each of ``out`` windows averages, as a list of ``out`` ints.

    Window i covers [i*s - before, i*s - before + k). Cells of the input always count;
    cells of the padding count when ``count_padding`` (PyTorch's ``count_include_pad``);
    the ceil-mode overhang past the after-padding never does. The 2-D count of window
    (i, j) is the product of the row count i and the column count j.
    """
    counts = []
    for i in range(out):
        start = i * s - before
        if count_padding:
            counts.append(min(start + k, size + after) - start)
        else:
            counts.append(min(start + k, size) - max(start, 0))
    return counts


def adaptive_bounds(size: int, out: int) -> list:
    """The ``out`` windows of adaptive pooling along one axis: [(start, end), ...].

    PyTorch's rule: window i covers start = floor(i * size / out) to end =
    ceil((i + 1) * size / out): together the windows cover the axis, and when ``out``
    divides ``size`` they are the non-overlapping windows of size / out cells.
    """
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def padded_place(shape: tuple, pad: tuple) -> tuple:
    """(out_shape, out_index, in_index) for ``pad`` over the last len(pad) // 2 axes of ``shape``.

    ``out[out_index] = x[in_index]`` copies what survives of x (negative pads crop it).
    """
    out_shape, out_index, in_index = list(shape), [slice(None)] * len(shape), [slice(None)] * len(shape)
    for k in range(len(pad) // 2):
        axis = len(shape) - 1 - k
        before, after = pad[2 * k], pad[2 * k + 1]
        out_shape[axis] = shape[axis] + before + after
        out_index[axis] = slice(max(before, 0), max(before, 0) + shape[axis] + min(before, 0) + min(after, 0))
        in_index[axis] = slice(max(-before, 0), shape[axis] - max(-after, 0))
    return tuple(out_shape), tuple(out_index), tuple(in_index)
