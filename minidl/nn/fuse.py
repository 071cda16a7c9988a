"""A model rewritten for inference: batch norm folded into the weights, ReLU into the passes around it.

    fast = nn.fuse_for_inference(model)       # a new module; model is left as it is
    with minidl.no_grad():
        logits = fast(x)                        # model.eval()(x), to float32 rounding

In evaluation a batch norm is a fixed affine map per channel, y = s * x + t with
s = gamma / sqrt(running_var + eps) and t = beta - s * running_mean, so after a
convolution (or a dense layer) it can be folded into the weights and the bias:

    W' = s * W (one factor per output channel),    b' = s * (b - running_mean) + beta

and the batch norm's pass over the activations disappears. What else runs over every
activation without arithmetic to speak of is moved into its neighbours' passes:

    Conv2d [-> BatchNorm2d] -> ReLU     FusedConv2d: the ReLU in the convolution's output pass
    Linear -> BatchNorm1d               FusedLinear: the batch norm folded
    ReLU (or a fused one) -> MaxPool2d  ReLUMaxPool2d: max(relu(x)) = relu(max(x)), one running
                                        maximum from 0, keeping no argmax (inference needs none)
    Dropout, Identity                   removed: the identity in evaluation

The rewrite applies to every run of layers a module applies in order: ``nn.Sequential``
and the models that say so with ``runs_children_in_order = True`` (AlexNet); other
modules keep their own forward, their children rewritten the same way, and a module
can rewrite itself with a method ``fused_for_inference(self) -> Module`` (ResNet's
blocks fold their batch norms there). The rewritten model's parameters do not require
grad: the result is for inference (called with inputs that need gradients it still
computes correct ones, with the unfused ops). The ONNX export and checkpoints keep
the unfused model.
"""
from __future__ import annotations

import copy

import numpy as np

from .. import backend
from ..functional import fused
from ..kernels.prepared_weights import PreparedWeights
from .activation import Identity
from .batchnorm import _BatchNorm
from .layers import Conv2d, Dropout, Linear, MaxPool2d, ReLU
from .module import Module, Parameter


def fold_batch_norm(weight, bias, bn):
    """(W', b') of a layer with weight W (O, ...) and bias b (O,) or None followed by ``bn`` in evaluation.

    Computed in float64 on the host, returned in W's dtype on W's device.
    """
    w = backend.to_numpy(weight).astype(np.float64)
    mean = backend.to_numpy(bn.running_mean).astype(np.float64)
    scale = 1.0 / np.sqrt(backend.to_numpy(bn.running_var).astype(np.float64) + bn.eps)
    if bn.weight is not None:
        scale = scale * backend.to_numpy(bn.weight.data).astype(np.float64)
    b = np.zeros(w.shape[0]) if bias is None else backend.to_numpy(bias).astype(np.float64)
    b = scale * (b - mean) + (0.0 if bn.bias is None else backend.to_numpy(bn.bias.data).astype(np.float64))
    w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    device = backend.device_of(weight)
    return (backend.to_device(w.astype(weight.dtype), device), backend.to_device(b.astype(weight.dtype), device))


def _frozen(array) -> Parameter:
    """A parameter for inference: no gradient, and read-only on the CPU (kernels keep transforms of it)."""
    p = Parameter(array)
    p.requires_grad = False
    if isinstance(p.data, np.ndarray):
        p.data.flags.writeable = False
    return p


def _foldable(bn) -> bool:
    """Whether ``bn`` is a fixed affine map in evaluation (it keeps running statistics)."""
    return isinstance(bn, _BatchNorm) and bn.running_mean is not None


class FusedConv2d(Conv2d):
    """A Conv2d with the batch norm after it folded in (if any) and, with ``relu``, its ReLU in the output pass.

    Its weight is frozen: read-only on the CPU, and whatever the kernel multiplies by
    instead of it (Winograd's transformed filters) is prepared on the first call and kept
    (``PreparedWeights``). To change the weights, fuse the trained model again.

    Args:
        conv: the Conv2d; bn: the BatchNorm2d after it, or None; relu: whether a ReLU follows.
    """

    def __init__(self, conv: Conv2d, bn=None, relu: bool = False):
        Module.__init__(self)
        for attr in ("in_channels", "out_channels", "groups", "kernel_size", "stride", "padding", "_padding_arg",
                     "dilation"):
            object.__setattr__(self, attr, getattr(conv, attr))
        bias = None if conv.bias is None else conv.bias.data
        weight, bias = fold_batch_norm(conv.weight.data, bias, bn) if bn is not None else (conv.weight.data, bias)
        self.weight = _frozen(weight)
        self.bias = None if bias is None else _frozen(bias)
        self.relu = relu
        self.prepared = PreparedWeights()

    def forward(self, x, *, residual=None, relu=None):
        """The convolution (and its ReLU); ``residual`` and ``relu`` (minidl's, for a residual block's end):
        relu(conv(x) + residual), the addition and the ReLU in the convolution's output pass.
        ``relu`` None means the layer's own setting."""
        return fused.conv2d_inference(x, self.weight, self.bias, self.stride, self._padding_arg, self.groups,
                                      relu=self.relu if relu is None else relu, prepared=self.prepared,
                                      residual=residual)

    def extra_repr(self):
        return super().extra_repr() + (", relu" if self.relu else "")


class FusedLinear(Linear):
    """A Linear with the BatchNorm1d after it folded into its weights and bias."""

    def __init__(self, linear: Linear, bn):
        Module.__init__(self)
        object.__setattr__(self, "in_features", linear.in_features)
        object.__setattr__(self, "out_features", linear.out_features)
        bias = None if linear.bias is None else linear.bias.data
        weight, bias = fold_batch_norm(linear.weight.data, bias, bn)
        self.weight, self.bias = _frozen(weight), _frozen(bias)


class ReLUMaxPool2d(MaxPool2d):
    """max_pool2d(relu(x)): one running maximum from 0, and no argmax (inference)."""

    def __init__(self, pool: MaxPool2d):
        Module.__init__(self)
        for attr in ("kernel_size", "stride", "padding", "_padding_arg", "dilation", "return_indices", "ceil_mode"):
            object.__setattr__(self, attr, getattr(pool, attr))

    def forward(self, x):
        return fused.relu_max_pool2d(x, self.kernel_size, self.stride, self._padding_arg, self.ceil_mode)


def _plain_pool(layer) -> bool:
    """A MaxPool2d that ReLUMaxPool2d can replace: undilated windows, no indices returned."""
    return type(layer) is MaxPool2d and layer.dilation == (1, 1) and not layer.return_indices


def _fuse_in_order(module: Module) -> None:
    """Rewrite the children of a module that applies them in order (module doc), in place."""
    names = [name for name, _ in module.named_children()]
    layers = [getattr(module, name) for name in names]
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, (Dropout, Identity)):
            setattr(module, names[i], None)
            i += 1
            continue
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, Conv2d) and not isinstance(layer, FusedConv2d) and layer.dilation == (1, 1):
            bn = nxt if _foldable(nxt) else None
            j = i + 1 + (bn is not None)
            relu = j < len(layers) and type(layers[j]) is ReLU
            setattr(module, names[i], FusedConv2d(layer, bn, relu))
            for k in range(i + 1, j + relu):
                setattr(module, names[k], None)
            i = j + relu
            if relu and i < len(layers) and _plain_pool(layers[i]):
                setattr(module, names[i], ReLUMaxPool2d(layers[i]))
                i += 1
            continue
        if type(layer) is Linear and _foldable(nxt):
            setattr(module, names[i], FusedLinear(layer, nxt))
            setattr(module, names[i + 1], None)
            i += 2
            continue
        if type(layer) is ReLU and _plain_pool(nxt):
            setattr(module, names[i], None)
            setattr(module, names[i + 1], ReLUMaxPool2d(nxt))
            i += 2
            continue
        i += 1


def _fuse(module: Module) -> Module:
    for name, child in list(module.named_children()):
        setattr(module, name, _fuse(child))
    own = getattr(module, "fused_for_inference", None)
    if own is not None:
        return own()
    if getattr(module, "runs_children_in_order", False):
        _fuse_in_order(module)
    return module


def _copy_for_inference(model: Module) -> Module:
    """A deep copy of ``model`` without what only training needs (the gradients, and the gradient
    hooks: a data-parallel reducer's, which would drag its communicator in), and sharing, not
    copying, a SyncBatchNorm's process group (a communicator cannot be copied)."""
    memo = {}                                 # deepcopy takes a memo entry as the copy
    for p in model.parameters():
        for owned in (p.grad, p._grad_hooks):
            if owned is not None:
                memo[id(owned)] = None
    for m in model.modules():
        group = getattr(m, "process_group", None)
        if group is not None:
            memo[id(group)] = group
    return copy.deepcopy(model, memo)


def fuse_for_inference(model: Module) -> Module:
    """A new module computing ``model``'s evaluation-mode outputs with fewer passes (module doc).

    Args:
        model: any Module; it is copied, not changed.
    Returns:
        the rewritten copy, in evaluation mode, its parameters frozen (requires_grad False).
    """
    if not isinstance(model, Module):
        raise TypeError(f"fuse_for_inference: expected a minidl Module, got {type(model).__name__}")
    copied = _copy_for_inference(model)
    copied.eval()
    fused_model = _fuse(copied)
    for p in fused_model.parameters():   # for inference: nothing asks autograd to record a graph
        p.requires_grad = False
    return fused_model
