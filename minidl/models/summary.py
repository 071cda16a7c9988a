"""A Keras-style model summary computed arithmetically (no forward pass needed).

Each layer's ``shape_info(shape)`` gives its output shape and, for convolutions
and pools, the size formula, so the table shows where every shape comes from.
"""
from __future__ import annotations


def _count(arrays) -> int:
    return sum(int(a.size) for a in arrays)


def summarize(title: str, layers, input_shape) -> str:
    """The summary table of ``layers`` applied in order to a per-sample ``input_shape``.

    Args:
        title: the first line, e.g. "AlexNet (variant='seed')".
        layers: (name, module) pairs in the order the model applies them; every
            module must have ``shape_info``.
        input_shape: the input without the batch axis, e.g. (3, 224, 224).

    Returns:
        The table as one string: layer, output shape (batch as None), parameter
        count (trainable and running statistics), size formula; then the totals.
    """
    rows = [("input (Input)", f"(None, {', '.join(map(str, input_shape))})", "0", "")]
    shape = tuple(input_shape)
    trainable = frozen = 0
    for name, module in layers:
        shape, formula = module.shape_info(shape)
        params = list(module.parameters())
        layer_trainable = _count(p.data for p in params if p.requires_grad)
        layer_frozen = _count(p.data for p in params if not p.requires_grad) + _count(module.buffers())
        trainable += layer_trainable
        frozen += layer_frozen
        rows.append((f"{name} ({type(module).__name__})", f"(None, {', '.join(map(str, shape))})",
                     f"{layer_trainable + layer_frozen:,}", formula))
    header = ("Layer (type)", "Output Shape", "Param #", "Output size: (in + pad - k) / stride + 1")
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(3)]

    def line(row):
        return (f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}").rstrip()

    rule_width = max(len(line(row)) for row in rows + [header])
    out = [title, "=" * rule_width, line(header), "=" * rule_width]
    out += [line(row) for row in rows]
    out += ["=" * rule_width,
            f"Total params: {trainable + frozen:,}",
            f"Trainable params: {trainable:,}",
            f"Non-trainable params: {frozen:,}",
            "=" * rule_width]
    return "\n".join(out)
