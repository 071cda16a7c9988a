"""minidl.optim: optimizers with parameter groups, and learning-rate schedules (PyTorch's names).

    optimizer.py      Optimizer: param_groups, state, zero_grad, state_dict / load_state_dict
    sgd.py            SGD: PyTorch's rule (momentum, Nesterov, weight decay), readable in a few lines
    adam.py           Adam (amsgrad, L2 or decoupled weight decay) and AdamW: torch.optim's rule
    rmsprop.py        RMSprop (momentum, centered): torch.optim's rule
    adadelta.py       Adadelta: torch.optim's rule
    lookahead.py      Lookahead: every k steps, slow += alpha (fast - slow), fast = slow (any optimizer)
    lr_scheduler.py   StepLR, MultiStepLR, CosineLR, CosineAnnealingLR, LinearWarmupDecayLR, OneCycleLR,
                      ReduceLROnPlateau,
                      on every group of any optimizer
    epoch_schedules.py LambdaLR, MultiplicativeLR, ExponentialLR, LinearLR, ConstantLR, PolynomialLR,
                      CosineAnnealingWarmRestarts (also importable from lr_scheduler, as PyTorch's)
"""
from .adadelta import Adadelta
from .adam import Adam, AdamW
from .epoch_schedules import (ConstantLR, CosineAnnealingWarmRestarts, ExponentialLR, LambdaLR, LinearLR,
                              MultiplicativeLR, PolynomialLR)
from .lookahead import Lookahead
from .lr_scheduler import (CosineAnnealingLR, CosineLR, LinearWarmupDecayLR, LRScheduler, MultiStepLR, OneCycleLR, ReduceLROnPlateau,
                           StepLR)
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Adadelta", "Adam", "AdamW", "CosineAnnealingLR", "CosineLR", "LinearWarmupDecayLR", "Lookahead", "LRScheduler", "MultiStepLR", "OneCycleLR",
           "Optimizer", "RMSprop", "ReduceLROnPlateau", "SGD", "StepLR"]
__all__ += ["ConstantLR", "CosineAnnealingWarmRestarts", "ExponentialLR", "LambdaLR", "LinearLR", "MultiplicativeLR",
            "PolynomialLR"]
