"""minidl.nn: modules (layers and models), parameters and initialisers.

    import minidl.nn as nn
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding="same"), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 32 * 32, 10))

Data parallelism reaches the layers through two explicit doors, never by patching
them: ``SyncBatchNorm`` gets its process group at construction or from
``SyncBatchNorm.convert_sync_batchnorm(model, group)``, and ``batch_slice(start,
total)`` (a context around the forward) tells Dropout which rows of the global
batch it holds.
"""
from . import functional, init, utils
from .batch_slice import batch_slice, current_batch_slice
from .batchnorm import BatchNorm1d, BatchNorm2d, SyncBatchNorm
from .layers import Conv2d, ConvTranspose2d, Dropout, Dropout2d, Flatten, Linear, LocalResponseNorm, MaxPool2d, ReLU
from .chain import forward_chain
from .containers import ModuleDict, ModuleList, Sequential
from .module import Module, Parameter
from .activation import GELU, Identity, LeakyReLU, LogSoftmax, Sigmoid, Softmax, Tanh
from .activation import ELU, SELU, Hardsigmoid, Hardswish, Hardtanh, Mish, ReLU6, SiLU, Softplus
from .loss import CrossEntropyLoss, MSELoss, NLLLoss
from .pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d
from .sample_norm import GroupNorm, LayerNorm
from .upsample import Upsample, UpsamplingBilinear2d, UpsamplingNearest2d

__all__ = ["BatchNorm1d", "BatchNorm2d", "Conv2d", "Dropout", "Flatten", "Linear", "LocalResponseNorm", "MaxPool2d",
           "Module", "ModuleDict", "ModuleList", "Parameter", "ReLU", "Sequential", "SyncBatchNorm", "batch_slice",
           "current_batch_slice", "forward_chain", "init"]
__all__ += ["AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "AvgPool2d", "GELU", "Identity", "LeakyReLU", "Sigmoid", "Tanh"]
__all__ += ["CrossEntropyLoss", "LogSoftmax", "MSELoss", "NLLLoss", "Softmax", "utils"]
__all__ += ["ConvTranspose2d", "Dropout2d", "GroupNorm", "LayerNorm", "Upsample", "UpsamplingBilinear2d", "UpsamplingNearest2d"]
__all__ += ["ELU", "SELU", "Hardsigmoid", "Hardswish", "Hardtanh", "Mish", "ReLU6", "SiLU", "Softplus"]
from .fuse import FusedConv2d, FusedLinear, ReLUMaxPool2d, fuse_for_inference  # noqa: E402

__all__ += ["FusedConv2d", "FusedLinear", "ReLUMaxPool2d", "fuse_for_inference"]
