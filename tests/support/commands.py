"""How tests start the ``minidl`` command and the example scripts as real processes."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def minidl_command(name: str) -> list:
    """The argv prefix that runs ``minidl <name>`` with this interpreter (``python -m minidl <name>``)."""
    return [sys.executable, "-m", "minidl", name]
