"""Weight initialisers. Each fills a Parameter in place from an explicit numpy Generator.

PyTorch's names and signatures (``normal_(w, mean, std)``, ``kaiming_normal_(w, a, mode,
nonlinearity)``, ``xavier_uniform_(w, gain)``, ``calculate_gain``), with the generator
given as ``rng=`` or PyTorch's ``generator=`` and required: minidl has no global seed.
minidl's own ``he_*``/``glorot_*`` take ``groups`` for a grouped convolution's fans.

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


def _check_rng(rng, name, generator=None):
    """The Generator given as ``rng`` (minidl's name) or ``generator`` (PyTorch's); there is no default."""
    if generator is not None:
        if rng is not None and rng is not generator:
            raise ValueError(f"{name}: give rng or generator (the same thing, PyTorch's name), not both")
        rng = generator
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"{name}: expected an explicit numpy.random.Generator as rng (or generator=), got "
                         f"{rng!r}; minidl has no global seed: pass rng=np.random.default_rng(seed)")
    return rng


def constant_(param, val: float):
    """Fill ``param`` with ``val``."""
    return _fill(param, np.full(param.shape, val, dtype=np.float64))


def zeros_(param):
    return constant_(param, 0.0)


def ones_(param):
    return constant_(param, 1.0)


def normal_(param, mean: float = 0.0, std: float = 1.0, *, rng=None, generator=None):
    """Fill from N(mean, std^2), PyTorch's signature (the paper's AlexNet uses std = 0.01)."""
    rng = _check_rng(rng, "normal_", generator)
    if std < 0:
        raise ValueError(f"normal_: std must be >= 0, got {std}")
    return _fill(param, _normal(rng, mean, std, param))


def uniform_(param, a: float = 0.0, b: float = 1.0, *, rng=None, generator=None):
    """Fill from U(a, b), PyTorch's signature."""
    rng = _check_rng(rng, "uniform_", generator)
    if not a <= b:
        raise ValueError(f"uniform_: need a <= b, got {a} and {b}")
    return _fill(param, _uniform(rng, a, b, param))


def calculate_gain(nonlinearity: str, param=None) -> float:
    """PyTorch's recommended gain for a nonlinearity: the factor that keeps activations' variance.

    linear, conv and sigmoid 1; tanh 5/3; relu sqrt(2); leaky_relu sqrt(2 / (1 + slope^2))
    (slope ``param``, default 0.01); selu 3/4.
    """
    if nonlinearity in ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                        "conv_transpose3d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1.0 + slope ** 2))
    if nonlinearity == "selu":
        return 0.75
    raise ValueError(f"calculate_gain: unknown nonlinearity {nonlinearity!r}")


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


# PyTorch's names and signatures. The rng is still required (rng= or PyTorch's generator=).
def kaiming_normal_(param, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", *,
                    rng=None, generator=None, groups: int = 1):
    """N(0, std^2), std = gain / sqrt(fan): ``he_normal_`` with PyTorch's gain (``calculate_gain``)."""
    rng = _check_rng(rng, "kaiming_normal_", generator)
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(param.shape, groups, mode, "kaiming_normal_"))
    return _fill(param, _normal(rng, 0.0, std, param))


def kaiming_uniform_(param, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", *,
                     rng=None, generator=None, groups: int = 1):
    """U(-b, b), b = gain * sqrt(3 / fan): ``he_uniform_`` with PyTorch's gain."""
    rng = _check_rng(rng, "kaiming_uniform_", generator)
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(param.shape, groups, mode, "kaiming_uniform_"))
    return _fill(param, _uniform(rng, -bound, bound, param))


def xavier_uniform_(param, gain: float = 1.0, *, rng=None, generator=None, groups: int = 1):
    """U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)): ``glorot_uniform_`` with a gain."""
    rng = _check_rng(rng, "xavier_uniform_", generator)
    fan_in, fan_out = compute_fans(param.shape, groups)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return _fill(param, _uniform(rng, -bound, bound, param))


def xavier_normal_(param, gain: float = 1.0, *, rng=None, generator=None, groups: int = 1):
    """N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out)): ``glorot_normal_`` with a gain."""
    rng = _check_rng(rng, "xavier_normal_", generator)
    fan_in, fan_out = compute_fans(param.shape, groups)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return _fill(param, _normal(rng, 0.0, std, param))
