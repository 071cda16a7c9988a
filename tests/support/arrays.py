"""Test inputs: tie-free values, and the same values in channels-last memory."""
import numpy as np


def shuffled_linspace(shape, rng):
    """Distinct values 0.1 apart in random order: no ties, and finite-difference
    steps never change which element is a window's maximum."""
    size = int(np.prod(shape))
    return rng.permutation(np.linspace(-0.05 * size, 0.05 * size, size)).reshape(shape)


def channels_last(x):
    """The same (N, C, H, W) values in channels-last memory (the CPU fast paths' layout)."""
    x = np.asarray(x)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def is_channels_last(a) -> bool:
    return not a.flags.c_contiguous and a.transpose(0, 2, 3, 1).flags.c_contiguous
