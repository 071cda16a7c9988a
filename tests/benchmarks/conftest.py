"""The benchmarks measure the default kernels, whatever MINIDL_KERNELS says for the rest of the suite.

``one_torch_thread`` is for the PyTorch twins' tests (``pytestmark = pytest.mark.usefixtures(...)``).
"""
import pytest


@pytest.fixture(autouse=True)
def _default_kernels(monkeypatch):
    monkeypatch.delenv("MINIDL_KERNELS", raising=False)


@pytest.fixture
def one_torch_thread():
    """Tiny float64 tensors: PyTorch's OpenMP threads only wait on each other (and on minidl's workers)."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
