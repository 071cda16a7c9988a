"""``minidl layers``: one image through a network, one layer at a time (the reading guide's companion).

    minidl layers --data-dir ../shared/data                            # test image 0, the seed AlexNet, fresh
    minidl layers --index 7 --weights runs/alexnet_seed/best.npz       # a trained model (any minidl train run)
    minidl layers --model resnet20 --data-dir ../shared/data           # a residual network
    minidl layers --model resnet18 --weights resnet18-f37072fd.pth --image cat.jpg   # torchvision's weights

For every layer it prints what the layer computes, the output-size arithmetic,
the parameter count and statistics of the output; then the class probabilities.
A residual block is shown as the network runs it: its main path layer by layer, then
its shortcut (which reads the block's input), then the addition (``minidl.nn.structure``
gives the walk). With matplotlib installed it saves the input, the first
convolution's filters, the architecture (minidl.viz.plot_model: shapes, the two
streams of the AlexNets, the shortcuts of the ResNets) and the feature maps of every
layer with (C, H, W) outputs as PNGs into --out. It also writes the autograd graph of
the image's loss (minidl.viz.graph) as autograd_graph.dot, and as autograd_graph.svg
when Graphviz's dot program is installed.

The model is --model (--variant for an AlexNet; default the seed AlexNet) with fresh
weights, or the model of --weights (``model_files``: a training checkpoint names its
own; bare weights are --model's). The image is a CIFAR-10 test image, or --image, prepared
as the model's training run prepared its evaluation images (``predict``). The model's
GPU (``--device cuda:N``) is current while it is built and run.
"""
from __future__ import annotations

import argparse
import os
import textwrap
from pathlib import Path

import numpy as np

from .. import backend, nn
from ..autograd import Tensor, no_grad
from .. import functional as F
from ..checkpoint import CheckpointError
from ..data import DatasetError, load_cifar10, resize_bilinear
from ..data.cifar10 import CLASS_NAMES as CIFAR10_CLASSES
from ..models.resnet import ZeroPadShortcut
from ..nn.structure import trace
from ..window import resolve_padding
from .common import ArgumentParser, error, make_directory, unexpected
from .layer_pictures import save_autograd_graph, save_feature_maps, save_filters, save_png
from .model_files import InputError, model_from_weights
from .models import MODELS, VARIANTS, build_model, describe_model, input_size
from .predict import DECODED, evaluation_transform, read_image

PROG = "minidl layers"
TOP = 10  # classes listed at the end
WINDOW_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)  # formula: out = (in + pad - k) / stride + 1


def describe(module, in_shape, out_shape, streams: bool = False) -> str:
    """One or two sentences on what ``module`` computes, with this layer's numbers.

    ``streams``: the model has the two streams of the original AlexNet (grouped convolutions).
    """
    if isinstance(module, nn.Conv2d):
        g, (kh, kw), (s, _) = module.groups, module.kernel_size, module.stride
        c, o, k = module.in_channels // g, module.out_channels // g, module.in_channels // g * kh * kw
        i, j = ("i", "j") if s == 1 else (f"{s}i", f"{s}j")
        bias = "b[o] + " if module.bias is not None else ""
        per_stream = " per stream" if g > 1 else ""
        text = (f"Convolution: im2col copies every {c}x{kh}x{kw} window of the padded input (stride {s}) into a "
                f"column of {k} numbers; one matrix product (GEMM){per_stream}, W ({o}, {k}) @ col ({k}, "
                f"{out_shape[1] * out_shape[2]}), gives y[o,i,j] = {bias}sum_c,u,v W[o,c,u,v] * x[c,{i}+u,{j}+v]."
                + ("" if module.bias is not None else " No bias: the batch norm after it adds one."))
        if g > 1:
            return text + (f" groups={g}: {g} streams (the paper's two GPUs); the filters of stream g see only "
                           f"the g-th {c} of the {module.in_channels} input channels.")
        if c == 3:
            return text + " groups=1: every filter sees all 3 colour channels of the image."
        if streams:
            return text + (f" groups=1: every filter sees all {c} channels, so here the two streams exchange "
                           "information.")
        return text + (f" A 1x1 convolution mixes the {c} channels at each pixel." if kh == kw == 1 else "")
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
                f"feature c*{h * w} + h*{w} + w, the order of the next dense layer's weight columns.")
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
    if isinstance(module, ZeroPadShortcut):
        return (f"Shortcut, He et al.'s option A: one pixel in {module.stride} along each axis of the block's input "
                f"(x[:, :, ::{module.stride}, ::{module.stride}]), its {module.in_channels} channels framed by "
                f"{module.pad_before} + {module.pad_after} channels of zeros to give {module.out_channels}. No "
                "parameters: the block's input reaches its output unchanged, only sampled and padded.")
    return ""


def describe_join(formula: str, shortcut: str) -> str:
    """What a residual block's addition computes: ``formula`` is the block's, ``shortcut`` its other input in words."""
    return (f"Residual addition, y = {formula}: the main path's output plus {shortcut}, elementwise. The layers "
            "above learn only a correction to the block's input; backward hands the gradient to both paths "
            "unchanged, so it reaches the early layers even through a deep stack.")


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


# ---- the model and the image ----------------------------------------------------------
def parse_args(argv, prog: str = PROG):
    p = ArgumentParser(prog=prog, description="One image through a network, one layer at a time: the "
                       "reading guide's companion.")
    p.add_argument("--model", choices=MODELS, help="the network (default alexnet; a --weights checkpoint names "
                   "its own)")
    p.add_argument("--variant", choices=VARIANTS, help="--model alexnet: which AlexNet (default seed)")
    p.add_argument("--weights", default=None, help="a checkpoint of `minidl train`, or bare weights (.npz, "
                   ".safetensors, a PyTorch .pth) of --model (default: fresh weights)")
    p.add_argument("--data-dir", default=None, help="holds cifar-10-batches-py/ (default: download to the cache)")
    p.add_argument("--index", type=int, default=0, help="which test image (default 0)")
    p.add_argument("--image", default=None, help="walk this image file instead of a CIFAR-10 test image")
    p.add_argument("--out", default="runs/layer_by_layer", help="where the PNGs go")
    p.add_argument("--no-plots", action="store_true", help="print only: no PNGs (the autograd graph is still written)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading CIFAR-10")
    return p.parse_args(argv)


def load_model(args):
    """(model, class names, settings): the model of --weights, or --model fresh (seed 0, CIFAR-10's 10 classes)."""
    if args.weights:
        model, names, settings = model_from_weights(args.weights, args.model, args.variant, default_model="alexnet")
        print(f"weights: {args.weights} ({describe_model(settings)}, {len(names)} classes)")
        return model, names, settings
    name = args.model or "alexnet"
    settings = {"model": name, "variant": (args.variant or "seed") if name == "alexnet" else None, "seed": 0,
                "dataset": "cifar10", "preprocess": "standardize"}
    if args.variant is not None and name != "alexnet":
        raise InputError(f"--variant chooses the AlexNet; it does not apply to --model {name}")
    model = build_model(settings, len(CIFAR10_CLASSES)).eval()
    print(f"weights: none given, so fresh initial weights of {describe_model(settings)} (seed 0): the maps show "
          "what random filters do and the prediction is chance. Pass --weights to see a trained model.")
    return model, list(CIFAR10_CLASSES), settings


def load_image(args):
    """(image (1, 3, H, W) uint8, its name, its CIFAR-10 label or None)."""
    if args.image:
        return None, args.image, None
    url = os.environ.get("MINIDL_CIFAR10_URL")  # lets tests point the download at a local server
    data = load_cifar10(data_dir=args.data_dir, cache_dir=args.data_dir, download=not args.no_download,
                        val_size=0, progress=False, **({"url": url} if url else {}))
    if not 0 <= args.index < len(data.test_images):
        raise ValueError(f"--index must be in [0, {len(data.test_images)}), got {args.index}")
    label = int(data.test_labels[args.index])
    return data.test_images[args.index:args.index + 1], f"test image {args.index}", label


def prepare(image, settings, device, from_file: bool):
    """The model's input from a uint8 image (``from_file``: ``read_image``'s): the run's evaluation transform,
    and the steps in words."""
    size = input_size(settings)
    x = backend.to_device(image, device)
    steps, decoded = [], ""
    if settings.get("dataset") in DECODED:
        if from_file:
            decoded = (f" (decoded as the shorter side to {settings.get('resize_size') or round(size * 8 / 7)}, "
                       f"the central {size}x{size})")
        elif image.shape[-1] != size:  # a CIFAR-10 image for a model fed crops decoded at its size
            x = resize_bilinear(x, size)
            steps.append(f"bilinear resize -> {size}x{size}")
        steps.append("standardised per image" if settings.get("normalize") == "image" else
                     f"(x / 255 - mean) / std per channel, mean {settings['mean']}, std {settings['std']}")
    else:
        if settings.get("channel_mean") is not None:
            steps.append(f"(x / 255 - mean) / std per channel, mean {settings['channel_mean']}, "
                         f"std {settings['channel_std']}")
        else:
            steps.append("standardised (x - mean) / std" if settings.get("pixel_mean") is None else
                         "the training images' mean subtracted")
        if size != image.shape[-1]:
            steps.append(f"bilinear resize -> {size}x{size}")
    return evaluation_transform(settings)(x), decoded + "".join(f" -> {step}" for step in steps)


# ---- the walk ----------------------------------------------------------------------
def join_inputs(steps, index):
    """(main path's last step, shortcut's last step or None for the identity) of the join at ``index``."""
    k = index - 1
    shortcut_end = k if steps[k].role == "shortcut" else None
    while steps[k].role == "shortcut":
        k -= 1
    return k, shortcut_end


def run_steps(steps, x):
    """Run the ``steps`` of ``trace(model, ...)`` on ``x`` one at a time; yields (step, output Tensor), in order.

    A layer reads the output of its ``source`` step; a join adds the block's main path and
    its shortcut (the block's input where the shortcut is the identity), then applies the
    block's ``after`` layers: exactly what the block's forward does.
    """
    outputs = []
    for index, step in enumerate(steps):
        source = x if step.source < 0 else outputs[step.source]
        if step.role == "join":
            main_end, shortcut_end = join_inputs(steps, index)
            y = outputs[main_end] + (source if shortcut_end is None else outputs[shortcut_end])
            for _, layer in step.module.paths()[2]:
                y = layer(y)
        else:
            y = step.module(source)
        assert tuple(y.shape[1:]) == tuple(step.shape), "the arithmetic must predict what the kernel produced"
        outputs.append(y)
        yield step, y


def report(number, step, in_shape, y, streams, shortcut) -> None:
    """Print one step: what it computes, shapes, size arithmetic, parameters, output statistics."""
    module, out_shape = step.module, step.shape
    if step.role == "join":
        print(f"\n[{number:2d}] {step.name} ({type(module).__name__}: the residual addition)")
        what, params = describe_join(step.formula, shortcut), "0 (an addition; the block's weights are above)"
    else:
        where = ", on the shortcut" if step.role == "shortcut" else ""
        print(f"\n[{number:2d}] {step.name} ({type(module).__name__}{where})")
        what, params = describe(module, in_shape, out_shape, streams), count_parameters(module)
    print(textwrap.fill(what, width=110, initial_indent="     what:   ", subsequent_indent="             "))
    print(f"     shape:  {in_shape} -> {tuple(out_shape)}")
    if step.formula and isinstance(module, WINDOW_LAYERS):
        print(f"     size:   {size_line(module, in_shape, step.formula)}")
    elif step.formula and step.role != "join":   # a join's formula is in its description
        print(f"     how:    {step.formula}")
    print(f"     params: {params}")
    print(f"     output: {stats_line(y)}")


def first_conv(model):
    """(name, Conv2d) of the first convolution on 3 colour channels."""
    return next((name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3)


def run(args) -> int:
    device = backend.parse_device(args.device)
    image, title, label = load_image(args)
    make_directory(args.out)  # before the model: the autograd graph goes there even with --no-plots
    with backend.device_context(device):  # the model's GPU is current for everything below
        model, names, settings = load_model(args)
        model = model.to(device).eval()  # eval: BN uses running statistics, dropout is off
        if image is None:
            image = read_image(args.image, settings)[None]
        x, story = prepare(image, settings, device, from_file=args.image is not None)
        known = label is not None and tuple(names) == CIFAR10_CLASSES   # the image's label is one of the classes
        print(f"\ninput: {title}" + (f" (label: {CIFAR10_CLASSES[label]})" if label is not None else "") +
              f"; uint8 {tuple(image.shape)}{story} -> {tuple(x.shape)}\n"
              f"       {stats_line(backend.to_numpy(x))}")
        out = None if args.no_plots else Path(args.out)
        if out is not None:
            try:
                import matplotlib  # noqa: F401  (only to know whether we can draw)
                out.mkdir(parents=True, exist_ok=True)
            except ImportError:
                out = None
                print("matplotlib is not installed: skipping the images (pip install matplotlib)")
        streams = any(isinstance(m, nn.Conv2d) and m.groups == 2 for m in model.modules())
        if out is not None:
            side = image.shape[-1]
            shown = [(f"{side}x{side} as decoded" if args.image else "32x32 as stored", image[0].transpose(1, 2, 0))]
            if x.shape[-1] != image.shape[-1]:
                big = resize_bilinear(image, x.shape[-1])[0] / 255.0
                shown.append((f"bilinear resize to {x.shape[-1]}x{x.shape[-1]}", np.clip(big, 0, 1).transpose(1, 2, 0)))
            save_png(out / "00_input.png", title + (f": {CIFAR10_CLASSES[label]}" if label is not None else ""), shown)
            name, conv = first_conv(model)
            save_filters(out / f"00_{name.replace('.', '_')}_filters.png", name, backend.to_numpy(conv.weight.data),
                         streams)
            model.plot(out / "00_architecture.png")  # every layer's output shape, the streams or shortcuts

        # The walk: exactly what model.forward does, one layer (or one addition) at a time.
        steps = trace(model, tuple(x.shape[1:]))
        with no_grad():
            for index, (step, y) in enumerate(run_steps(steps, Tensor(x))):
                in_shape = tuple(x.shape[1:]) if step.source < 0 else steps[step.source].shape
                shortcut = None
                if step.role == "join":
                    main_end, shortcut_end = join_inputs(steps, index)
                    in_shape = steps[main_end].shape
                    shortcut = ("the block's input x (an identity shortcut)" if shortcut_end is None else
                                f"the shortcut's output ({steps[shortcut_end].name})")
                maps = backend.to_numpy(y.data)[0]
                report(index + 1, step, in_shape, maps, streams, shortcut)
                if out is not None and maps.ndim == 3:
                    save_feature_maps(out / f"{index + 1:02d}_{step.name.replace('.', '_')}.png", step.name, maps)
            probs = backend.to_numpy(F.softmax(y, axis=-1).data)[0]

        order = np.argsort(-probs, kind="stable")[:TOP]
        print("\nsoftmax(logits) = exp(z) / sum(exp(z))" +
              (f" (the {len(order)} most probable of {len(probs)} classes):" if len(probs) > TOP else ":"))
        width = max(len(names[i]) for i in order)
        for i in order:
            marks = ("  <- prediction" if i == order[0] else "") + ("  <- true label" if known and i == label else "")
            print(f"  {names[i]:>{width}}  {probs[i]:.4f}  {'#' * int(round(40 * probs[i]))}{marks}".rstrip())
        if label is not None and not known:
            print(f"  (the image is a CIFAR-10 {CIFAR10_CLASSES[label]}; this model's classes are others)")
        # the loss of the true label where the model knows it, else of its own prediction
        save_autograd_graph(Path(args.out), model, x, label if known else int(order[0]), device)
    if out is not None:
        print(f"\nfeature-map grids and the architecture picture saved in {out}/")
    return 0


def main(argv=None, prog: str = PROG) -> int:
    """Run ``minidl layers`` with ``argv`` (default: sys.argv[1:]); returns the exit code."""
    args = parse_args(argv, prog)
    try:
        return run(args)
    except (DatasetError, CheckpointError, backend.DeviceError, InputError, ValueError) as exc:
        error(prog, str(exc))
        return 1
    except Exception as exc:  # one clear line instead of a traceback
        return unexpected(prog, exc)
