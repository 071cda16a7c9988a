"""The benchmarks measure the default kernels, whatever MINIDL_KERNELS says for the rest of the suite."""
import pytest


@pytest.fixture(autouse=True)
def _default_kernels(monkeypatch):
    monkeypatch.delenv("MINIDL_KERNELS", raising=False)
