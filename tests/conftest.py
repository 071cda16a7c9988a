"""Shared test fixtures: devices, a seeded generator, and the two kinds of kernels.

Helpers live in tests/support/ (``from support.devices import DEVICES``); pytest puts
tests/ on the path (pyproject.toml) and imports test files by path, so files of the
same name in different folders do not collide.
"""
import numpy as np
import pytest

import minidl.kernels

from support.devices import DEVICES


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(params=minidl.kernels.MODES)
def kernel_mode(request):
    """Run the test once with the fast kernels and once with the references."""
    with minidl.kernels.use(request.param):
        yield request.param
