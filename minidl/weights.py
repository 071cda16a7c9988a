"""A model's weights as ``.safetensors``, the file PyTorch and Hugging Face tools exchange,
and PyTorch's own ``.pth`` files read without PyTorch (``load_torch``, in ``torch_format``).

    from minidl.weights import save_safetensors, load_safetensors
    save_safetensors(model, "alexnet.safetensors")
    load_safetensors(model, "alexnet.safetensors")

    # in PyTorch, into a network built with the same layer names and shapes:
    from safetensors.torch import load_file
    torch_model.load_state_dict(load_file("alexnet.safetensors"))

The file holds exactly ``model.state_dict()``: PyTorch's key names ("conv1.weight",
"bn1.running_var", "fc8.bias", ...) and layouts (convolution weights OIHW, dense
weights (out, in)), so nothing is renamed or transposed on either side. PyTorch's
batch norm also keeps a step counter, ``num_batches_tracked``, which minidl has no
use for: ``Module.load_state_dict`` accepts and skips a PyTorch file's counters (on
batch-norm layers only), and PyTorch fills its own in when a minidl file lacks them.

This is for weights only. Checkpoints that resume training (optimizer state,
schedule, position) stay minidl's ``.npz`` files (``minidl.checkpoint``). Needs the
``safetensors`` extra; loading never runs code from the file.

    model = minidl.models.resnet18()
    model.load_state_dict(load_torch("resnet18-f37072fd.pth"))   # torchvision's weights, strictly

``load_torch`` unpickles with an allowlist (PyTorch's ``weights_only`` rules) and needs
neither PyTorch nor any extra; see its docstring for what it accepts and refuses.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .checkpoint import atomic_write
from .torch_format import load_torch  # noqa: F401  (public here: minidl.weights.load_torch)

TORCH_ONLY_SUFFIX = ".num_batches_tracked"  # PyTorch's batch-norm step counter


def _safetensors_numpy():
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError("safetensors files need the safetensors package: pip install 'minidl[safetensors]'") \
            from None
    return safetensors.numpy


def save_safetensors(model, path, metadata: dict | None = None) -> Path:
    """Write ``model.state_dict()`` to ``path`` as safetensors, atomically.

    Args:
        model: any minidl ``nn.Module``.
        path: the file to write, conventionally ending in ``.safetensors``.
        metadata: optional str -> str pairs stored in the header, next to
            {"format": "pt"} (the key Hugging Face tools read) and {"producer": "minidl"}.

    Returns:
        the path written.
    """
    st = _safetensors_numpy()
    header = {"format": "pt", "producer": "minidl"}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"save_safetensors: metadata must map str to str, got {key!r}: {value!r}")
        header[key] = value
    arrays = {key: np.ascontiguousarray(value) for key, value in model.state_dict().items()}
    data = st.save(arrays, metadata=header)
    path = Path(path)
    atomic_write(path, lambda f: f.write(data))
    return path


def read_safetensors(path) -> dict:
    """Every tensor in a safetensors file as a NumPy array, by key.

    Raises:
        FileNotFoundError, or ValueError naming the file when it is not a safetensors file.
    """
    st = _safetensors_numpy()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_safetensors: {path} does not exist")
    try:
        return st.load(path.read_bytes())
    except Exception as exc:  # safetensors raises its own error types (and Rust panics) for bad headers
        raise ValueError(f"read_safetensors: {path} is not a readable safetensors file "
                         f"({type(exc).__name__}: {exc})") from None


def load_safetensors(model, path, strict: bool = True):
    """Copy the weights in a safetensors file into ``model`` (in place, on its device and dtype).

    Args:
        model: a minidl ``nn.Module`` with the same layer names and shapes.
        path: a file from ``save_safetensors`` or PyTorch's ``safetensors.torch.save_file``.
        strict: missing and unexpected keys are errors (PyTorch's ``num_batches_tracked``
            counters on batch-norm layers are always skipped, by ``load_state_dict``).

    Returns:
        ``IncompatibleKeys(missing_keys, unexpected_keys)``, as ``Module.load_state_dict``.
    Raises:
        ValueError naming missing or unexpected keys and shape mismatches; nothing is
        changed then.
    """
    return model.load_state_dict(read_safetensors(path), strict=strict)
