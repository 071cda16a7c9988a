"""The floors of DESIGN.md: who may import whom inside minidl, read from the source (no imports run).

A lower floor never imports a higher one, so a reader can learn the package bottom-up:
backend, window and special first, then autograd, the kernels' fast paths on raw arrays, the
public ops, the layers and optimizers, and the training loop and command line last.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "minidl"

BASE = {"backend", "window", "special"}   # special: erfc on arrays, for GELU's reference and fast path
KERNELS = BASE | {"kernels"}
OPS = KERNELS | {"autograd", "backprop", "grad_mode", "tensor_methods", "functional"}
LAYERS = OPS | {"nn"}
# part of minidl -> the parts it may import (besides itself)
ALLOWED = {
    "backend": set(),
    "window": {"backend"},
    "special": {"backend"},
    "grad_mode": set(),
    "tensor_methods": {"backend", "functional", "grad_mode"},   # Tensor's conveniences; ops imported where called
    "autograd": {"backend", "backprop", "grad_mode", "tensor_methods"},  # plus functional.basic, .shape, .extrema: operators
    "backprop": {"backend", "autograd"},  # the walk over autograd's graph: the same floor
    "kernels": KERNELS,
    "functional": OPS,
    "gradcheck": OPS,
    "checkpoint": {"backend"},
    "creation": OPS | {"checkpoint"},     # minidl.zeros, minidl.cat, minidl.save: PyTorch's top-level names
    "nn": LAYERS,
    "optim": KERNELS | {"autograd", "grad_mode"},
    "autograd_graph": OPS | {"checkpoint"},   # the graph as DOT text; viz re-exports it
    "viz": LAYERS | {"checkpoint", "autograd_graph"},
    "models": LAYERS | {"viz", "data"},
    "metrics": LAYERS,                    # evaluate runs nn.fuse_for_inference(model)
    "plots": BASE | {"checkpoint"},
    "_progress": set(),
    "data": KERNELS | {"autograd", "grad_mode", "checkpoint"},
    "torch_format": set(),                # reads torch.save files with NumPy alone
    "weights": LAYERS | {"checkpoint", "models", "data", "torch_format"},
    "onnx": LAYERS | {"checkpoint", "models", "onnx_layers"},
    "onnx_layers": LAYERS,                # the activation, per-sample norm and resizing layers' ONNX forms
    "distributed": LAYERS | {"optim", "data", "checkpoint"},
}
# The parts that sit on top (the training loop, callbacks, the command line) may use any
# floor below them; nothing below imports them.
TOP = {"train", "callbacks", "cli", "__main__"}


def _module_name(path: Path) -> tuple:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path, source: str | None = None):
    """(full name, part) of every minidl import in ``path`` (or in ``source`` as if it were that file)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name[:-1]
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else ()
            target = base + tuple(node.module.split(".")) if node.module else base
            if target[:1] != ("minidl",):
                continue
            for alias in node.names:
                full = target + (alias.name,)
                yield ".".join(full), (full if len(target) == 1 else target)[1]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "minidl" and len(parts) > 1:
                    yield alias.name, parts[1]


def _part(path: Path) -> str:
    name = _module_name(path)
    return name[1] if len(name) > 1 else "minidl"


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_higher_floor(path):
    part = _part(path)
    if part in TOP or part == "minidl":
        bad = [full for full, target in _imports(path) if part != "minidl" and target == "cli" and part != "__main__"
               and part != "cli"]
        assert not bad, f"{path.name} imports the command line: {bad}"
        return
    assert part in ALLOWED, f"minidl.{part} is not in the floor table of tests/test_floors.py: place it"
    allowed = ALLOWED[part] | {part}
    bad = [full for full, target in _imports(path) if target not in allowed
           and not (part == "autograd" and full in ("minidl.functional.basic", "minidl.functional.shape",
                                                     "minidl.functional.extrema"))]
    assert not bad, f"minidl.{part} ({path.name}) may import only {sorted(allowed)}, but imports {bad}"


def test_the_table_knows_every_part():
    parts = {_part(p) for p in MODULES} - {"minidl"}
    assert parts <= set(ALLOWED) | TOP, f"parts without a floor: {sorted(parts - set(ALLOWED) - TOP)}"


def test_the_check_can_fail():
    # A kernel that imported autograd would break the floors: the parser must see it.
    threads = PACKAGE / "kernels" / "cpu" / "threads.py"
    imports = dict(_imports(threads))
    assert "minidl.backend" in imports and "minidl.autograd" not in imports
    source = "from ...autograd import Function\nfrom ..dispatch import mode\nimport minidl.train\n"
    assert dict(_imports(threads, source)) == {"minidl.autograd.Function": "autograd",
                                                "minidl.kernels.dispatch.mode": "kernels", "minidl.train": "train"}
