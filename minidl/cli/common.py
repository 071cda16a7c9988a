"""What the subcommands share: argument types, and how a failure reaches the user.

At the command line every failure is one line on stderr, ``<prog>: error: <message>``,
and a non-zero exit code, never a traceback: ``MINIDL_TRACEBACK=1`` in the
environment shows the traceback of an unexpected error instead (for bug reports).
"""
from __future__ import annotations

import argparse
import os
import sys


def count(kind, low):
    """An argparse type: a ``kind`` (int or float) >= ``low``."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return value
    return parse


def error(prog: str, message: str) -> None:
    """Print the one-line error ``prog: error: message`` on stderr."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)


def unexpected(prog: str, exc: Exception) -> int:
    """Report an error no one anticipated in one line (re-raised under MINIDL_TRACEBACK=1); returns 1."""
    if os.environ.get("MINIDL_TRACEBACK"):
        raise exc
    error(prog, f"{type(exc).__name__}: {exc} (set MINIDL_TRACEBACK=1 to see the traceback)")
    return 1
