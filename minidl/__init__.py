"""minidl: a from-scratch deep learning engine on NumPy (CPU) and CuPy (CUDA).

    import minidl
    import minidl.functional as F
    x = minidl.tensor([[1.0, 2.0]], requires_grad=True)
    F.relu(x).sum().backward()
"""
from . import backend
from .autograd import Function, Tensor, enable_grad, is_grad_enabled, no_grad, set_grad_enabled, tensor
from .backend import Device, DeviceError, is_cuda_available

__version__ = "0.1.0"
__all__ = ["Device", "DeviceError", "Function", "Tensor", "backend", "is_cuda_available", "is_grad_enabled",
           "no_grad", "tensor", "enable_grad", "set_grad_enabled"]
