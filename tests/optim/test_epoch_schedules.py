"""LambdaLR, MultiplicativeLR, ExponentialLR, LinearLR, ConstantLR, PolynomialLR and
CosineAnnealingWarmRestarts: epoch for epoch as torch.optim.lr_scheduler's on two parameter
groups, resumed exactly from state_dict, and clear errors."""
import numpy as np
import pytest

import minidl.nn as nn
import minidl.optim as optim
import minidl.optim.lr_scheduler as lr_scheduler

MAKE = {
    "LambdaLR": lambda lib, o: lib.LambdaLR(o, lambda e: 0.9 ** e + 0.01 * e),
    "LambdaLR per group": lambda lib, o: lib.LambdaLR(o, [lambda e: 1 / (e + 1), lambda e: 0.5 * (e % 3 + 1)]),
    "MultiplicativeLR": lambda lib, o: lib.MultiplicativeLR(o, lambda e: 0.95 if e % 2 else 0.8),
    "ExponentialLR": lambda lib, o: lib.ExponentialLR(o, gamma=0.7),
    "LinearLR": lambda lib, o: lib.LinearLR(o, start_factor=0.1, end_factor=0.9, total_iters=6),
    "LinearLR default": lambda lib, o: lib.LinearLR(o),
    "ConstantLR": lambda lib, o: lib.ConstantLR(o, factor=0.25, total_iters=4),
    "PolynomialLR": lambda lib, o: lib.PolynomialLR(o, total_iters=7, power=2.0),
    "CosineAnnealingWarmRestarts": lambda lib, o: lib.CosineAnnealingWarmRestarts(o, T_0=3, eta_min=0.001),
    "CosineAnnealingWarmRestarts T_mult": lambda lib, o: lib.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=2),
}


def _groups(lib, params):
    return lib.SGD([{"params": [params[0]]}, {"params": [params[1]], "lr": 0.03}], lr=0.2)


@pytest.mark.parametrize("name", list(MAKE))
def test_follows_torch_epoch_for_epoch_and_resumes_exactly(name):
    torch = pytest.importorskip("torch")
    opt = _groups(optim, [nn.Parameter(np.ones(1)), nn.Parameter(np.ones(1))])
    torch_opt = _groups(torch.optim, [torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))])
    mine, theirs = MAKE[name](lr_scheduler, opt), MAKE[name](torch.optim.lr_scheduler, torch_opt)
    assert mine.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12)   # the rate before any step
    for epoch in range(16):
        torch_opt.step()
        mine.step()
        theirs.step()
        assert mine.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12), f"epoch {epoch + 1}"
        if epoch == 8:
            state = mine.state_dict()
    resumed = MAKE[name](optim, _groups(optim, [nn.Parameter(np.ones(1)), nn.Parameter(np.ones(1))]))
    resumed.load_state_dict(state)
    for _ in range(7):
        resumed.step()
    assert resumed.get_last_lr() == pytest.approx(mine.get_last_lr(), rel=1e-12)


def test_trainer_clock_is_the_epoch():
    opt = optim.SGD([nn.Parameter(np.ones(1))], lr=1.0)
    sched = optim.ExponentialLR(opt, 0.5)
    sched.step_batch()                       # not its clock
    assert sched.lr == 1.0
    sched.step_epoch()
    assert sched.lr == 0.5


@pytest.mark.parametrize("call, match", [
    (lambda o: optim.LambdaLR(o, 0.5), "LambdaLR: lr_lambda must be a function or a list of 1 functions"),
    (lambda o: optim.LambdaLR(o, [abs, abs]), "LambdaLR: lr_lambda must be"),
    (lambda o: optim.ExponentialLR(o, 0), "ExponentialLR: gamma must be a number > 0"),
    (lambda o: optim.LinearLR(o, start_factor=0), "LinearLR: start_factor must be a number > 0"),
    (lambda o: optim.LinearLR(o, end_factor=1.5), "LinearLR: end_factor must be at most 1.0"),
    (lambda o: optim.ConstantLR(o, factor=2), "ConstantLR: factor must be at most 1.0"),
    (lambda o: optim.PolynomialLR(o, total_iters=0), "PolynomialLR: total_iters must be an int >= 1"),
    (lambda o: optim.CosineAnnealingWarmRestarts(o, 0), "CosineAnnealingWarmRestarts: T_0 must be an int >= 1"),
    (lambda o: optim.CosineAnnealingWarmRestarts(o, 2, T_mult=1.5), "T_mult must be an int >= 1"),
])
def test_bad_arguments_are_refused_with_the_schedules_name(call, match):
    with pytest.raises(ValueError, match=match):
        call(optim.SGD([nn.Parameter(np.ones(1))], lr=0.1))
