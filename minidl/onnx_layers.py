"""ONNX export of the activation, per-sample normalisation and upsampling layers (part of ``minidl.onnx``).

Each layer becomes ONNX's own operator where opset 13 has one with the same meaning,
else its formula in elementary operators:

==============================  ========================================================
minidl                          ONNX (opset 13)
==============================  ========================================================
Sigmoid, Tanh                   Sigmoid, Tanh
LeakyReLU                       LeakyRelu
GELU                            x * 0.5 * (1 + Erf(x / sqrt 2)), or the tanh
                                approximation with Tanh (opset 13 has no Gelu)
Hardtanh, ReLU6                 Clip with the bounds as inputs
Hardsigmoid                     HardSigmoid (alpha 1/6, beta 1/2)
Hardswish                       x * HardSigmoid(x) (HardSwish arrived in opset 14)
SiLU                            x * Sigmoid(x)
Mish                            x * Tanh(Softplus(x)) (Mish arrived in opset 18)
ELU, SELU                       Elu, Selu with the layer's constants
Softplus                        Where(beta x > threshold, x, Softplus(beta x) / beta):
                                ONNX's Softplus has neither beta nor PyTorch's switch
LayerNorm                       its formula: ReduceMean, Sub, Mul, ReduceMean, Add eps,
                                Sqrt, Div, then Mul weight, Add bias (LayerNormalization
                                arrived in opset 17)
GroupNorm                       Reshape to (N, G, -1), InstanceNormalization (scale 1,
                                bias 0), Reshape back, Mul weight, Add bias
ConvTranspose2d                 ConvTranspose (the same weight layout)
Upsample                        Resize: nearest with "asymmetric" coordinates and floor;
                                nearest-exact with "half_pixel" and round_prefer_ceil;
                                bilinear with "half_pixel" or "align_corners"; the
                                output size as the input's (N, C) and (OH, OW), or the
                                scale factors when given ("area" does not export: use
                                AdaptiveAvgPool2d)
==============================  ========================================================
"""
from __future__ import annotations

import numpy as np

from . import nn
from .functional.interpolation import resized_hw
from .functional.relu_variants import SELU_ALPHA, SELU_SCALE


def constant(graph, name, value):
    """A constant initializer in the graph's float dtype."""
    return graph.weight(name, np.asarray(value, dtype=graph.dtype))


def weight_inputs(graph, name, module, x) -> list:
    """[x, weight, bias] (bias only when the layer has one), stored under the state_dict's names:
    the inputs of Conv, ConvTranspose and Gemm."""
    inputs = [x, graph.weight(f"{name}.weight", module.weight.data)]
    if module.bias is not None:
        inputs.append(graph.weight(f"{name}.bias", module.bias.data))
    return inputs


def _export_gelu(graph, name, module, x, step):
    """GELU from its formula (opset 13 has no Gelu operator)."""
    one, half = constant(graph, f"{name}.one", 1.0), constant(graph, f"{name}.half", 0.5)
    if module.approximate == "tanh":   # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = step("Mul", [step("Mul", [x, x], "square"), x], "cube")
        inner = step("Add", [x, step("Mul", [cube, constant(graph, f"{name}.cubic", 0.044715)], "scaled_cube")],
                     "inner")
        phi = step("Tanh", [step("Mul", [inner, constant(graph, f"{name}.sqrt_2_over_pi", np.sqrt(2 / np.pi))],
                                 "scaled")], "tanh")
    else:   # 0.5 x (1 + erf(x / sqrt 2))
        phi = step("Erf", [step("Div", [x, constant(graph, f"{name}.sqrt2", np.sqrt(2.0))], "scaled")], "erf")
    half_x = step("Mul", [x, half], "half_x")
    return graph.node("Mul", [half_x, step("Add", [phi, one], "one_plus")], name, name)


def _export_softplus(graph, name, module, x, step):
    """Softplus with beta and PyTorch's linear switch past the threshold."""
    scaled = step("Mul", [x, constant(graph, f"{name}.beta", module.beta)], "scaled")
    smooth = step("Div", [step("Softplus", [scaled], "softplus"), constant(graph, f"{name}.beta_divisor", module.beta)],
                  "smooth")
    linear = step("Greater", [scaled, constant(graph, f"{name}.threshold", module.threshold)], "linear")
    return graph.node("Where", [linear, x, smooth], name, name)


def _export_layer_norm(graph, name, module, x, step):
    """LayerNorm from its formula (opset 13 has no LayerNormalization)."""
    axes = list(range(-len(module.normalized_shape), 0))
    centered = step("Sub", [x, step("ReduceMean", [x], "mean", axes=axes, keepdims=1)], "centered")
    var = step("ReduceMean", [step("Mul", [centered, centered], "square")], "var", axes=axes, keepdims=1)
    std = step("Sqrt", [step("Add", [var, constant(graph, f"{name}.eps", module.eps)], "var_eps")], "std")
    y = step("Div", [centered, std], "normalized")
    return _scale_and_shift(graph, name, module, y, step, module.normalized_shape)


def _export_group_norm(graph, name, module, x, shape, step):
    """GroupNorm as InstanceNormalization of the (N, G, C/G * H * W) view."""
    groups = module.num_groups
    grouped = step("Reshape", [x, graph.weight(f"{name}.grouped_shape", np.array([0, groups, -1]))], "grouped")
    normalized = step("InstanceNormalization", [grouped, constant(graph, f"{name}.ones", np.ones(groups)),
                                                constant(graph, f"{name}.zeros", np.zeros(groups))],
                      "normalized", epsilon=module.eps)
    y = step("Reshape", [normalized, step("Shape", [x], "shape")], "ungrouped")
    return _scale_and_shift(graph, name, module, y, step, (module.num_channels,) + (1,) * (len(shape) - 1))


def _scale_and_shift(graph, name, module, y, step, shape):
    """y * weight + bias (each when present), the parameters reshaped to ``shape``; the last output is ``name``."""
    if module.weight is not None:
        y = step("Mul", [y, graph.weight(f"{name}.weight", module.weight.data.reshape(shape))], "scaled")
    if module.bias is not None:
        y = step("Add", [y, graph.weight(f"{name}.bias", module.bias.data.reshape(shape))], "shifted")
    graph.nodes[-1].output[0] = name
    return name


_RESIZE = {"nearest": dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
           "nearest-exact": dict(mode="nearest", coordinate_transformation_mode="half_pixel",
                                 nearest_mode="round_prefer_ceil"),
           "bilinear": dict(mode="linear", coordinate_transformation_mode="half_pixel"),
           "bilinear corners": dict(mode="linear", coordinate_transformation_mode="align_corners")}


def _export_upsample(graph, name, module, x, shape, step):
    """Upsample as Resize, its coordinates and rounding chosen to be PyTorch's."""
    if module.mode == "area":
        raise ValueError(f"minidl.onnx.export: {name} is Upsample(mode='area'); export it as AdaptiveAvgPool2d")
    key = "bilinear corners" if module.mode == "bilinear" and module.align_corners else module.mode
    (oh, ow), (sh, sw) = resized_hw(shape[1:], module.size, module.scale_factor, "Upsample")
    if module.size is None and not module.recompute_scale_factor:   # the coordinates use 1 / scale_factor
        scales = graph.weight(f"{name}.scales", np.array([1, 1, sh, sw], np.float32))   # float32 in any model
        return graph.node("Resize", [x, "", scales], name, name, **_RESIZE[key])
    batch_channels = step("Slice", [step("Shape", [x], "shape"), graph.weight(f"{name}.start", np.array([0])),
                                    graph.weight(f"{name}.stop", np.array([2]))], "batch_channels")
    sizes = step("Concat", [batch_channels, graph.weight(f"{name}.size", np.array([oh, ow]))], "sizes", axis=0)
    return graph.node("Resize", [x, "", "", sizes], name, name, **_RESIZE[key])


def export_modern_layer(graph, name, module, x, shape):
    """The ONNX output name for ``module`` (an activation, LayerNorm, GroupNorm, Upsample, ConvTranspose2d) applied to
    ``x`` of per-sample ``shape``; None for other layers."""
    def step(op, inputs, label, **attributes):
        return graph.node(op, inputs, f"{name}/{label}", f"{name}/{label}", **attributes)

    def times_x(gate):   # x * gate(x): SiLU, Mish and Hardswish
        return graph.node("Mul", [x, gate], name, name)

    if isinstance(module, nn.Sigmoid):
        return graph.node("Sigmoid", [x], name, name)
    if isinstance(module, nn.Tanh):
        return graph.node("Tanh", [x], name, name)
    if isinstance(module, nn.LeakyReLU):
        return graph.node("LeakyRelu", [x], name, name, alpha=float(module.negative_slope))
    if isinstance(module, nn.GELU):
        return _export_gelu(graph, name, module, x, step)
    if isinstance(module, (nn.Hardtanh, nn.ReLU6)):
        low, high = (module.min_val, module.max_val) if isinstance(module, nn.Hardtanh) else (0.0, 6.0)
        return graph.node("Clip", [x, constant(graph, f"{name}.min", low), constant(graph, f"{name}.max", high)],
                          name, name)
    if isinstance(module, nn.Hardsigmoid):
        return graph.node("HardSigmoid", [x], name, name, alpha=1 / 6, beta=0.5)
    if isinstance(module, nn.Hardswish):
        return times_x(step("HardSigmoid", [x], "hardsigmoid", alpha=1 / 6, beta=0.5))
    if isinstance(module, nn.SiLU):
        return times_x(step("Sigmoid", [x], "sigmoid"))
    if isinstance(module, nn.Mish):
        return times_x(step("Tanh", [step("Softplus", [x], "softplus")], "tanh"))
    if isinstance(module, nn.ELU):
        return graph.node("Elu", [x], name, name, alpha=float(module.alpha))
    if isinstance(module, nn.SELU):
        return graph.node("Selu", [x], name, name, alpha=SELU_ALPHA, gamma=SELU_SCALE)
    if isinstance(module, nn.Softplus):
        return _export_softplus(graph, name, module, x, step)
    if isinstance(module, nn.LayerNorm):
        return _export_layer_norm(graph, name, module, x, step)
    if isinstance(module, nn.GroupNorm):
        return _export_group_norm(graph, name, module, x, shape, step)
    if isinstance(module, nn.Upsample):
        return _export_upsample(graph, name, module, x, shape, step)
    if isinstance(module, nn.ConvTranspose2d):
        (ph, pw), (eh, ew) = module.padding, module.output_padding
        return graph.node("ConvTranspose", weight_inputs(graph, name, module, x), name, name, kernel_shape=list(module.kernel_size),
                          strides=list(module.stride), dilations=list(module.dilation), pads=[ph, pw, ph, pw],
                          output_padding=[eh, ew], group=module.groups)
    return None
