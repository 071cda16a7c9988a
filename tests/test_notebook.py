"""examples/alexnet_tutorial.ipynb runs top to bottom, headless, on a tiny CIFAR-10 fixture.

MINIDL_NOTEBOOK_SMOKE=1 makes the notebook's settings cell pick a tiny run and
MINIDL_DATA_DIR points it at the fixture; nbclient executes every cell in a real
IPython kernel and raises on the first cell error. The README's command,
``MINIDL_DATA_DIR=../shared/data jupyter execute examples/alexnet_tutorial.ipynb``
from the project's root, is run as written in a copy of that layout.
"""
import json
import os
import shutil
import subprocess
import sys
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


def _documented_command_layout(tmp_path):
    """project/examples/alexnet_tutorial.ipynb beside shared/data, like the project's checkout and data."""
    project = tmp_path / "project"
    (project / "examples").mkdir(parents=True)
    shutil.copy(NOTEBOOK, project / "examples" / NOTEBOOK.name)
    write_cifar10(tmp_path / "shared" / "data", n_per_batch=16, n_test=16)
    env = dict(os.environ, MINIDL_NOTEBOOK_SMOKE="1", MPLBACKEND="module://matplotlib_inline.backend_inline",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               PWD=str(project))  # what a shell sets when the command is typed in the project's root
    env.pop("MINIDL_DATA_DIR", None)
    return project, env


def _jupyter_execute(project, env):
    """``jupyter execute examples/alexnet_tutorial.ipynb`` in ``project``, with this interpreter's jupyter."""
    jupyter = Path(sys.executable).with_name("jupyter")
    jupyter = str(jupyter) if jupyter.is_file() else shutil.which("jupyter")
    if jupyter is None:
        pytest.skip("no jupyter command (the notebook extra installs it)")
    return subprocess.run([jupyter, "execute", "examples/alexnet_tutorial.ipynb"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_readme_command_finds_a_relative_data_dir(tmp_path):
    # the kernel starts in examples/, where ../shared/data names nothing: the path is the shell's, from $PWD
    project, env = _documented_command_layout(tmp_path)
    env["MINIDL_DATA_DIR"] = "../shared/data"
    run = _jupyter_execute(project, env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = project / "examples" / "runs" / "tutorial"
    assert (out / "best.npz").is_file() and (out / "results.json").is_file()
    assert not (project / "shared").exists()  # nothing downloaded beside the project


def test_a_data_dir_that_names_nothing_says_so_in_the_notebooks_words(tmp_path):
    project, env = _documented_command_layout(tmp_path)
    env["MINIDL_DATA_DIR"] = "../elsewhere/data"
    run = _jupyter_execute(project, env)
    assert run.returncode != 0
    message = run.stdout + run.stderr
    assert "MINIDL_DATA_DIR=../elsewhere/data names no folder" in message
    assert str(tmp_path / "elsewhere" / "data") in message and "--data-dir" not in message
    assert not (tmp_path / "elsewhere").exists() and not (project / "elsewhere").exists()
