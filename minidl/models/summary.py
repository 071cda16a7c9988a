"""A Keras-style model summary computed arithmetically (no forward pass needed).

Each layer's ``shape_info(shape)`` gives its output shape and, for convolutions
and pools, the size formula, so the table shows where every shape comes from.
Containers are opened (``features.0``, ``layer2.0.conv1``); a residual block shows
its main path, then its shortcut's layers (which read the block's input), then one
row for the addition, named after the block (``minidl.nn.structure``).
"""
from __future__ import annotations

from ..nn.structure import trace


def summarize(title: str, model, input_shape) -> str:
    """The summary table of ``model`` for a per-sample ``input_shape``.

    Args:
        title: the first line, e.g. "AlexNet (variant='seed')".
        model: a module that applies its children in order (AlexNet, ResNet,
            Sequential), or its children as (name, module) pairs; every layer must
            have ``shape_info``.
        input_shape: the input without the batch axis, e.g. (3, 224, 224).

    Returns:
        The table as one string: layer, output shape (batch as None), parameter
        count (trainable and running statistics; each counted once, in the first
        row whose module holds it), size formula; then the totals.
    """
    rows = [("input (Input)", f"(None, {', '.join(map(str, input_shape))})", "0", "")]
    trainable = frozen = 0
    seen = set()   # ids of the parameters and buffers already counted (a block's row holds none of its own)
    for step in trace(model, input_shape):
        module = step.module
        params = [p for p in module.parameters() if id(p) not in seen]
        buffers = [b for b in module.buffers() if id(b) not in seen]
        seen.update(id(v) for v in params + buffers)
        layer_trainable = sum(int(p.data.size) for p in params if p.requires_grad)
        layer_frozen = sum(int(p.data.size) for p in params if not p.requires_grad) + sum(int(b.size)
                                                                                           for b in buffers)
        trainable += layer_trainable
        frozen += layer_frozen
        name = f"{step.name} (+)" if step.role == "join" else step.name
        rows.append((f"{name} ({type(module).__name__})", f"(None, {', '.join(map(str, step.shape))})",
                     f"{layer_trainable + layer_frozen:,}", step.formula))
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
