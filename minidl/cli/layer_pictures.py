"""The walkthrough's pictures (``minidl layers``): input, filters, feature maps, the autograd graph.

The PNGs need matplotlib (drawn on the Agg canvas, no display); the graph is DOT text
(``minidl.viz.graph``), rendered to SVG where Graphviz's ``dot`` is installed.
"""
from __future__ import annotations

import numpy as np

from .. import backend, viz
from .. import functional as F
from ..plots import filter_grid

MAX_MAPS = 64  # feature maps drawn per layer


def tile(maps, columns: int = 8, gap: int = 1) -> np.ndarray:
    """(n, H, W) maps -> one (rows*(H+gap)-gap, cols*(W+gap)-gap) image, each map scaled to [0, 1]."""
    n, h, w = maps.shape
    columns = min(columns, n)
    rows = -(-n // columns)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    scaled = (maps - low) / np.where(span > 0, span, 1.0)  # a constant map (e.g. all zero) shows black
    grid = np.ones((rows * (h + gap) - gap, columns * (w + gap) - gap))  # white gaps
    for i in range(n):
        r, c = divmod(i, columns)
        grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = scaled[i]
    return grid


def save_png(path, title, images, cmap=None, inches=4.0) -> None:
    """Images side by side under a title, drawn on the Agg canvas (no display needed).

    Each panel is ``inches`` wide, or wider for big images, so that pixels are not lost.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    width = max(inches, max(image.shape[1] for _, image in images) / 100)
    height = width * max(image.shape[0] / image.shape[1] for _, image in images) + 0.9  # room for titles
    figure = Figure(figsize=(width * len(images), height))
    FigureCanvasAgg(figure)
    for ax, (label, image) in zip(figure.subplots(1, len(images), squeeze=False)[0], images):
        ax.imshow(image, cmap=cmap, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
    figure.suptitle(title, fontsize=10)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.8 / height, wspace=0.05)
    figure.savefig(path, dpi=100)


def save_feature_maps(path, name, y) -> None:
    c, h, w = y.shape
    n = min(c, MAX_MAPS)
    save_png(path, f"{name}: the first {n} of {c} feature maps, {h}x{w}\neach scaled to its own range (black = its "
             "minimum)", [("", tile(y[:n]))], cmap="gray", inches=5.0)


def save_filters(path, name, weight, streams: bool = False) -> None:
    """The first convolution's filters (O, 3, KH, KW) as RGB tiles, 16 a row, each scaled to [0, 1] on its own."""
    where = "\n(the first half: stream 1, the second: stream 2)" if streams else ""
    save_png(path, f"{name}: {weight.shape[0]} filters {'x'.join(map(str, weight.shape[1:]))} as RGB, each scaled "
             f"to its own range{where}", [("", filter_grid(weight, columns=16))], inches=8.0)


def save_autograd_graph(out, model, x, label, device) -> None:
    """The graph behind this image's loss, the one backward would walk: DOT text, and SVG with Graphviz."""
    out.mkdir(parents=True, exist_ok=True)
    loss = F.softmax_cross_entropy(model(x), backend.to_device(np.array([label]), device))
    dot = viz.graph(loss, params=model.named_parameters())
    (out / "autograd_graph.dot").write_text(dot)
    print(f"\nautograd graph of the loss: {dot.count('shape=box')} functions, {dot.count('shape=ellipse')} tensors "
          f"-> {out / 'autograd_graph.dot'}")
    try:
        viz.render_dot(dot, out / "autograd_graph.svg")
        print(f"  rendered by Graphviz: {out / 'autograd_graph.svg'}")
    except RuntimeError as exc:
        print(f"  not rendered: {exc}")
