"""Pictures of a network: the architecture (matplotlib) and the autograd graph (Graphviz DOT).

    from minidl import viz
    viz.plot_model(AlexNet(), "alexnet.svg")       # or model.plot("alexnet.png")
    loss = F.softmax_cross_entropy(model(x), y)
    text = viz.graph(loss, params=model.named_parameters())             # DOT text
    viz.graph(loss, params=model.named_parameters(), path="graph.svg")  # rendered by Graphviz

Both only read the model and the graph; neither runs the model or changes anything.

``plot_model`` draws one row per layer, top to bottom, with the layer's output
shape. Where the network has streams (grouped convolutions: AlexNet's two GPUs)
a row shows one box per stream, side by side, and the arrows into it say how the
streams connect: straight down (each stream sees only its own channels, e.g.
conv2 with groups=2), across (conv3 with groups=1: every filter sees both streams;
these arrows are drawn in orange), out of one box (conv1: both streams see the
whole image) or into one box (flatten: the dense layers see every feature of both
streams). A residual network (ResNet) shows every layer of every block, and each
block's shortcut as a blue arrow round the left, from the block's input into the row
of its addition (named after the block), which says what the shortcut does. It
needs matplotlib (the ``plot`` extra) and writes PNG or SVG.

``graph`` returns the DOT text (https://graphviz.org/doc/info/lang.html) of the
graph that produced a tensor: one node per Function (what ``backward`` will call)
and one per tensor (shape and dtype; parameters by name). Rendering the text into
a picture needs the Graphviz ``dot`` program, a system package, not a Python one.
It and ``render_dot`` live in ``minidl.autograd_graph``.
"""
from __future__ import annotations

from pathlib import Path

from . import nn
from .autograd_graph import FORMATS, GRAPHVIZ_HINT, graph, render_dot   # noqa: F401 (viz's names too)
from .autograd_graph import pair_text as _pair_text
from .checkpoint import atomic_write
from .nn.structure import trace

# ---- the architecture -------------------------------------------------------------

# Box colours by layer kind, so the eye finds the convolutions and the dense layers.
_COLOURS = {"Conv2d": "#9ecae1", "BatchNorm2d": "#c7e9c0", "BatchNorm1d": "#c7e9c0", "SyncBatchNorm": "#c7e9c0",
            "LocalResponseNorm": "#c7e9c0", "ReLU": "#e5e5e5", "MaxPool2d": "#fdd0a2", "Flatten": "#f0f0f0",
            "Linear": "#dadaeb", "Dropout": "#f7f7f7", "AvgPool2d": "#fdd0a2", "AdaptiveAvgPool2d": "#fdd0a2",
            "AdaptiveMaxPool2d": "#fdd0a2", "Sigmoid": "#e5e5e5", "Tanh": "#e5e5e5", "LeakyReLU": "#e5e5e5",
            "GELU": "#e5e5e5", "Identity": "#f7f7f7", "BasicBlock": "#fee391", "ConvTranspose2d": "#9ecae1",
            "LayerNorm": "#c7e9c0", "GroupNorm": "#c7e9c0", "Dropout2d": "#f7f7f7", "Upsample": "#fdd0a2"}
_COLOURS.update(dict.fromkeys(["ReLU6", "Hardtanh", "Hardsigmoid", "Hardswish", "SiLU", "Mish", "ELU", "SELU",
                               "Softplus"], "#e5e5e5"))
_CROSS = "#e6550d"  # arrows where information moves from one stream to the other
_SHORTCUT = "#3182bd"  # residual shortcuts: from a block's input round to its addition


def _describe(module) -> str:
    """A short text for a layer box, e.g. 'Conv2d 11x11 /4 "same"'."""
    kind = type(module).__name__
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k, s = module.kernel_size, module.stride
        pad = module._padding_arg
        pad = f' "{pad}"' if isinstance(pad, str) else (f" pad {pad}" if pad else "")
        groups = f" groups={module.groups}" if getattr(module, "groups", 1) > 1 else ""
        stride = f" /{_pair_text(s)}" if s != (1, 1) else ""
        return f"{kind} {k[0]}x{k[1]}{stride}{pad}{groups}"
    if isinstance(module, nn.ConvTranspose2d):
        stride = f" x{_pair_text(module.stride)}" if module.stride != (1, 1) else ""   # it upsamples by its stride
        return f"{kind} {module.kernel_size[0]}x{module.kernel_size[1]}{stride}"
    if isinstance(module, nn.Upsample):
        scale = module.scale_factor if module.size is None else None
        return f"{kind} {module.mode}" + (f" x{scale:g}" if isinstance(scale, float) else "")
    if isinstance(module, nn.Linear):
        return f"{kind} {module.in_features} -> {module.out_features}"
    if isinstance(module, nn.Dropout):
        return f"{kind} p={module.p:g}"
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        size = module.output_size
        return f"{kind} -> {_pair_text(size) if isinstance(size, (tuple, list)) else size}"
    if isinstance(module, nn.LeakyReLU):
        return f"{kind} {module.negative_slope:g}"
    if isinstance(module, nn.GELU) and module.approximate != "none":
        return f"{kind} ({module.approximate})"
    return kind


def _stream_count(steps) -> int:
    """How many streams the network has: the largest ``groups`` of its convolutions."""
    return max([step.module.groups for step in steps if isinstance(step.module, nn.Conv2d)] + [1])


def _params(module, seen) -> int:
    """Parameters and buffers of ``module`` not counted yet (``seen``: their ids), now counted."""
    values = [p.data for p in module.parameters()] + list(module.buffers())
    fresh = [v for v in values if id(v) not in seen]
    seen.update(id(v) for v in fresh)
    return sum(int(v.size) for v in fresh)


def _join_text(step, shortcut) -> str:
    """A residual block's addition: what its shortcut does and what follows the sum."""
    parts = []
    for s in shortcut:   # a layer without a short description (the zero padding) tells its formula
        text = _describe(s.module)
        parts.append(s.formula if text == type(s.module).__name__ and s.formula else text)
    after = [_describe(layer) for _, layer in step.module.paths()[2]]
    text = f"add the shortcut ({', '.join(parts) if parts else 'identity'})"
    return text + (f", then {', '.join(after)}" if after else "")


def layer_rows(model, input_shape=None) -> list:
    """The rows ``plot_model`` draws, computed from the layers' shape arithmetic.

    Args:
        model: a module whose children run in order (``AlexNet``, ``ResNet``,
            ``nn.Sequential``), each a layer with ``shape_info``, a Sequential or a
            residual block (``minidl.nn.structure``).
        input_shape: (C, H, W) without the batch axis; defaults to the model's
            ``input_size`` as (3, S, S).

    Returns:
        a list of dicts, the input first: name, kind (class name), text, shape (the whole output),
        streams (boxes side by side), link ("start", "straight", "parallel",
        "split", "cross", "join": how the boxes above connect to these), params, and
        skip_from: for a residual block's addition (kind "BasicBlock", named after the
        block), the row whose output the shortcut carries here; None elsewhere. The
        shortcut's own layers (a 1x1 convolution, a zero padding) are told in the
        addition's text, and their parameters counted in its row.
    """
    if input_shape is None:
        size = getattr(model, "input_size", None)
        if size is None:
            raise ValueError(f"plot_model: {type(model).__name__} has no input_size; pass input_shape=(C, H, W)")
        input_shape = (3, size, size)
    shape = tuple(input_shape)
    if len(shape) == 4:
        shape = shape[1:]
    try:
        steps = trace(model, shape)
    except TypeError as exc:
        raise TypeError(f"plot_model: {exc}") from None
    total = _stream_count(steps)
    rows = [dict(name="input", kind="Input", text="image", shape=shape, streams=1, link="start", params=0,
                 skip_from=None)]
    row_of = {-1: 0}   # step index -> row index
    seen, shortcut = set(), []
    current = 1
    for index, step in enumerate(steps):
        module, shape = step.module, step.shape
        if step.role == "shortcut":   # told in the addition's row
            shortcut.append(step)
            continue
        params = sum(_params(s.module, seen) for s in shortcut) + _params(module, seen)
        text, skip_from = _describe(module), None
        if step.role == "join":
            text, skip_from = _join_text(step, shortcut), row_of[step.source]
            shortcut = []
        if len(shape) != 3:  # flat features: one box, whatever came before
            streams, link = 1, ("join" if current > 1 else "straight")
        elif isinstance(module, nn.Conv2d):
            streams = total if module.out_channels % total == 0 else 1
            if streams == 1:
                link = "join" if current > 1 else "straight"
            elif current == 1:
                link = "split"
            else:
                link = "parallel" if module.groups == streams else "cross"
        else:  # per-channel layers (batch norm, ReLU, pooling, ...) keep the streams apart
            streams, link = current, ("parallel" if current > 1 else "straight")
        rows.append(dict(name=step.name, kind=type(module).__name__, text=text, shape=tuple(shape),
                         streams=streams, link=link, params=params, skip_from=skip_from))
        row_of[index] = len(rows) - 1
        current = streams
    return rows


_BAND = (0.05, 0.55)  # the boxes' horizontal band in axes units; layer details go to the right of it


def _box_centres(streams: int) -> list:
    """x centres of a row's boxes: the band cut into ``streams`` equal parts."""
    left, right = _BAND
    return [left + (right - left) * (i + 0.5) / streams for i in range(streams)]


def _shape_text(shape, streams) -> str:
    if len(shape) == 3 and streams > 1:
        return f"{shape[0] // streams} x {shape[1]} x {shape[2]}"
    return " x ".join(map(str, shape))


def plot_model(model, path, input_shape=None, title=None) -> Path:
    """Draw the layer stack of ``model`` with output shapes and streams; write PNG or SVG.

    Args:
        model: ``AlexNet``, a ``ResNet`` or any ``nn.Sequential`` of minidl layers.
        path: the file to write; its suffix (.png or .svg) picks the format.
        input_shape: (C, H, W); defaults to the model's input size.
        title: the heading; defaults to the model's name (and variant).

    Returns:
        the path written.
    Raises:
        ValueError for another suffix; ImportError (saying what to install) without matplotlib.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"plot_model: the file must end in .png or .svg, got {str(path)!r}")
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    except ImportError:
        raise ImportError("plot_model needs matplotlib: pip install 'minidl[plot]'") from None
    rows = layer_rows(model, input_shape)
    n = len(rows)
    row_h = 0.46  # inches per layer
    figure = Figure(figsize=(7.5, row_h * n + 0.9))
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0.0, 0.0, 1.0, (row_h * n + 0.2) / figure.get_figheight()))
    ax.set_xlim(0, 1)
    ax.set_ylim(n - 0.5, -0.7)  # row 0 (the input) at the top
    ax.set_axis_off()
    streams_total = max(row["streams"] for row in rows)
    box_h = 0.52  # in rows
    skips = 0
    for i, row in enumerate(rows):
        width = (_BAND[1] - _BAND[0]) / row["streams"] - (0.015 if row["streams"] > 1 else 0.0)
        colour = _COLOURS.get(row["kind"], "#ffffff")
        for x in _box_centres(row["streams"]):
            ax.add_patch(FancyBboxPatch((x - width / 2, i - box_h / 2), width, box_h,
                                        boxstyle="round,pad=0,rounding_size=0.012", facecolor=colour,
                                        edgecolor="#444444", linewidth=0.8, mutation_aspect=3.0))
            ax.text(x - width / 2 + 0.012, i, row["name"], ha="left", va="center", fontsize=7.5)
            ax.text(x + width / 2 - 0.012, i, _shape_text(row["shape"], row["streams"]), ha="right", va="center",
                    fontsize=7.5, fontweight="bold")
        whole = "(" + ", ".join(map(str, row["shape"])) + ")"
        params = f", {row['params']:,} params" if row["params"] else ""
        ax.text(0.58, i, f"{row['text']}\n{whole}{params}", ha="left", va="center", fontsize=6.5,
                color="#333333", linespacing=1.3)
        if i:
            _draw_links(ax, FancyArrowPatch, rows[i - 1], row, i, box_h)
        if row.get("skip_from") is not None:
            # The shortcut: out of the left of its source, round, into the sum. Consecutive shortcuts
            # alternate between two distances, so each one's start and end stay visible; dashed where
            # the shortcut changes the shape (subsampling, new channels).
            arm = 9 if skips % 2 else 16
            changes = rows[row["skip_from"]]["shape"] != row["shape"]
            ax.add_patch(FancyArrowPatch((_BAND[0], row["skip_from"]), (_BAND[0], i), arrowstyle="-|>",
                                         connectionstyle=f"arc,angleA=180,angleB=180,armA={arm},armB={arm},rad=3",
                                         mutation_scale=7, linewidth=1.0, color=_SHORTCUT, shrinkA=0, shrinkB=0,
                                         linestyle="--" if changes else "-"))
            skips += 1
    if streams_total > 1:
        gpus = streams_total == 2 and getattr(model, "variant", None) is not None  # AlexNet's two GPUs
        for k, x in enumerate(_box_centres(streams_total)):
            ax.text(x, -0.55, f"stream {k + 1}" + (f" (GPU {k + 1} in 2012)" if gpus else ""), ha="center",
                    va="center", fontsize=7.5, color="#555555")
    if title is None:
        variant = getattr(model, "variant", None)
        title = f"{type(model).__name__}" + (f" (variant='{variant}')" if variant else "")
    figure.suptitle(title, fontsize=10, y=1 - 0.25 / figure.get_figheight())
    options = dict(format=fmt, dpi=110)
    options["metadata"] = {"Date": None} if fmt == "svg" else {"Software": None}
    # Text stays text in SVG (the seed model: 77 KB, 195 KB as glyph outlines) and ids are stable between runs.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "minidl"}):
        atomic_write(path, lambda f: figure.savefig(f, **options))
    return path


def _draw_links(ax, arrow_class, above, row, i, box_h) -> None:
    """Arrows from the boxes of ``above`` (row i-1) into the boxes of ``row`` (row i)."""
    tops, bottoms = _box_centres(above["streams"]), _box_centres(row["streams"])
    link = row["link"]
    pairs = ([(a, b) for a in range(len(tops)) for b in range(len(bottoms))] if link in ("split", "cross", "join")
             else list(zip(range(len(tops)), range(len(bottoms)))))
    for a, b in pairs:
        crossing = link in ("cross", "join") and len(tops) > 1 and (link == "join" or a != b)
        ax.add_patch(arrow_class((tops[a], i - 1 + box_h / 2), (bottoms[b], i - box_h / 2), arrowstyle="-|>",
                                 mutation_scale=7, linewidth=1.1 if crossing else 0.8,
                                 color=_CROSS if crossing else "#555555", shrinkA=0, shrinkB=0))
    notes = {"cross": "streams cross: each filter sees both streams",
             "join": "streams join: the dense layers see every feature"}
    if link in notes:
        ax.text(0.58, i - 0.5, notes[link], ha="left", va="center", fontsize=6.5, color=_CROSS, style="italic")
