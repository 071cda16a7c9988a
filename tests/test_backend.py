"""Device parsing, array-module lookup, moving arrays and the CUDA-missing error."""
import numpy as np
import pytest

import minidl
from minidl import backend
from minidl.backend import Device, DeviceError


@pytest.mark.parametrize("spec, text", [("cpu", "cpu"), ("cuda", "cuda:0"), ("cuda:3", "cuda:3"), ("CUDA:1", "cuda:1")])
def test_device_strings_parse(spec, text):
    assert str(Device(spec)) == text
    assert Device(spec) == text


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cpu:0", "cuda:-1", "tpu", "", 3])
def test_unknown_devices_are_rejected_with_a_clear_error(spec):
    with pytest.raises(DeviceError, match="Device"):
        Device(spec)
    assert issubclass(DeviceError, ValueError)


def test_get_array_module_is_numpy_for_host_arrays_and_scalars():
    assert backend.get_array_module(np.ones(2), 3.0, None) is np
    assert backend.get_array_module() is np


def test_to_device_cpu_roundtrip_keeps_values():
    a = np.arange(6.0).reshape(2, 3)
    assert backend.to_device(a, "cpu") is a
    np.testing.assert_array_equal(backend.to_numpy(a), a)


@pytest.mark.skipif(backend.is_cuda_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_gpu_says_what_is_missing():
    with pytest.raises(DeviceError, match="CUDA"):
        backend.parse_device("cuda")
    with pytest.raises(DeviceError, match="CUDA"):
        minidl.tensor([1.0], device="cuda")
    assert backend.parse_device("auto") == "cpu"


def test_missing_cupy_message_names_the_install_command(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "cupy":
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(DeviceError, match=r'pip install "minidl\[cuda12\]"'):
        backend.parse_device("cuda:0")


@pytest.mark.skipif(not backend.is_cuda_available(), reason="no CUDA GPU/CuPy")
def test_tensor_moves_to_cuda_and_back_with_gradient():
    x = minidl.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x.to("cuda")
    assert y.device == "cuda:0"
    (y * 3).sum().backward()
    assert x.grad.device == "cpu"
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])
