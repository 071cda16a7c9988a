"""The learning-rate schedules against hand formulas and torch, on every parameter group."""
import json
import math

import numpy as np
import pytest

import minidl
import minidl.kernels
import minidl.nn as nn
from minidl.optim import SGD, CosineLR, OneCycleLR, ReduceLROnPlateau, StepLR

try:
    import torch
except ImportError:  # torch is an optional, test-only reference
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed (optional reference)")


def param(values):
    return nn.Parameter(np.array(values, dtype=np.float64))


def set_grad(p, values):
    p.grad = minidl.tensor(np.array(values, dtype=np.float64))


# ---- schedules -------------------------------------------------------------------------

def opt_with(lr):
    return SGD([param([0.0])], lr=lr)


def test_step_lr_sequence_and_batch_noop():
    opt = opt_with(1.0)
    sched = StepLR(opt, step_size_epochs=2, gamma=0.5)
    seen = []
    for _ in range(5):
        sched.step_batch()  # no-op for an epoch schedule
        sched.step_epoch()
        seen.append(opt.lr)
    assert seen == [1.0, 0.5, 0.5, 0.25, 0.25]
    with pytest.raises(ValueError, match="step_size must be an int >= 1"):
        StepLR(opt, 0)
    with pytest.raises(TypeError, match="give step_size"):
        StepLR(opt, 2, step_size_epochs=2)


def test_cosine_lr_hand_formula_with_warmup():
    opt = opt_with(0.4)
    sched = CosineLR(opt, total_steps=10, min_lr=0.1, warmup_steps=2)
    seen = [opt.lr]
    for _ in range(11):
        sched.step_epoch(0.5)  # no-op for a batch schedule
        sched.step_batch()
        seen.append(opt.lr)
    expected = [0.2, 0.4] + [0.1 + 0.3 * (1 + math.cos(math.pi * k / 8)) / 2 for k in range(9)] + [0.1]
    np.testing.assert_allclose(seen, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="warmup_steps"):
        CosineLR(opt_with(0.1), total_steps=5, warmup_steps=5)


@needs_torch
def test_cosine_lr_matches_torch_without_warmup():
    opt = opt_with(0.1)
    sched = CosineLR(opt, total_steps=20, min_lr=0.001)
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(t_opt, T_max=20, eta_min=0.001)
    for _ in range(20):
        assert opt.lr == pytest.approx(t_opt.param_groups[0]["lr"], rel=1e-9)
        t_opt.step(), ref.step(), sched.step_batch()


@needs_torch
@pytest.mark.parametrize("total,pct", [(100, 0.3), (37, 0.25)])
def test_one_cycle_matches_torch(total, pct):
    opt = opt_with(123.0)
    sched = OneCycleLR(opt, max_lr=0.2, total_steps=total, pct_start=pct, div_factor=10, final_div_factor=100)
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    ref = torch.optim.lr_scheduler.OneCycleLR(t_opt, max_lr=0.2, total_steps=total, pct_start=pct,
                                              anneal_strategy="cos", cycle_momentum=False, div_factor=10,
                                              final_div_factor=100)
    for _ in range(total):
        assert opt.lr == pytest.approx(t_opt.param_groups[0]["lr"], rel=1e-9)
        t_opt.step(), ref.step(), sched.step_batch()
    assert opt.lr == pytest.approx(0.2 / 10 / 100)  # stepping past the end holds the final lr


def test_one_cycle_endpoints_by_hand():
    opt = opt_with(1.0)
    sched = OneCycleLR(opt, max_lr=1.0, total_steps=11, pct_start=0.5, div_factor=4, final_div_factor=5)
    lrs = [opt.lr]
    for _ in range(10):
        sched.step_batch()
        lrs.append(opt.lr)
    assert lrs[0] == pytest.approx(0.25) and lrs[10] == pytest.approx(0.05)
    # Warmup ends at step 0.5 * 11 - 1 = 4.5; each phase is a half cosine.
    assert lrs[4] == pytest.approx(1.0 + (0.25 - 1.0) / 2 * (math.cos(math.pi * 4 / 4.5) + 1))
    assert lrs[5] == pytest.approx(0.05 + (1.0 - 0.05) / 2 * (math.cos(math.pi * 0.5 / 5.5) + 1))
    with pytest.raises(ValueError, match="pct_start"):
        OneCycleLR(opt, 1.0, 10, pct_start=1.5)


@needs_torch
@pytest.mark.parametrize("mode, extra", [("max", {}), ("min", {}), ("max", dict(threshold_mode="abs", threshold=0.15)),
                                         ("min", dict(cooldown=2)), ("max", dict(patience=1, cooldown=1, eps=0.3))])
def test_reduce_on_plateau_matches_torch(mode, extra):
    metrics = [0.5, 0.6, 0.6, 0.60001, 0.59, 0.7, 0.7, 0.7, 0.7, 0.71, 0.5, 0.5, 0.5, 0.5, 0.4, 0.45, 0.3, 0.3]
    opt = opt_with(1.0)
    kwargs = dict(mode=mode, factor=0.5, patience=2, min_lr=0.1, threshold=1e-4)
    kwargs.update(extra)
    sched = ReduceLROnPlateau(opt, **kwargs)
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(t_opt, **kwargs)
    seen = []
    for m in metrics:
        sched.step_batch()  # no-op
        sched.step_epoch(m)
        ref.step(m)
        seen.append(opt.lr)
        assert opt.lr == pytest.approx(t_opt.param_groups[0]["lr"], rel=1e-12)
    assert min(seen) < 1.0  # the sequence does trigger reductions


def test_reduce_on_plateau_by_hand_and_errors():
    opt = opt_with(1.0)
    sched = ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=1)
    for metric, lr in [(0.5, 1.0), (0.5, 1.0), (0.4, 0.1), (0.6, 0.1), (0.6, 0.1), (0.6, 0.01)]:
        sched.step_epoch(metric)
        assert opt.lr == pytest.approx(lr)
    with pytest.raises(ValueError, match="metric"):
        sched.step_epoch()
    with pytest.raises(ValueError, match="mode"):
        ReduceLROnPlateau(opt, mode="up")


@pytest.mark.parametrize("make", [
    lambda o: StepLR(o, 2, 0.5),
    lambda o: CosineLR(o, 10, 0.01, 3),
    lambda o: OneCycleLR(o, 0.5, 10),
    lambda o: ReduceLROnPlateau(o, patience=0),
])
def test_schedule_state_dict_round_trip(make):
    metrics = [0.1, 0.3, 0.2, 0.2, 0.25, 0.1]
    opt_a = opt_with(0.3)
    a = make(opt_a)
    for m in metrics[:3]:
        a.step_batch(), a.step_batch(), a.step_epoch(m)
    state = json.loads(json.dumps(a.state_dict()))  # JSON-able
    opt_state = opt_a.state_dict()
    opt_b = opt_with(0.3)
    b = make(opt_b)
    opt_b.load_state_dict(opt_state)
    b.load_state_dict(state)
    assert opt_b.lr == opt_a.lr
    for m in metrics[3:]:
        for s in (a, b):
            s.step_batch(), s.step_batch(), s.step_epoch(m)
        assert opt_b.lr == opt_a.lr


def test_schedules_scale_every_group_and_keep_their_ratios():
    a, b = param([1.0]), param([2.0])
    opt = SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01}], lr=0.1)
    sched = CosineLR(opt, total_steps=4)
    for _ in range(2):
        sched.step_batch()
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.005)
    one_cycle = OneCycleLR(SGD([{"params": [a]}, {"params": [b]}], lr=1.0), max_lr=[0.4, 0.2], total_steps=10)
    assert [g["lr"] for g in one_cycle.optimizer.param_groups] == pytest.approx([0.4 / 25, 0.2 / 25])
    plateau = ReduceLROnPlateau(opt, "max", factor=0.5, patience=0)
    plateau.step_epoch(0.5), plateau.step_epoch(0.4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([lrs[0] / 2, lrs[1] / 2])
    with pytest.raises(ValueError, match="2 max_lr values for 1 parameter groups"):
        OneCycleLR(opt_with(0.1), max_lr=[0.1, 0.2], total_steps=10)


def test_a_schedule_restores_the_earlier_single_rate_state():
    opt = opt_with(0.3)
    sched = StepLR(opt, 2, 0.5)
    sched.load_state_dict({"base_lr": 0.8, "epoch": 4})   # minidl's state before groups
    assert sched.base_lrs == [0.8] and opt.lr == pytest.approx(0.2)


# ---- LinearWarmupDecayLR (airbench94's schedule) --------------------------------------------

def test_linear_warmup_decay_hand_formula_on_every_group():
    from minidl.optim import LinearWarmupDecayLR
    opt = SGD([{"params": [param([0.0])], "lr": 1.0}, {"params": [param([0.0])], "lr": 64.0}], lr=1.0)
    sched = LinearWarmupDecayLR(opt, total_steps=10, warmup_steps=4, start_factor=0.2, end_factor=0.05)
    seen = [[g["lr"] for g in opt.param_groups]]
    for _ in range(11):
        sched.step_batch()
        sched.step_epoch()   # a no-op for a step schedule
        seen.append([g["lr"] for g in opt.param_groups])
    factors = [0.2, 0.4, 0.6, 0.8, 1.0, 1 - 0.95 / 6, 1 - 2 * 0.95 / 6, 1 - 3 * 0.95 / 6, 1 - 4 * 0.95 / 6,
               1 - 5 * 0.95 / 6, 0.05, 0.05]
    np.testing.assert_allclose(np.array(seen), np.outer(factors, [1.0, 64.0]), rtol=1e-12)
    state = json.loads(json.dumps(sched.state_dict()))
    opt2 = SGD([{"params": [param([0.0])], "lr": 1.0}, {"params": [param([0.0])], "lr": 64.0}], lr=1.0)
    again = LinearWarmupDecayLR(opt2, total_steps=10, warmup_steps=4, start_factor=0.2, end_factor=0.05)
    again.load_state_dict(state)
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    with pytest.raises(ValueError, match="LinearWarmupDecayLR: warmup_steps"):
        LinearWarmupDecayLR(opt, total_steps=4, warmup_steps=4)
    with pytest.raises(ValueError, match="LinearWarmupDecayLR: end_factor"):
        LinearWarmupDecayLR(opt, total_steps=4, end_factor=-1)


@needs_torch
def test_linear_warmup_decay_matches_torch_sequential_linear_lrs():
    from minidl.optim import LinearWarmupDecayLR
    total, warmup = 23, 5
    opt = opt_with(1.5)
    sched = LinearWarmupDecayLR(opt, total_steps=total, warmup_steps=warmup, start_factor=0.2, end_factor=0.07)
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.5)
    first = torch.optim.lr_scheduler.LinearLR(topt, start_factor=0.2, end_factor=1.0, total_iters=warmup)
    second = torch.optim.lr_scheduler.LinearLR(topt, start_factor=1.0, end_factor=0.07, total_iters=total - warmup)
    tsched = torch.optim.lr_scheduler.SequentialLR(topt, [first, second], milestones=[warmup])
    ours, theirs = [], []
    for _ in range(total + 2):
        ours.append(opt.lr)
        theirs.append(topt.param_groups[0]["lr"])
        topt.step()
        sched.step_batch()
        tsched.step()
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)
