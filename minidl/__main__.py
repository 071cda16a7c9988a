"""``python -m minidl``: the ``minidl`` command (``minidl.cli``)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
