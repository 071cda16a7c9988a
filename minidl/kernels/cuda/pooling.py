"""Max pooling on a GPU: the reference's running maximum, one raw CUDA kernel per direction.

Forward runs one thread per window, applying the reference's rule (the first
maximum in tap order wins); backward one thread per input pixel, gathering the
gradients of the windows that chose it, in the order the reference adds them.
"""
from __future__ import annotations

from ... import backend
from ...window import output_hw
from ..cpu.pooling import index_dtype
from . import launches


class RawMaxPool2d:
    # x (N,C,H,W) -> y, argmax (N,C,OH,OW) (the winning tap kh*KW + kw) -> gx (N,C,H,W), all NCHW.
    algorithm = "raw CUDA"   # what minidl.viz shows for the call

    def __init__(self, kernel: tuple, stride: tuple, pads: tuple, relu: bool = False):
        self.kernel, self.stride, self.pads, self.relu = kernel, stride, pads, relu   # relu: inference only

    def forward(self, x):
        xp = backend.get_array_module(x)
        out_hw = output_hw("max_pool2d", x.shape[2:], self.kernel, self.stride, self.pads)
        self.x_shape = x.shape
        y, self.argmax = launches.max_pool2d_forward(xp.ascontiguousarray(x), self.kernel, self.stride, self.pads,
                                                     out_hw, index_dtype(self.kernel[0] * self.kernel[1]))
        if self.relu:
            xp.maximum(y, 0, out=y)
        return y

    def backward(self, gy, needs):
        assert not self.relu, "max pooling with its ReLU fused in is for inference: it has no backward"
        xp = backend.get_array_module(gy)
        gx = launches.max_pool2d_backward(xp.ascontiguousarray(gy), self.argmax, self.x_shape,
                                          self.kernel, self.stride, self.pads)
        return (gx,)
