"""Fused ops: a convolution with its ReLU and a ReLU with the max pooling after it (inference),
and a batch norm with the ReLU after it (training).

A trained network spends much of its evaluation time in passes over memory that do
little arithmetic: a ReLU reads and writes every activation once more after the
convolution that made it. Applied while each slice of the convolution's output is
still in cache, the ReLU costs almost nothing; and since max(relu(x)) = relu(max(x)),
a ReLU followed by max pooling is a running maximum that starts at 0 instead of at
the first tap. ``minidl.nn.fuse_for_inference`` builds these into a model.

Each op's reference is the two public ops composed, and that is what runs whenever a
gradient could be asked for (an input that requires grad, outside ``no_grad``), so the
fused ops are always correct; the fused fast paths (``minidl.kernels.dispatch``, the
``relu`` flag of conv2d and max_pool2d) run for inference only.

Training has the mirror case: batch norm's last forward pass writes y = gamma * xhat +
beta, and the ReLU after it reads y and writes max(y, 0); backward reads both again to
mask the gradient. ``batch_norm_relu`` clips in batch norm's own pass, noting where y > 0
in one byte per value, and masks the gradient inside batch norm's two backward passes,
which read gy anyway; ``minidl.nn.forward_chain``
uses it wherever a training model has a batch norm followed by a ReLU. Its numbers are
those of the two ops composed, bit for bit.
"""
from __future__ import annotations

import os

from ..autograd import Tensor, is_grad_enabled
from ..kernels import dispatch
from . import activation
from .conv import conv2d, conv_geometry
from .fast_path import FastPath
from .normalization import batch_norm, batch_norm_settings
from .pooling import max_pool2d, pool_geometry


def _needs_graph(*tensors) -> bool:
    """Whether autograd would record a call on these inputs (then the composed reference runs)."""
    return is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in tensors)


def _data(x):
    return x.data if isinstance(x, Tensor) else x


def conv2d_relu(x, weight, bias=None, stride=1, padding=0, groups: int = 1) -> Tensor:
    """relu(conv2d(x, weight, bias, ...)), the ReLU in the convolution's output pass when inferring.

    Args and Shapes: as ``conv2d`` (a batch (N, C, H, W); no dilation).
    """
    return conv2d_inference(x, weight, bias, stride, padding, groups, relu=True)


def conv2d_inference(x, weight, bias=None, stride=1, padding=0, groups: int = 1, *, relu: bool = False,
                     prepared=None, residual=None) -> Tensor:
    """A frozen layer's convolution: conv2d, or relu(conv2d) with ``relu``, for inference.

    Args:
        x, weight, bias, stride, padding, groups: as ``conv2d`` (a batch (N, C, H, W); no dilation).
        relu: apply the ReLU in the convolution's output pass.
        residual: None, or a Tensor of the output's shape added to it before the ReLU, in the
            same pass (a residual block's shortcut): relu(conv2d(x) + residual).
        prepared: the layer's ``minidl.kernels.prepared_weights.PreparedWeights``, where a
            kernel keeps the transformed weight it multiplies by (Winograd's), computed once
            instead of every call; the layer must not change ``weight`` in place.
    Shapes: as ``conv2d``.
    """
    def composed():
        y = conv2d(x, weight, bias, stride, padding, groups)
        y = y if residual is None else y + residual
        return activation.relu(y) if relu else y

    if x.ndim != 4 or _needs_graph(x, weight, bias, residual) or (
            residual is not None and _data(residual).dtype != _data(x).dtype):
        return composed()
    kernel, stride, pads, dilation, out_hw = conv_geometry(x, weight, bias, stride, padding, groups, 1)
    if residual is not None and tuple(residual.shape) != (x.shape[0], weight.shape[0]) + tuple(out_hw):
        raise ValueError(f"conv2d_inference: residual must have the output's shape "
                         f"{(x.shape[0], weight.shape[0]) + tuple(out_hw)}, got {tuple(residual.shape)}")
    algorithm = os.environ.get("MINIDL_CONV_ALGORITHM", "auto").strip() or "auto"   # as conv2d's default
    fast = dispatch.conv2d(_data(x), kernel, stride, pads, groups, out_hw, algorithm, dilation, relu=relu,
                           prepared=prepared, residual=None if residual is None else _data(residual))
    if fast is None:
        return composed()
    fn = FastPath(("Conv2dAdd" if residual is not None else "Conv2d") + ("ReLU" if relu else ""), fast)
    return fn(x, weight) if bias is None else fn(x, weight, bias)


def relu_max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode: bool = False) -> Tensor:
    """max_pool2d(relu(x), ...) = relu(max_pool2d(x, ...)), one running maximum from 0 when inferring.

    Args and Shapes: as ``max_pool2d`` (a batch (N, C, H, W); no dilation or indices).
    """
    if x.ndim != 4 or _needs_graph(x):
        return max_pool2d(activation.relu(x), kernel_size, stride, padding, ceil_mode=ceil_mode)
    kernel, stride, pads, dilation = pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    fast = dispatch.max_pool2d(_data(x), kernel, stride, pads, dilation, relu=True)
    if fast is None:
        return max_pool2d(activation.relu(x), kernel_size, stride, padding, ceil_mode=ceil_mode)
    return FastPath("ReLUMaxPool2d", fast)(x)


def batch_norm_relu(x, weight=None, bias=None, running_mean=None, running_var=None, training: bool = False,
                    momentum: float = 0.1, eps: float = 1e-5, channel_reduce=None) -> Tensor:
    """relu(batch_norm(x, ...)): in training, one kernel whose passes do the ReLU's work too.

    Args, Returns, Shapes and Raises: as ``batch_norm``. In evaluation (and wherever
    no fast path takes x) the two ops run one after the other, the reference.
    """
    settings, affine = batch_norm_settings(x, weight, bias, running_mean, running_var, training, momentum, eps,
                                           channel_reduce)
    fast = dispatch.batch_norm(_data(x), *settings, relu=True)
    if fast is None:
        return activation.relu(batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps,
                                          channel_reduce))
    return FastPath("BatchNormReLU", fast)(x, *affine)
