"""``minidl.nn.functional``: the same module as ``minidl.functional`` under PyTorch's path.

So that ``import torch.nn.functional as F`` ports as ``import minidl.nn.functional as F``.
"""
import sys

from .. import functional as _functional

sys.modules[__name__] = _functional   # one module, two names: F.relu is F.relu either way
