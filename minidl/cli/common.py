"""What the subcommands share: argument types, and how a failure reaches the user.

At the command line every failure is one line on stderr, ``<prog>: error: <message>``,
and a non-zero exit code, never a traceback: ``MINIDL_TRACEBACK=1`` in the
environment shows the traceback of an unexpected error instead (for bug reports).
"""
from __future__ import annotations

import argparse
import math
import os
import sys


def count(kind, low):
    """An argparse type: a ``kind`` (int or float) >= ``low``; a float must be finite (no nan, inf)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an int' if kind is int else 'a number'}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return value
    return parse


def make_directory(path, flag: str = "--out") -> None:
    """Create the directory ``path`` (and its parents) now, before any work that would need it.

    Raises:
        ValueError naming ``flag`` and the reason, if it cannot be created.
    """
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{flag}: cannot create the directory {path}: {exc.strerror or exc}") from None


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line, as every other error here.

    argparse prints the whole usage block (a screenful for ``minidl train``) above the
    line that says what was wrong; here the line alone, pointing at ``--help``.
    """

    def error(self, message):
        error(self.prog, f"{message} (`{self.prog} --help` lists the options)")
        sys.exit(2)


def error(prog: str, message: str) -> None:
    """Print the one-line error ``prog: error: message`` on stderr."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)


def unexpected(prog: str, exc: Exception) -> int:
    """Report an error no one anticipated in one line (re-raised under MINIDL_TRACEBACK=1); returns 1."""
    if os.environ.get("MINIDL_TRACEBACK"):
        raise exc
    error(prog, f"{type(exc).__name__}: {exc} (set MINIDL_TRACEBACK=1 to see the traceback)")
    return 1
