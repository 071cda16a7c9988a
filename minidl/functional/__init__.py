"""minidl.functional: every kernel as a plain function on Tensors (import as F).

One file per kernel family; each defines its ``Function`` subclasses (forward and
backward on raw arrays) and the user-facing functions below.
"""
from .activation import gelu, leaky_relu, log_softmax, relu, sigmoid, softmax, tanh
from .adaptive_pooling import adaptive_avg_pool2d, adaptive_max_pool2d
from .average_pooling import avg_pool2d
from .basic import concat
from .composed_losses import mse_loss, nll_loss, one_hot
from .shape import flatten
from .conv import conv2d
from .conv_transpose import conv_transpose2d
from .dropout import dropout, dropout2d
from .interpolation import interpolate
from .linear import linear
from .loss import cross_entropy, softmax_cross_entropy
from .normalization import batch_norm, local_response_norm
from .padding import pad
from .sample_normalization import group_norm, layer_norm
from .relu_variants import elu, hardsigmoid, hardswish, hardtanh, mish, relu6, selu, silu, softplus
from .pooling import max_pool2d

__all__ = ["batch_norm", "concat", "conv2d", "cross_entropy", "dropout", "flatten", "linear", "local_response_norm",
           "log_softmax", "max_pool2d", "relu", "softmax", "softmax_cross_entropy"]
__all__ += ["adaptive_avg_pool2d", "adaptive_max_pool2d", "avg_pool2d", "gelu", "leaky_relu", "sigmoid", "tanh"]
__all__ += ["pad", "mse_loss", "nll_loss", "one_hot"]
__all__ += ["elu", "hardsigmoid", "hardswish", "hardtanh", "mish", "relu6", "selu", "silu", "softplus"]
__all__ += ["group_norm", "layer_norm"]
__all__ += ["dropout2d"]
__all__ += ["interpolate"]
__all__ += ["conv_transpose2d"]
