"""ONNX export of the activation layers (part of ``minidl.onnx``; needs the ``onnx`` extra).

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
==============================  ========================================================
"""
from __future__ import annotations

import numpy as np

from . import nn
from .functional.relu_variants import SELU_ALPHA, SELU_SCALE


def constant(graph, name, value):
    """A constant initializer in the graph's float dtype."""
    return graph.weight(name, np.asarray(value, dtype=graph.dtype))


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


def export_activation(graph, name, module, x):
    """The ONNX output name for activation layer ``module`` applied to ``x``; None for other layers."""
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
    return None
