"""ONNX export of a model's evaluation-mode computation (needs the ``onnx`` extra).

    import minidl.onnx
    minidl.onnx.export(AlexNet(variant="cifar"), "alexnet_cifar.onnx", (3, 32, 32))

    import onnxruntime                                    # runs anywhere ONNX does
    session = onnxruntime.InferenceSession("alexnet_cifar.onnx")
    logits = session.run(None, {"input": images_float32})[0]

The model is a stack of layers applied in order (``AlexNet``, ``ResNet``, airbench94,
``nn.Sequential``; Sequentials inside are opened); each layer becomes the ONNX
operator(s) that compute what minidl computes in eval mode, with the weights stored
as initializers (float32 as in the model) under their state_dict names:

=====================  =================================================================
minidl                 ONNX (opset 13)
=====================  =================================================================
Conv2d                 Conv with ``group``; padding resolved for the input size, so
                       TensorFlow's asymmetric "same" (3 top/left, 4 bottom/right for
                       AlexNet's conv1) is written as explicit ``pads``
BatchNorm2d/1d (eval)  BatchNormalization with the running statistics
ReLU                   Relu
MaxPool2d              MaxPool (ONNX ignores padded cells, like minidl's -inf padding)
LocalResponseNorm      LRN with alpha * size: ONNX divides alpha by size, minidl (the
                       paper) does not; odd sizes only, where both windows agree
Flatten                Flatten (axis 1: (N, C, H, W) -> (N, C*H*W) in C order)
Linear                 Gemm with transB=1 (weight is (out, in))
Dropout (eval)         nothing: the identity in eval mode
AvgPool2d              AveragePool with ``count_include_pad`` when its windows are
                       ONNX's; with a ceil-mode overhang or ``divisor_override``: Pad
                       (zeros), AveragePool, and Mul by each window's kernel area /
                       PyTorch's divisor, which is exact in every case
AdaptiveAvgPool2d      GlobalAveragePool for 1 x 1; AveragePool when the output divides
                       the input (other sizes do not export)
AdaptiveMaxPool2d      GlobalMaxPool / MaxPool, likewise
Identity               nothing
Sigmoid, Tanh, GELU,   see ``onnx_layers.py``: ONNX's operator where opset 13 has
LeakyReLU, the ReLU    one (Sigmoid, LeakyRelu, Clip, HardSigmoid, Elu, Resize, ...),
family, LayerNorm,     else the layer's formula (GELU, SiLU, Mish, Hardswish,
GroupNorm, Upsample    LayerNorm, GroupNorm through InstanceNormalization)
BasicBlock (ResNet)    its main path and its shortcut (the 1x1 Conv and
                       BatchNormalization of ``downsample``, or none), both reading the
                       block's input, then Add and Relu
ZeroPadShortcut        Slice (steps 2 on H and W: x[:, :, ::2, ::2]) and Pad (zero
                       channels before and after)
Scale (airbench94)     Mul by the factor
=====================  =================================================================

The file is checked with ``onnx.checker`` (with shape inference) before it is
written. Exporting reads the model and never changes it, not even its mode.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import backend, nn
from .checkpoint import atomic_write
from .models.airbench import Airbench94, Scale
from .models.alexnet import AlexNet
from .models.resnet import ResNet, ZeroPadShortcut
from .nn.structure import stack_layers
from .onnx_layers import constant as _constant, export_modern_layer, weight_inputs
from .window import ceil_mode_pads, covering_pads, output_hw, pool_output_hw, resolve_padding, window_cells

OPSET = 13
IR_VERSION = 7  # the IR version of opset 13, so that older runtimes load the file too


def _import_onnx():
    try:
        import onnx
        from onnx import helper
    except ImportError:
        raise ImportError("minidl.onnx.export needs the onnx package: pip install 'minidl[onnx]'") from None
    return onnx, helper


class _Graph:
    """Collects ONNX nodes and weights, naming each layer's output after the layer."""

    def __init__(self, helper):
        self.helper = helper
        self.nodes, self.weights = [], []

    def weight(self, name, array):
        self.weights.append((name, backend.to_numpy(array)))
        return name

    def node(self, op, inputs, output, name, **attributes):
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=name, **attributes))
        return output

    def initialize(self, graph_proto) -> None:
        """Store the weights as initializers, written straight into the graph.

        (numpy_helper.from_array + make_graph would copy AlexNet's 230 MB twice more.)
        """
        for name, array in self.weights:
            tensor = graph_proto.initializer.add()
            tensor.name = name
            tensor.data_type = self.helper.np_dtype_to_tensor_dtype(array.dtype)
            tensor.dims.extend(array.shape)
            tensor.raw_data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _pads(module, spatial):
    """ONNX's pads [top, left, bottom, right] for a window layer at this input size.

    A max pool's ceil_mode becomes extra padding after the input (-inf never wins),
    so ONNX's floor rule gives PyTorch's ceil-mode windows exactly.
    """
    dilation = getattr(module, "dilation", (1, 1))
    pads = resolve_padding("onnx", module.padding, spatial, module.kernel_size, module.stride, dilation)
    if getattr(module, "ceil_mode", False) and isinstance(module, nn.MaxPool2d):
        pads = ceil_mode_pads(spatial, module.kernel_size, module.stride, pads, dilation)
    (top, bottom), (left, right) = pads
    return [top, left, bottom, right]


def _export_layer(graph, name, module, x, shape):
    """Add ``module``'s operators reading tensor ``x`` of per-sample ``shape``; return the output tensor name."""
    out = name
    if isinstance(module, nn.Conv2d):
        return graph.node("Conv", weight_inputs(graph, name, module, x), out, name, group=module.groups, kernel_shape=list(module.kernel_size),
                          strides=list(module.stride), pads=_pads(module, shape[1:]),
                          dilations=list(module.dilation))
    if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d, nn.SyncBatchNorm)):  # eval mode: all alike
        if module.running_mean is None:
            raise ValueError(f"minidl.onnx.export: {name} keeps no running statistics (track_running_stats=False), "
                             "so inference normalises each batch by itself, which ONNX's BatchNormalization cannot")
        ones, zeros = np.ones_like(module.running_mean), np.zeros_like(module.running_mean)  # affine=False
        inputs = [x] + [graph.weight(f"{name}.{key}", value) for key, value in
                        (("weight", ones if module.weight is None else module.weight.data),
                         ("bias", zeros if module.bias is None else module.bias.data),
                         ("running_mean", module.running_mean), ("running_var", module.running_var))]
        return graph.node("BatchNormalization", inputs, out, name, epsilon=float(module.eps))
    if isinstance(module, nn.ReLU):
        return graph.node("Relu", [x], out, name)
    if isinstance(module, nn.MaxPool2d):
        if module.return_indices:
            raise ValueError(f"minidl.onnx.export: {name} returns indices; only the pooled values export")
        return graph.node("MaxPool", [x], out, name, kernel_shape=list(module.kernel_size),
                          strides=list(module.stride), pads=_pads(module, shape[1:]),
                          dilations=list(module.dilation))
    if isinstance(module, nn.LocalResponseNorm):
        if module.size % 2 == 0:
            raise ValueError(f"minidl.onnx.export: {name} is a LocalResponseNorm of even size {module.size}; "
                             "ONNX's LRN window then reaches one channel further up than minidl's, so only odd "
                             "sizes export")
        return graph.node("LRN", [x], out, name, size=int(module.size), alpha=float(module.alpha * module.size),
                          beta=float(module.beta), bias=float(module.k))
    if isinstance(module, nn.Flatten):
        return graph.node("Flatten", [x], out, name, axis=1)
    if isinstance(module, nn.Linear):
        return graph.node("Gemm", weight_inputs(graph, name, module, x), out, name, transB=1)
    if isinstance(module, nn.Dropout):
        return x  # eval mode: the identity
    return _export_more_layers(graph, name, module, x, shape)


def _export_path(graph, layers, x, shape, prefix=""):
    """Export (name, layer) pairs applied in order to tensor ``x`` of per-sample ``shape``.

    Returns the output tensor's name and per-sample shape. Sequentials are opened.
    """
    for name, module in layers:
        full = prefix + name
        if isinstance(module, nn.Sequential):
            x, shape = _export_path(graph, module.named_children(), x, shape, full + ".")
            continue
        x = _export_layer(graph, full, module, x, shape)
        try:
            shape = tuple(module.shape_info(shape)[0])
        except ValueError as exc:
            raise ValueError(f"minidl.onnx.export: layer {full!r} does not accept per-sample shape {shape}: "
                             f"{exc}") from None
    return x, shape


def _export_block(graph, name, block, x, shape):
    """A residual block: y = after(main(x) + shortcut(x)); the last operator's output is named ``name``."""
    main, shortcut, after = block.paths()
    h, _ = _export_path(graph, main, x, shape, name + ".")
    s, _ = _export_path(graph, shortcut, x, shape, name + ".")   # an empty shortcut leaves x as it is
    y = graph.node("Add", [h, s], name if not after else f"{name}/add", f"{name}/add")
    out_shape = tuple(block.shape_info(shape)[0])
    for i, (layer_name, layer) in enumerate(after):
        y = _export_layer(graph, f"{name}/{layer_name}", layer, y, out_shape)
        if i == len(after) - 1:
            graph.nodes[-1].output[0] = y = name
    return y


def _export_zero_pad_shortcut(graph, name, module, x, shape):
    """Option A's shortcut: Slice every ``stride``-th row and column, then Pad zero channels on both sides."""
    _, h, w = shape
    s = module.stride
    if s > 1:
        inputs = [x] + [graph.weight(f"{name}.{key}", np.array(value, np.int64))
                        for key, value in (("starts", [0, 0]), ("ends", [h, w]), ("axes", [2, 3]), ("steps", [s, s]))]
        x = graph.node("Slice", inputs, f"{name}/subsample", f"{name}/subsample")
    pads = np.array([0, module.pad_before, 0, 0, 0, module.pad_after, 0, 0], np.int64)
    return graph.node("Pad", [x, graph.weight(f"{name}.pads", pads)], name, name)


def _build(helper, model, input_shape, input_name, output_name):
    """The (unchecked) ONNX ``ModelProto`` of ``model`` in eval mode (see ``export``)."""
    shape = tuple(int(v) for v in input_shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"minidl.onnx.export: input_shape must be (C, H, W) or (N, C, H, W), got {input_shape!r}")
    batch = shape[0] if len(shape) == 4 else "N"
    sample = shape[-3:]
    if not isinstance(model, (AlexNet, ResNet, Airbench94, nn.Sequential)):
        # Only these are known to apply their layers in order; another forward could do anything.
        raise ValueError(f"minidl.onnx.export: expected an AlexNet, a ResNet, airbench94 or an nn.Sequential, got "
                         f"{type(model).__name__}")
    if not isinstance(model, nn.Sequential):   # the model knows its inputs: say so before any layer complains
        try:
            model.check_input_shape((None,) + sample)
        except ValueError as exc:
            raise ValueError(f"minidl.onnx.export: {exc}") from None
    param = next(iter(model.parameters()), None)
    graph = _Graph(helper)
    graph.dtype = np.dtype(param.dtype if param is not None else np.float32)   # the constants' dtype
    if not list(stack_layers(model)):
        raise ValueError(f"minidl.onnx.export: {type(model).__name__} has no layers to export")
    x, current = _export_path(graph, model.named_children(), input_name, sample)
    if x == input_name:  # a model of identities only: ONNX needs at least one node
        graph.node("Identity", [x], output_name, "identity")
    else:  # the last operator writes the graph's output (in a stack nothing else reads its tensor)
        assert graph.nodes[-1].output[0] == x
        graph.nodes[-1].output[0] = output_name
    dtype = helper.np_dtype_to_tensor_dtype(graph.dtype)
    inputs = [helper.make_tensor_value_info(input_name, dtype, [batch, *sample])]
    outputs = [helper.make_tensor_value_info(output_name, dtype, [batch, *current])]
    onnx_graph = helper.make_graph(graph.nodes, type(model).__name__, inputs, outputs)
    graph.initialize(onnx_graph)
    return helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             producer_name="minidl", ir_version=IR_VERSION)


def export(model, path, input_shape, *, input_name="input", output_name="logits") -> Path:
    """Write ``model``'s eval-mode computation as an ONNX file.

    Args:
        model: ``AlexNet`` (any variant), a ``ResNet`` or an ``nn.Sequential`` of minidl layers.
        path: the ``.onnx`` file to write (atomically).
        input_shape: (C, H, W) for a variable batch size, or (N, C, H, W) for a fixed one.
        input_name, output_name: the graph's input and output names.

    Returns:
        the path written.
    Shapes:
        the file maps input (N, C, H, W) float32 -> output (N, num_classes).
    Raises:
        ValueError for a layer ONNX cannot express here or an input shape the model
        does not accept; ImportError (saying what to install) without ``onnx``.
    """
    onnx, helper = _import_onnx()
    proto = _build(helper, model, input_shape, input_name, output_name)
    data = proto.SerializeToString()
    # Checking the bytes, not the proto, saves a second serialisation (a second for AlexNet's 230 MB).
    onnx.checker.check_model(data, full_check=True)
    path = Path(path)
    atomic_write(path, lambda f: f.write(data))
    return path


# ---- the layers added for modern CNNs ----------------------------------------------------

def _export_avg_pool(graph, name, module, x, shape):
    """AvgPool2d as AveragePool, or as Pad + AveragePool + Mul where ONNX's divisors differ from PyTorch's."""
    spatial, kernel, stride = shape[1:], module.kernel_size, module.stride
    pads = resolve_padding("onnx", module.padding, spatial, kernel, stride)
    out = pool_output_hw("onnx", spatial, kernel, stride, pads, module.ceil_mode)
    if out == output_hw("onnx", spatial, kernel, stride, pads) and module.divisor_override is None:
        # No ceil-mode overhang: ONNX's windows and divisors are PyTorch's.
        (top, bottom), (left, right) = pads
        return graph.node("AveragePool", [x], name, name, kernel_shape=list(kernel), strides=list(stride),
                          pads=[top, left, bottom, right], count_include_pad=int(module.count_include_pad))
    (top, bottom), (left, right) = covering_pads(spatial, kernel, stride, pads, out)
    padded = graph.node("Pad", [x, graph.weight(f"{name}.pads", np.array([0, 0, top, left, 0, 0, bottom, right]))],
                        f"{name}/pad", f"{name}/pad")
    mean = graph.node("AveragePool", [padded], f"{name}/mean", f"{name}/mean", kernel_shape=list(kernel),
                      strides=list(stride))   # sum / (KH * KW): every window lies inside the padded input
    if module.divisor_override is not None:
        divisor = np.full(out, float(module.divisor_override))
    else:
        rows, cols = (window_cells(n, k, s, a, b, o, module.count_include_pad)
                      for n, k, s, (a, b), o in zip(spatial, kernel, stride, pads, out))
        divisor = np.outer(rows, cols)
    return graph.node("Mul", [mean, _constant(graph, f"{name}.scale", kernel[0] * kernel[1] / divisor)],
                      name, name)


def _export_adaptive_pool(graph, name, module, x, shape):
    """Adaptive pooling as global pooling, or as a plain pool when the output divides the input."""
    average = isinstance(module, nn.AdaptiveAvgPool2d)
    if not average and module.return_indices:
        raise ValueError(f"minidl.onnx.export: {name} returns indices; only the pooled values export")
    _, h, w = shape
    _, oh, ow = module.shape_info(shape)[0]
    if (oh, ow) == (1, 1):
        return graph.node("GlobalAveragePool" if average else "GlobalMaxPool", [x], name, name)
    if h % oh or w % ow:
        raise ValueError(f"minidl.onnx.export: {name} pools {h}x{w} to {oh}x{ow}, whose windows differ in size; "
                         "only outputs that divide the input (or 1x1) export")
    kernel = [h // oh, w // ow]
    return graph.node("AveragePool" if average else "MaxPool", [x], name, name, kernel_shape=kernel, strides=kernel)


def _export_more_layers(graph, name, module, x, shape):
    """``_export_layer`` for the pooling and activation layers beyond AlexNet's."""
    if isinstance(module, nn.AvgPool2d):
        return _export_avg_pool(graph, name, module, x, shape)
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return _export_adaptive_pool(graph, name, module, x, shape)
    if isinstance(module, nn.Identity):
        return x
    modern = export_modern_layer(graph, name, module, x, shape)
    if modern is not None:
        return modern
    if hasattr(module, "paths"):
        return _export_block(graph, name, module, x, shape)
    if isinstance(module, ZeroPadShortcut):
        return _export_zero_pad_shortcut(graph, name, module, x, shape)
    if isinstance(module, Scale):   # airbench94's logit scale
        return graph.node("Mul", [x, _constant(graph, f"{name}.factor", module.factor)], name, name)
    raise ValueError(f"minidl.onnx.export: no ONNX translation for layer {name!r} ({type(module).__name__})")
