"""minidl.models: complete networks built from minidl.nn layers."""
from .alexnet import AlexNet

__all__ = ["AlexNet"]
