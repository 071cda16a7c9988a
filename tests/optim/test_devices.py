"""Every optimizer on every device: the CPU's steps (float64), state on the parameter's device, and a
state_dict of host arrays that loads back onto it."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl import backend
from minidl.optim import SGD, Adam, AdamW, RMSprop

CASES = [
    (Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1, maximize=True)),
    (AdamW, dict(lr=0.01, amsgrad=True)),
    (RMSprop, dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1)),
    (SGD, dict(lr=0.01, momentum=0.9, nesterov=True)),
]


def run(cls, options, device, steps):
    rng = np.random.default_rng(21)
    shapes = [(3, 4), (5,)]
    params = [nn.Parameter(minidl.tensor(rng.normal(size=s), device=device)) for s in shapes]
    opt = cls(params, **options)
    for _ in range(steps):
        for p in params:
            p.grad = minidl.tensor(rng.normal(size=p.shape), device=device)
        opt.step()
    return params, opt


@pytest.mark.parametrize("cls,options", CASES, ids=[c.__name__ for c, _ in CASES])
def test_steps_on_a_device_equal_the_cpus(device, cls, options):
    on_cpu, _ = run(cls, options, "cpu", 10)
    there, opt = run(cls, options, device, 10)
    for a, b in zip(on_cpu, there):
        assert str(b.device) == str(backend.Device(device)) and b.dtype == np.float64
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-12, atol=1e-14)
    for entries in opt.state.values():
        for value in entries.values():
            assert not backend.is_array(value) or backend.device_of(value) == backend.Device(device)
    state = opt.state_dict()
    assert all(type(v) in (np.ndarray, float) for s in state["state"].values() for v in s.values())
    fresh = cls(there, lr=1.0)
    fresh.load_state_dict(state)
    for p in there:
        for key, value in fresh.state[p].items():
            if backend.is_array(value):
                assert backend.device_of(value) == backend.Device(device)
                np.testing.assert_array_equal(backend.to_numpy(value), backend.to_numpy(opt.state[p][key]))
