"""minidl.optim: optimizers with parameter groups, and learning-rate schedules (PyTorch's names).

    optimizer.py      Optimizer: param_groups, state, zero_grad, state_dict / load_state_dict
    sgd.py            SGD: PyTorch's rule (momentum, Nesterov, weight decay), readable in a few lines
    lr_scheduler.py   StepLR, CosineLR, OneCycleLR, ReduceLROnPlateau, on every group
"""
from .lr_scheduler import CosineLR, LRScheduler, OneCycleLR, ReduceLROnPlateau, StepLR
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["CosineLR", "LRScheduler", "OneCycleLR", "Optimizer", "ReduceLROnPlateau", "SGD", "StepLR"]
