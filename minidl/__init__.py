"""minidl: a from-scratch deep learning engine on NumPy (CPU) and CuPy (CUDA).

    import minidl
    import minidl.functional as F
    x = minidl.tensor([[1.0, 2.0]], requires_grad=True)
    F.relu(x).sum().backward()
"""
from . import backend
from .autograd import Function, Tensor, enable_grad, is_grad_enabled, no_grad, set_grad_enabled, tensor
from .backend import Device, DeviceError, is_cuda_available

from . import functional, nn, optim  # noqa: E402  (minidl.nn and minidl.optim after a plain `import minidl`)
from .creation import (DTYPES, arange, cat, eye, from_numpy, full, linspace, load, ones, ones_like, rand,  # noqa: E402
                       randint, randn, save, stack, zeros, zeros_like)

globals().update(DTYPES)   # minidl.float32, minidl.long, ...: PyTorch's dtype names, NumPy's dtypes

# PyTorch's functions that are its tensor methods: minidl.max(t, 1) is t.max(1), and so on.
(abs, argmax, clamp, exp, flatten, log, max, mean, min, permute, reshape, softmax, sqrt, squeeze, sum,  # noqa: A001
 transpose, unsqueeze) = (Tensor.abs, Tensor.argmax, Tensor.clamp, Tensor.exp, Tensor.flatten, Tensor.log, Tensor.max,
                          Tensor.mean, Tensor.min, Tensor.permute, Tensor.reshape, Tensor.softmax, Tensor.sqrt,
                          Tensor.squeeze, Tensor.sum, Tensor.transpose, Tensor.unsqueeze)

__version__ = "0.1.0"
__all__ = ["Device", "DeviceError", "Function", "Tensor", "backend", "is_cuda_available", "is_grad_enabled",
           "no_grad", "tensor", "enable_grad", "set_grad_enabled"]
__all__ += ["arange", "cat", "eye", "from_numpy", "full", "functional", "linspace", "load", "nn", "ones", "ones_like",
            "optim", "rand", "randint", "randn", "save", "stack", "zeros", "zeros_like"]
__all__ += ["abs", "argmax", "clamp", "exp", "flatten", "log", "max", "mean", "min", "permute", "reshape", "softmax",
            "sqrt", "squeeze", "sum", "transpose", "unsqueeze"]
