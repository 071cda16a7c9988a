"""benchmarks/commits_ab.py: minidl at another commit against this checkout, alternating child processes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "commits_ab.py"


def _run(*argv):
    return subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_both_trees_are_timed_and_the_worktree_is_removed():
    before = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    done = _run("--base", "HEAD", "--model", "cifar", "--batch-size", "2", "--rounds", "2", "--steps", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith("base: train ") and lines[2].startswith("this: train ")
    assert len(lines[1].split("|")[0].split()) == 4          # "base: train" and one value per round
    assert lines[3].startswith("median train: base ") and "this / base" in lines[4]
    after = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    assert after == before


def test_a_bad_revision_is_one_error_line():
    done = _run("--base", "no-such-revision-anywhere", "--rounds", "1")
    assert done.returncode == 1 and done.stderr.startswith("commits_ab: cannot check out 'no-such-revision-anywhere'")
    assert "Traceback" not in done.stderr
    assert _run().returncode == 2   # --base is required
