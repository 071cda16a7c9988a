"""examples/alexnet_tutorial.ipynb runs top to bottom, headless, on a tiny CIFAR-10 fixture.

MINIDL_NOTEBOOK_SMOKE=1 makes the notebook's settings cell pick a tiny run and
MINIDL_DATA_DIR points it at the fixture; nbclient executes every cell in a real
IPython kernel and raises on the first cell error.
"""
import json
import os
from pathlib import Path

import pytest

from support.cifar_fixture import write_cifar10

nbformat = pytest.importorskip("nbformat", reason="needs the notebook extra")
nbclient = pytest.importorskip("nbclient", reason="needs the notebook extra")
pytest.importorskip("ipykernel", reason="needs the notebook extra")
pytest.importorskip("matplotlib", reason="the notebook draws (plot extra)")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "alexnet_tutorial.ipynb"


def test_committed_without_outputs_and_small():
    assert NOTEBOOK.stat().st_size < 200_000
    nb = json.loads(NOTEBOOK.read_text())
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    assert code and all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)


def test_notebook_runs_on_a_fixture(tmp_path, monkeypatch):
    fixture = write_cifar10(tmp_path / "data", n_per_batch=16, n_test=16)
    monkeypatch.setenv("MINIDL_DATA_DIR", str(fixture.root))
    monkeypatch.setenv("MINIDL_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on any cell error
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    text = "".join(out.get("text", "") for out in outputs)
    assert "Total params: 56,910,602" in text  # the seed summary
    assert "conv1 -> 56x56, pool1 -> 27x27" in text
    assert "train (64, 3, 32, 32), validation (16, 3, 32, 32), test (16, 3, 32, 32), uint8" in text
    assert "test accuracy" in text and "conv1.weight.grad: (32, 3, 3, 3)" in text
    pictures = sum("image/png" in out.get("data", {}) for out in outputs)
    assert pictures >= 6  # architecture, samples, preprocessing, curves, predictions, filters
    out = tmp_path / "runs" / "tutorial"
    assert (out / "alexnet_seed.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "best.npz").is_file() and (out / "results.json").is_file()
