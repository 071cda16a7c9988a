"""The ``minidl`` command itself: ``python -m minidl``, its help, and the subcommands it dispatches to."""
import os
import subprocess
import sys

import pytest

import minidl
from minidl import cli
from support.commands import ROOT


def _minidl(*argv):
    return subprocess.run([sys.executable, "-m", "minidl", *argv], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)


def test_python_dash_m_minidl_lists_the_commands():
    done = _minidl("--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: minidl ")
    for name in ("train", "predict", "layers"):
        assert f"\n  {name} " in done.stdout
    assert _minidl("--version").stdout.strip() == f"minidl {minidl.__version__}"


@pytest.mark.parametrize("argv, message", [([], "the following arguments are required: COMMAND"),
                                           (["fit"], "invalid choice: 'fit'")])
def test_a_missing_or_unknown_command_is_a_usage_error(argv, message):
    done = _minidl(*argv)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("minidl: error: ") and message in done.stderr


@pytest.mark.parametrize("name", ["train", "predict", "layers"])
def test_each_command_has_its_module_and_its_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: minidl {name} ")


def test_the_console_script_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert '[project.scripts]\nminidl = "minidl.cli:main"' in text


@pytest.mark.parametrize("argv", [["train", "--model", "nonsense"], ["predict", "x.png", "--weights", "w.npz", "--bogus"],
                                  ["layers", "--batch-size"], ["train", "--epochs", "0"]])
def test_usage_errors_are_one_line_without_the_usage_block(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "usage:" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"minidl {argv[0]}: error: ")
    assert f"`minidl {argv[0]} --help` lists the options" in lines[0]
