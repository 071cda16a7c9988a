"""Training plots: loss/accuracy curves and the first layer's filters (optional, needs matplotlib).

matplotlib is an optional extra (``pip install "minidl[plot]"``); without it these
functions do nothing and return False. They draw on a bare ``Figure`` with the Agg
canvas, never through pyplot, so they need no display and leave the user's
matplotlib backend alone. Files are written atomically.
"""
from __future__ import annotations

import numpy as np

from . import backend
from .checkpoint import atomic_write


def _figure(width: float, height: float):
    """A (Figure, canvas) pair on the Agg canvas, or None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    figure = Figure(figsize=(width, height))
    return figure, FigureCanvasAgg(figure)


def _save(figure, path) -> None:
    atomic_write(path, lambda f: figure.savefig(f, format="png", dpi=100))


def plot_curves(path, history: list) -> bool:
    """Loss (left) and accuracy (right) per epoch, train and validation.

    Args:
        path: the PNG to write.
        history: rows with epoch, train_loss, val_loss, train_acc, val_acc, val_top5.
    Returns:
        True when the file was written.
    """
    made = _figure(10, 4)
    if made is None or not history:
        return False
    from matplotlib.ticker import MaxNLocator
    figure, _ = made
    epochs = [row["epoch"] for row in history]
    loss_ax, acc_ax = figure.subplots(1, 2)
    loss_ax.plot(epochs, [row["train_loss"] for row in history], "o-", label="train")
    loss_ax.plot(epochs, [row["val_loss"] for row in history], "o-", label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    for key, label in (("train_acc", "train"), ("val_acc", "validation"), ("val_top5", "validation top-5")):
        acc_ax.plot(epochs, [100 * row[key] for row in history], "o-", label=label)
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
        ax.legend()
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.92, wspace=0.22)  # tight_layout is slow
    _save(figure, path)
    return True


def first_conv_weight(model):
    """The first 4-D parameter with 3 input channels (conv1's weight, (O,3,KH,KW)), or None."""
    for _, param in model.named_parameters():
        if param.data.ndim == 4 and param.data.shape[1] == 3:
            return backend.to_numpy(param.data)
    return None


def filter_grid(weight: np.ndarray, columns: int = 16, gap: int = 1) -> np.ndarray:
    """Tile RGB filters into one image, each scaled to [0, 1] on its own.

    Args:
        weight: (O, 3, KH, KW) filters.
        columns: filters per row; with 96 filters and 16 columns the first three
            rows are the first stream's 48 filters, like the paper's Figure 3.
        gap: pixels of white between filters.
    Returns:
        (rows*(KH+gap)-gap, columns*(KW+gap)-gap, 3) float array in [0, 1].
    """
    # weight (O,3,KH,KW) -> per-filter min/max scaled -> tiles (KH,KW,3) -> grid (H,W,3)
    o, _, kh, kw = weight.shape
    columns = min(columns, o)
    rows = -(-o // columns)
    low = weight.min(axis=(1, 2, 3), keepdims=True)
    span = weight.max(axis=(1, 2, 3), keepdims=True) - low
    scaled = (weight - low) / np.where(span > 0, span, 1.0)
    grid = np.ones((rows * (kh + gap) - gap, columns * (kw + gap) - gap, 3))
    for i in range(o):
        r, c = divmod(i, columns)
        grid[r * (kh + gap):r * (kh + gap) + kh, c * (kw + gap):c * (kw + gap) + kw] = scaled[i].transpose(1, 2, 0)
    return grid


def plot_filters(path, model) -> bool:
    """The learned first-layer filters as an image grid; True when the file was written."""
    weight = first_conv_weight(model)
    if weight is None:
        return False
    grid = filter_grid(weight.astype(np.float64))
    made = _figure(8, 8 * grid.shape[0] / grid.shape[1] + 0.6)  # room for the title
    if made is None:
        return False
    figure, _ = made
    ax = figure.subplots()
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"first-layer filters {weight.shape[0]} x {weight.shape[1]}x{weight.shape[2]}x{weight.shape[3]}")
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.5 / figure.get_figheight())
    _save(figure, path)
    return True
