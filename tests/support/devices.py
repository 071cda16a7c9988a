"""The device list every kernel test is parametrised over."""
import pytest

from minidl.backend import is_cuda_available

# "cuda" runs wherever CuPy sees a GPU and is skipped, with its reason, elsewhere.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not is_cuda_available(), reason="no CUDA GPU/CuPy"))]
