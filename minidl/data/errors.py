"""The one error type of ``minidl.data``."""
from __future__ import annotations


class DatasetError(RuntimeError):
    """A data set that cannot be obtained or read; the message says why and what to do."""
