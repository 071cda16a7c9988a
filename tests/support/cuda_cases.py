"""Shared by the CUDA kernel tests: the window and pooling cases, and the skip without a GPU."""
import numpy as np
import pytest

from minidl.backend import is_cuda_available
from minidl.window import output_hw

needs_cuda = pytest.mark.skipif(not is_cuda_available(), reason="no CUDA GPU/CuPy")
FLOATS = [np.float32, np.float64]

# (x shape, kernel, stride, pads): stride > 1, asymmetric pads, kernel == input,
# stride > kernel (skipped pixels), 1x1 kernels, N = 1 and C = 1, AlexNet's conv1.
WINDOW_CASES = [
    ((2, 3, 7, 6), (3, 3), (1, 1), ((1, 1), (1, 1))),
    ((1, 1, 9, 8), (3, 2), (2, 3), ((0, 2), (1, 0))),
    ((2, 2, 5, 4), (5, 4), (1, 1), ((0, 0), (0, 0))),
    ((1, 2, 7, 7), (2, 2), (3, 3), ((1, 1), (0, 1))),
    ((3, 1, 4, 6), (1, 1), (2, 2), ((0, 0), (0, 0))),
    ((1, 3, 23, 21), (11, 11), (4, 4), ((3, 4), (4, 4))),
]
# Pooling needs padding smaller than the kernel; (12, 11) has 132 taps: an int16 argmax.
POOL_CASES = [
    ((2, 3, 9, 8), (3, 3), (2, 2), ((0, 0), (0, 0))),
    ((1, 1, 7, 6), (3, 3), (2, 2), ((1, 2), (2, 1))),
    ((2, 2, 5, 4), (5, 4), (1, 1), ((0, 0), (0, 0))),
    ((1, 2, 8, 9), (2, 3), (3, 1), ((1, 0), (0, 2))),
    ((2, 1, 13, 12), (12, 11), (1, 1), ((0, 1), (1, 0))),
]


def case_id(case):
    shape, kernel, stride, pads = case
    return f"x{'x'.join(map(str, shape))}-k{kernel[0]}{kernel[1]}-s{stride[0]}{stride[1]}-p{pads}"


def out_hw(case):
    shape, kernel, stride, pads = case
    return output_hw("test", shape[2:], kernel, stride, pads)


def tied_input(rng, shape, dtype):
    """Few distinct values, so most windows hold ties (the first maximum must win)."""
    return rng.integers(-2, 3, size=shape).astype(dtype)
