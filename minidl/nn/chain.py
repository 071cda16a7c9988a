"""Running layers one after another, with the one rewrite training can take: batch norm + ReLU.

``forward_chain(layers, x)`` is ``for layer in layers: x = layer(x)``, except that a
batch-norm layer in training mode followed by a ``ReLU`` runs as one call,
``bn(x, relu=True)``: batch norm's last pass writes max(y, 0) and its backward masks the
gradient itself, so the ReLU's two passes over memory (forward and backward) and the
output it keeps disappear. The numbers are those of the two layers, bit for bit
(``functional.fused.batch_norm_relu``). Sequential, AlexNet and the ResNets run their
layers through it.

A pair with forward hooks on either layer runs unfused, so that every hook sees the
call it was registered for. Evaluation is ``nn.fuse_for_inference``'s business.
"""
from __future__ import annotations

from .batchnorm import _BatchNorm
from .hooks import has_forward_hooks
from .layers import ReLU


def _fusable(layer, following) -> bool:
    """Whether ``layer`` and the ``following`` one run as batch norm + ReLU in one call."""
    return (isinstance(layer, _BatchNorm) and layer.training and type(following) is ReLU
            and not has_forward_hooks(layer) and not has_forward_hooks(following))


def forward_chain(layers, x):
    """x through ``layers`` in order, a training batch norm and the ReLU after it in one call.

    Args:
        layers: an iterable of Modules, each taking the previous one's output.
        x: the first layer's input.
    Returns:
        the last layer's output (x itself when there are no layers).
    """
    layers = list(layers)
    i = 0
    while i < len(layers):
        if i + 1 < len(layers) and _fusable(layers[i], layers[i + 1]):
            x = layers[i](x, relu=True)
            i += 2
        else:
            x = layers[i](x)
            i += 1
    return x
