"""Weight initialisers. Each fills a Parameter in place from an explicit numpy Generator.

Values are drawn on the host (so a seed gives the same numbers on every device),
in the parameter's dtype when it is float32 or float64 (drawing float32 directly
halves the time and memory for AlexNet's 57 M weights), and written into the
parameter's existing array on its device.

Fans, the number of inputs and outputs one weight connects:

* Linear weight (out, in): fan_in = in, fan_out = out.
* Conv weight (O, C/groups, KH, KW): each output sees C/groups input channels over
  a KH x KW window, so fan_in = C/groups * KH * KW; each input channel feeds only
  the O/groups filters of its group, so fan_out = O/groups * KH * KW. (PyTorch
  ignores groups in fan_out; for groups=1 the two agree.)
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend


def compute_fans(shape, groups: int = 1) -> tuple:
    """(fan_in, fan_out) for a weight of ``shape``: (out, in) or (O, C/groups, KH, ...).

    Args:
        shape: the weight's shape, at least 2-D.
        groups: the convolution's groups (only affects fan_out).
    """
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"compute_fans: expected a weight with at least 2 dimensions, got shape {shape}")
    if groups < 1 or shape[0] % groups:
        raise ValueError(f"compute_fans: {shape[0]} output channels cannot be split into {groups} groups")
    receptive_field = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive_field, shape[0] // groups * receptive_field


def _fill(param, values: np.ndarray):
    """Write host ``values`` into ``param.data`` in place, on its device and in its dtype."""
    target = param.data
    target[...] = backend.to_device(values.astype(target.dtype, copy=False), backend.device_of(target))
    return param


def _draw_dtype(param):
    dtype = np.dtype(param.data.dtype)
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)


def _normal(rng, mean, std, param):
    values = rng.standard_normal(param.shape, dtype=_draw_dtype(param))
    values *= std
    values += mean
    return values


def _uniform(rng, low, high, param):
    values = rng.random(param.shape, dtype=_draw_dtype(param))  # [0, 1)
    values *= high - low
    values += low
    return values


def _check_rng(rng, name):
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"{name}: expected an explicit numpy.random.Generator as rng, got {rng!r}")


def constant_(param, value: float):
    """Fill ``param`` with ``value``."""
    return _fill(param, np.full(param.shape, value, dtype=np.float64))


def zeros_(param):
    return constant_(param, 0.0)


def ones_(param):
    return constant_(param, 1.0)


def normal_(param, std: float = 0.01, mean: float = 0.0, *, rng):
    """Fill from N(mean, std^2); the paper's AlexNet uses std = 0.01."""
    _check_rng(rng, "normal_")
    if std < 0:
        raise ValueError(f"normal_: std must be >= 0, got {std}")
    return _fill(param, _normal(rng, mean, std, param))


def uniform_(param, low: float, high: float, *, rng):
    """Fill from U(low, high)."""
    _check_rng(rng, "uniform_")
    if not low <= high:
        raise ValueError(f"uniform_: need low <= high, got {low} and {high}")
    return _fill(param, _uniform(rng, low, high, param))


def _fan(shape, groups, mode, name):
    fan_in, fan_out = compute_fans(shape, groups)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"{name}: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return fan_in if mode == "fan_in" else fan_out


def he_normal_(param, *, rng, groups: int = 1, mode: str = "fan_in"):
    """He (Kaiming) normal for ReLU nets: N(0, 2 / fan), fan_in by default.

    Keeps the variance of activations constant through ReLU layers (He et al. 2015).
    """
    _check_rng(rng, "he_normal_")
    std = math.sqrt(2.0 / _fan(param.shape, groups, mode, "he_normal_"))
    return _fill(param, _normal(rng, 0.0, std, param))


def he_uniform_(param, *, rng, groups: int = 1, mode: str = "fan_in"):
    """He (Kaiming) uniform: U(-b, b) with b = sqrt(6 / fan), the same variance as he_normal_."""
    _check_rng(rng, "he_uniform_")
    bound = math.sqrt(6.0 / _fan(param.shape, groups, mode, "he_uniform_"))
    return _fill(param, _uniform(rng, -bound, bound, param))


def glorot_uniform_(param, *, rng, groups: int = 1):
    """Glorot (Xavier) uniform: U(-b, b) with b = sqrt(6 / (fan_in + fan_out)); Keras's default."""
    _check_rng(rng, "glorot_uniform_")
    fan_in, fan_out = compute_fans(param.shape, groups)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return _fill(param, _uniform(rng, -bound, bound, param))


def glorot_normal_(param, *, rng, groups: int = 1):
    """Glorot (Xavier) normal: N(0, 2 / (fan_in + fan_out))."""
    _check_rng(rng, "glorot_normal_")
    fan_in, fan_out = compute_fans(param.shape, groups)
    std = math.sqrt(2.0 / (fan_in + fan_out))
    return _fill(param, _normal(rng, 0.0, std, param))


def default_uniform_(param, fan_in: int, *, rng):
    """PyTorch's default for Linear/Conv weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    _check_rng(rng, "default_uniform_")
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return _fill(param, _uniform(rng, -bound, bound, param))


# Aliases under the other common names.
kaiming_normal_ = he_normal_
kaiming_uniform_ = he_uniform_
xavier_uniform_ = glorot_uniform_
xavier_normal_ = glorot_normal_
