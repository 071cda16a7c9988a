"""``minidl layers``: one CIFAR-10 image through the seed AlexNet, one layer at a time (the reading guide's companion).

    minidl layers --data-dir ../shared/data                            # test image 0, fresh weights
    minidl layers --index 7 --weights runs/alexnet_seed/best.npz       # a trained model

For every layer it prints what the layer computes, the output-size arithmetic,
the parameter count and statistics of the output; then the class probabilities.
With matplotlib installed it saves the input, the conv1 filters, the architecture
(minidl.viz.plot_model: shapes, the two streams, where they cross) and the feature
maps of every conv/bn/relu/pool layer as PNGs into --out. It also writes the
autograd graph of the image's loss (minidl.viz.graph) as autograd_graph.dot, and as
autograd_graph.svg when Graphviz's dot program is installed.
"""
from __future__ import annotations

import argparse
import os
import textwrap
from pathlib import Path

import numpy as np

from .. import backend, nn, viz
from .. import functional as F
from ..autograd import no_grad
from ..checkpoint import CheckpointError, load_checkpoint
from ..data import DatasetError, build_transform, load_cifar10, resize_bilinear
from ..models import AlexNet
from ..plots import filter_grid
from ..window import resolve_padding
from .common import error, unexpected

PROG = "minidl layers"
MAX_MAPS = 64  # feature maps drawn per layer


def describe(module, in_shape, out_shape) -> str:
    """One or two sentences on what ``module`` computes, with this layer's numbers."""
    if isinstance(module, nn.Conv2d):
        g, (kh, kw), (s, _) = module.groups, module.kernel_size, module.stride
        c, o, k = module.in_channels // g, module.out_channels // g, module.in_channels // g * kh * kw
        i, j = ("i", "j") if s == 1 else (f"{s}i", f"{s}j")
        per_stream = " per stream" if g > 1 else ""
        text = (f"Convolution: im2col copies every {c}x{kh}x{kw} window of the padded input (stride {s}) into a "
                f"column of {k} numbers; one matrix product (GEMM){per_stream}, W ({o}, {k}) @ col ({k}, "
                f"{out_shape[1] * out_shape[2]}), gives y[o,i,j] = b[o] + sum_c,u,v W[o,c,u,v] * x[c,{i}+u,{j}+v].")
        if g > 1:
            return text + (f" groups={g}: {g} streams (the paper's two GPUs); the filters of stream g see only "
                           f"the g-th {c} of the {module.in_channels} input channels.")
        if c == 3:
            return text + " groups=1: every filter sees all 3 colour channels of the image."
        return text + f" groups=1: every filter sees all {c} channels, so here the two streams exchange information."
    if isinstance(module, nn.BatchNorm2d):
        fresh = (not backend.to_numpy(module.running_mean).any()
                 and (backend.to_numpy(module.running_var) == 1).all())
        return ("Batch norm, eval mode: each channel is normalised with its RUNNING statistics, y = gamma * "
                f"(x - running_mean) / sqrt(running_var + {module.eps:g}) + beta. In training it uses the batch's "
                f"own mean and variance and moves the running ones by momentum {module.momentum:g}."
                + (" Untrained, the running mean is 0 and the variance 1, so here it is nearly the identity."
                   if fresh else ""))
    if isinstance(module, nn.ReLU):
        return ("ReLU: y = max(x, 0), elementwise. Negative values become 0 (see 'zeros' below); backward lets "
                "the gradient through only where x > 0.")
    if isinstance(module, nn.MaxPool2d):
        (k, _), (s, _) = module.kernel_size, module.stride
        overlap = " The windows overlap (stride < size), as in the paper." if s < k else ""
        return (f"Max pooling: each output is the maximum of a {k}x{k} window moved by {s}; no parameters, and "
                f"backward sends the gradient to the window's maximum only.{overlap}")
    if isinstance(module, nn.Flatten):
        c, h, w = in_shape
        return (f"Flatten: (C, H, W) = {tuple(in_shape)} -> {out_shape[0]} features in (C, H, W) order: "
                f"feature c*{h * w} + h*{w} + w, the order of fc6's weight columns.")
    if isinstance(module, nn.Linear):
        return (f"Dense: y = W x + b with W ({module.out_features}, {module.in_features}): every output sees "
                f"every input; one GEMM (1, {module.in_features}) @ ({module.in_features}, {module.out_features}).")
    if isinstance(module, nn.Dropout):
        return (f"Dropout p={module.p:g}: in training it zeroes each value with probability p and scales the "
                "rest by 1/(1-p) (inverted dropout); in eval mode, as here, it is the identity.")
    if isinstance(module, nn.LocalResponseNorm):
        return "Local response norm: each value is divided by (k + alpha * sum of squares of nearby channels)^beta."
    return describe_more(module, in_shape, out_shape)


def describe_more(module, in_shape, out_shape) -> str:
    """``describe`` for the pooling and activation layers beyond AlexNet's."""
    if isinstance(module, nn.AvgPool2d):
        (kh, kw), (s, _) = module.kernel_size, module.stride
        return (f"Average pooling: each output is the mean of a {kh}x{kw} window moved by {s}; no parameters, and "
                "backward spreads the gradient evenly over the window.")
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        kind = "mean" if isinstance(module, nn.AdaptiveAvgPool2d) else "maximum"
        if tuple(out_shape[1:]) == (1, 1):
            return (f"Global {kind} pooling: one number per channel, the {kind} of its whole "
                    f"{in_shape[1]}x{in_shape[2]} map, whatever the image size.")
        return (f"Adaptive {kind} pooling: the {in_shape[1]}x{in_shape[2]} map is cut into "
                f"{out_shape[1]}x{out_shape[2]} windows (output i covers floor(i*H/OH) to ceil((i+1)*H/OH)), "
                f"each giving its {kind}.")
    if isinstance(module, nn.Sigmoid):
        return "Sigmoid: y = 1 / (1 + exp(-x)), elementwise, squashing every value into (0, 1)."
    if isinstance(module, nn.Tanh):
        return "Tanh: y = tanh(x), elementwise, squashing every value into (-1, 1)."
    if isinstance(module, nn.LeakyReLU):
        return (f"Leaky ReLU: y = x where x > 0, else {module.negative_slope:g} * x: negative values shrink instead "
                "of vanishing, so their gradient never dies.")
    if isinstance(module, nn.GELU):
        return "GELU: y = x * Phi(x), Phi the normal distribution's CDF: a smooth ReLU."
    if isinstance(module, nn.Identity):
        return "Identity: y = x (a placeholder)."
    return ""


def count_parameters(module) -> str:
    """The parameter arithmetic, e.g. 'weight 96x3x11x11 = 34,848 + bias 96 = 34,944 trainable'."""
    def terms(named):
        return [(name, array.shape, array.size) for name, array in named]
    parts = []
    for kind, items in (("trainable", terms((n, p.data) for n, p in module.named_parameters())),
                        ("running statistics, not trained", terms(module.named_buffers()))):
        if items:
            sums = " + ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape, _ in items)
            parts.append(f"{sums} = {sum(size for _, _, size in items):,} {kind}")
    return "; ".join(parts) if parts else "0"


def size_line(module, in_shape, formula) -> str:
    """A window layer's output-size arithmetic, and how "same" padding was split."""
    line = f"out = (in + pad - k) / stride + 1:  {formula}"
    if getattr(module, "padding", None) == "same":  # TensorFlow's rule: the odd pixel goes bottom/right
        (top, bottom), (left, right) = resolve_padding("minidl layers", "same", in_shape[1:], module.kernel_size,
                                                       module.stride)
        line += f'  ("same": {top} top, {bottom} bottom, {left} left, {right} right)'
    return line


def stats_line(y) -> str:
    return (f"mean {y.mean():+.3f}  std {y.std():.3f}  min {y.min():+.3f}  max {y.max():+.3f}  "
            f"zeros {100 * np.mean(y == 0):.1f}%")


# ---- pictures (optional: matplotlib) --------------------------------------------
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


def save_filters(path, weight) -> None:
    """conv1's filters (O, 3, KH, KW) as RGB tiles, 16 a row, each filter scaled to [0, 1] on its own."""
    save_png(path, f"conv1: {weight.shape[0]} filters {'x'.join(map(str, weight.shape[1:]))} as RGB, each scaled "
             "to its own range\n(rows 1-3: stream 1, rows 4-6: stream 2)", [("", filter_grid(weight, columns=16))],
             inches=8.0)


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


# ---- the walk ----------------------------------------------------------------------
def parse_args(argv, prog: str = PROG):
    p = argparse.ArgumentParser(prog=prog, description="One CIFAR-10 image through the seed AlexNet, one layer at "
                                "a time: the reading guide's companion.")
    p.add_argument("--data-dir", default=None, help="holds cifar-10-batches-py/ (default: download to the cache)")
    p.add_argument("--index", type=int, default=0, help="which test image (default 0)")
    p.add_argument("--weights", default=None, help="a checkpoint .npz saved by the trainer (default: fresh weights)")
    p.add_argument("--out", default="runs/layer_by_layer", help="where the PNGs go")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading CIFAR-10")
    return p.parse_args(argv)


def load_model(weights):
    """The seed AlexNet, with the model state of a checkpoint when ``weights`` names one."""
    model = AlexNet(variant="seed")
    if not weights:
        print("weights: none given, so fresh initial weights (seed 0; He-normal convs): the maps show what random "
              "filters "
              "do and the prediction is chance. Pass --weights to see a trained model.")
        return model
    state = load_checkpoint(weights)
    settings = state.get("settings") or {}  # trainer checkpoints record the run's settings
    variant = settings.get("variant", "seed") if isinstance(settings, dict) else "seed"
    if variant != "seed":
        raise ValueError(f"{weights} holds a variant={variant!r} AlexNet; this walk needs a 'seed' one")
    model.load_state_dict(state.get("model", state))  # a trainer checkpoint, or a bare state dict
    print(f"weights: {weights}")
    return model


def report(step, name, module, in_shape, out_shape, formula, y) -> None:
    """Print one layer: what it computes, shapes, size arithmetic, parameters, output statistics."""
    print(f"\n[{step:2d}] {name} ({type(module).__name__})")
    print(textwrap.fill(describe(module, in_shape, out_shape), width=110, initial_indent="     what:   ",
                        subsequent_indent="             "))
    print(f"     shape:  {in_shape} -> {tuple(out_shape)}")
    if formula:
        print(f"     size:   {size_line(module, in_shape, formula)}")
    print(f"     params: {count_parameters(module)}")
    print(f"     output: {stats_line(y)}")


def run(args) -> int:
    device = backend.parse_device(args.device)
    url = os.environ.get("MINIDL_CIFAR10_URL")  # lets tests point the download at a local server
    data = load_cifar10(data_dir=args.data_dir, cache_dir=args.data_dir, download=not args.no_download,
                        val_size=0, progress=False, **({"url": url} if url else {}))
    if not 0 <= args.index < len(data.test_images):
        raise ValueError(f"--index must be in [0, {len(data.test_images)}), got {args.index}")
    image, label = data.test_images[args.index:args.index + 1], int(data.test_labels[args.index])
    model = load_model(args.weights).to(device).eval()  # eval: BN uses running statistics, dropout is off

    # The training pipeline of the seed variant: per-image standardisation, then bilinear resize 32 -> 224.
    x = build_transform(model.input_size)(backend.to_device(image, device))
    print(f"\ninput: test image {args.index} (label: {data.label_names[label]}); uint8 (1, 3, 32, 32) -> "
          f"standardised (x - mean) / std -> bilinear resize -> {tuple(x.shape)}\n"
          f"       {stats_line(backend.to_numpy(x))}")

    out = Path(args.out)
    try:
        import matplotlib  # noqa: F401  (only to know whether we can draw)
        out.mkdir(parents=True, exist_ok=True)
    except ImportError:
        out = None
        print("matplotlib is not installed: skipping the images (pip install matplotlib)")
    if out is not None:
        big = np.clip(resize_bilinear(image, 224)[0] / 255.0, 0, 1).transpose(1, 2, 0)
        save_png(out / "00_input.png", f"test image {args.index}: {data.label_names[label]}",
                 [("32x32 as stored", image[0].transpose(1, 2, 0)), ("bilinear resize to 224x224", big)])
        save_filters(out / "00_conv1_filters.png", backend.to_numpy(model.conv1.weight.data))
        model.plot(out / "00_architecture.png")  # every layer's output shape, the two streams and where they cross

    # The walk: exactly what model.forward does, one child at a time.
    x_input, shape = x, tuple(x.shape[1:])
    with no_grad():
        for step, (name, module) in enumerate(model.named_children(), start=1):
            out_shape, formula = module.shape_info(shape)
            x = module(x)
            assert tuple(x.shape[1:]) == tuple(out_shape), "the arithmetic must predict what the kernel produced"
            y = backend.to_numpy(x.data)[0]
            report(step, name, module, shape, out_shape, formula, y)
            if out is not None and y.ndim == 3:
                save_feature_maps(out / f"{step:02d}_{name}.png", name, y)
            shape = tuple(out_shape)
        probs = backend.to_numpy(F.softmax(x, axis=-1).data)[0]

    print("\nsoftmax(logits) = exp(z) / sum(exp(z)):")
    for i in np.argsort(-probs):
        marks = ("  <- prediction" if i == probs.argmax() else "") + ("  <- true label" if i == label else "")
        print(f"  {data.label_names[i]:>10}  {probs[i]:.4f}  {'#' * int(round(40 * probs[i]))}{marks}".rstrip())
    save_autograd_graph(Path(args.out), model, x_input, label, device)
    if out is not None:
        print(f"\nfeature-map grids and the architecture picture saved in {out}/")
    return 0


def main(argv=None, prog: str = PROG) -> int:
    """Run ``minidl layers`` with ``argv`` (default: sys.argv[1:]); returns the exit code."""
    args = parse_args(argv, prog)
    try:
        return run(args)
    except (DatasetError, CheckpointError, backend.DeviceError, ValueError) as exc:
        error(prog, str(exc))
        return 1
    except Exception as exc:  # one clear line instead of a traceback
        return unexpected(prog, exc)
