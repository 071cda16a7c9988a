"""minidl.nn: modules (layers and models), parameters and initialisers.

    import minidl.nn as nn
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding="same"), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 32 * 32, 10))
"""
from . import init
from .layers import (BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d,
                     ReLU)
from .module import Module, Parameter, Sequential
from .activation import GELU, Identity, LeakyReLU, Sigmoid, Tanh
from .pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d

__all__ = ["BatchNorm1d", "BatchNorm2d", "Conv2d", "Dropout", "Flatten", "Linear", "LocalResponseNorm", "MaxPool2d",
           "Module", "Parameter", "ReLU", "Sequential", "init"]
__all__ += ["AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "AvgPool2d", "GELU", "Identity", "LeakyReLU", "Sigmoid", "Tanh"]
