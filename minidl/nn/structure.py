"""A model's structure read without running it: its layers in order, each with its output shape.

Summaries, pictures and the ONNX export all need the same walk. The models it reads
(``AlexNet``, ``ResNet``, any ``Sequential``) apply their children one after the other;
``Sequential`` children are opened, so ``features.0`` and ``layer2.0.conv1`` appear
under their state_dict names. A residual block describes itself through ``paths()``:

    main, shortcut, after = block.paths()   # lists of (name, layer)
    y = after(main(x) + shortcut(x))        # an empty shortcut is the identity

and the walk yields its main path, then its shortcut (which reads the block's input,
not the main path's output), then one "join" step for the addition and ``after``.
Every layer answers ``shape_info(shape)``, so shapes come from arithmetic alone.
"""
from __future__ import annotations

from typing import NamedTuple

from .containers import Sequential


class Step(NamedTuple):
    """One layer (or one residual addition) of a model, in the order the model applies them.

    name: the dotted name ("layer2.0.conv1"; a join step is named after its block).
    module: the layer (for a join step: the block).
    shape: the per-sample output shape; formula: its size arithmetic ("" when none).
    role: "layer" (main flow), "shortcut" (a layer on a block's shortcut) or "join"
        (main path + shortcut, then the block's ``after`` layers).
    source: the index of the step whose output this step reads (-1: the model's input);
        for a join step, the step whose output entered the block (the shortcut's start).
    """
    name: str
    module: object
    shape: tuple
    formula: str
    role: str
    source: int


def stack_layers(model, prefix: str = ""):
    """(dotted name, layer) of a stack model's children in order, Sequentials opened, blocks whole."""
    for name, module in model.named_children():
        full = f"{prefix}{name}"
        if isinstance(module, Sequential):
            yield from stack_layers(module, full + ".")
        else:
            yield full, module


def _shape_of(name, module, shape):
    if not hasattr(module, "shape_info"):
        raise TypeError(f"layer {name!r} ({type(module).__name__}) has no shape_info; only stacks of minidl.nn "
                        "layers and residual blocks can be read")
    try:
        out, formula = module.shape_info(shape)
    except ValueError as exc:
        raise ValueError(f"layer {name!r} does not accept per-sample shape {tuple(shape)}: {exc}") from None
    return tuple(out), formula


def _walk(layers, shape, source, steps, role, prefix=""):
    """Append the steps of ``layers`` (name, module pairs) reading ``shape`` from step ``source``."""
    for name, module in layers:
        full = prefix + name
        if isinstance(module, Sequential):
            shape, source = _walk(module.named_children(), shape, source, steps, role, full + ".")
        elif hasattr(module, "paths"):
            main, shortcut, _ = module.paths()
            entry = source
            _walk(main, shape, entry, steps, role, full + ".")
            _walk(shortcut, shape, entry, steps, "shortcut", full + ".")
            shape, formula = _shape_of(full, module, shape)
            steps.append(Step(full, module, shape, formula, "join", entry))
            source = len(steps) - 1
        else:
            shape, formula = _shape_of(full, module, shape)
            steps.append(Step(full, module, shape, formula, role, source))
            source = len(steps) - 1
    return shape, source


def trace(model, input_shape) -> list:
    """The ``Step``s of ``model`` for a per-sample ``input_shape`` (C, H, W), in order.

    Args:
        model: a module that applies its children in order (``AlexNet``, ``ResNet``,
            ``Sequential``), its children minidl layers, Sequentials or residual blocks;
            or such children as (name, module) pairs.
        input_shape: the input without the batch axis.

    Returns:
        a list of ``Step``; the last one's shape is the model's output shape.
    Raises:
        TypeError for a layer without ``shape_info``; ValueError naming the layer whose
        input shape does not fit.
    """
    steps = []
    layers = model.named_children() if hasattr(model, "named_children") else model
    _walk(layers, tuple(input_shape), -1, steps, "layer")
    return steps
