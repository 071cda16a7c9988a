"""RMSprop against torch.optim (60 float64 steps, every option, groups, a schedule, state_dict layout) and
its arguments against torch's signature."""
import inspect

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.optim import Optimizer, RMSprop, StepLR

from support.optim_twins import assert_twins_match, copy_lrs, grouped, step_twins, torch, twin_params

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed (optional reference)")
STEPS = 60
SWITCHES = {"foreach", "capturable", "differentiable"}   # torch's RMSprop has no fused


def param(values):
    return nn.Parameter(np.array(values, dtype=np.float64))


OPTIONS = [
    dict(),
    dict(lr=0.001, momentum=0.9),
    dict(lr=0.001, centered=True),
    dict(lr=0.001, momentum=0.9, centered=True),
    dict(lr=0.001, weight_decay=0.1, maximize=True),
    dict(lr=0.002, alpha=0.9, eps=1e-4, weight_decay=0.05, momentum=0.5, centered=True, maximize=True),
    dict(lr=0.001, alpha=0.0, momentum=0.3),
]


@needs_torch
@pytest.mark.parametrize("options", OPTIONS)
def test_matches_torch_for_every_option(kernel_mode, options):
    rng = np.random.default_rng(len(str(options)))
    ours, theirs = twin_params(rng)
    opt = RMSprop(ours, **options)
    ref = torch.optim.RMSprop(theirs, foreach=False, **options)
    step_twins(opt, ref, ours, theirs, rng, STEPS, late=7)
    assert opt.state[ours[0]]["step"] == STEPS - 7
    assert_twins_match(opt, ref, ours, theirs, switches=SWITCHES)


@needs_torch
def test_parameter_groups_and_a_schedule_match_torch(kernel_mode):
    rng = np.random.default_rng(12)
    ours, theirs = twin_params(rng)
    groups = [([0], dict(lr=0.003, centered=True, momentum=0.9)),
              ([1], dict(alpha=0.9, weight_decay=0.1)),
              ([2], dict(maximize=True, momentum=0.5, eps=1e-3))]
    opt = RMSprop(grouped(ours, groups), lr=0.001)
    ref = torch.optim.RMSprop(grouped(theirs, groups), lr=0.001, foreach=False)
    assert [g["lr"] for g in opt.param_groups] == [0.003, 0.001, 0.001]
    schedule = StepLR(opt, step_size_epochs=2, gamma=0.5)

    def after_step(t):
        if t % 10 == 9:   # an "epoch" of 10 steps
            schedule.step_epoch()
            copy_lrs(opt, ref)

    step_twins(opt, ref, ours, theirs, rng, STEPS, after_step=after_step)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.003 / 8)
    assert_twins_match(opt, ref, ours, theirs, switches=SWITCHES)


@needs_torch
def test_signature_and_defaults_are_torchs():
    def described(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]
    assert described(RMSprop) == described(torch.optim.RMSprop)
    opt = RMSprop([param([1.0])])
    assert {k: v for k, v in opt.param_groups[0].items() if k != "params"} == dict(
        lr=1e-2, momentum=0.0, alpha=0.99, eps=1e-8, centered=False, weight_decay=0.0, maximize=False)
    assert isinstance(opt, Optimizer)


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=-1.0), "lr"), (dict(alpha=-0.1), "alpha"), (dict(eps=-1e-8), "eps"),
    (dict(weight_decay=-1), "weight_decay"), (dict(momentum=-0.9), "momentum"), (dict(momentum=True), "momentum"),
])
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=f"RMSprop: {match} must be a number >= 0"):
        RMSprop([param([1.0])], **kwargs)


@pytest.mark.parametrize("switch", ["foreach", "capturable", "differentiable"])
def test_implementation_switches_only_off(switch):
    with pytest.raises(ValueError, match=f"RMSprop: minidl has no '{switch}' implementation switch"):
        RMSprop([param([1.0])], **{switch: True})
    for off in (None, False):
        assert switch not in RMSprop([param([1.0])], **{switch: off}).param_groups[0]
    with pytest.raises(TypeError):   # torch's RMSprop has no fused
        RMSprop([param([1.0])], fused=None)


def test_first_steps_by_hand_and_grad_untouched(kernel_mode):
    # Centered, with momentum, eps 0: the rule of the module doc written out for two steps.
    alpha, lr = 0.75, 0.1
    g1, g2 = np.array([2.0, -0.5]), np.array([1.0, 1.0])
    p = param([0.0, 0.0])
    opt = RMSprop([p], lr=lr, alpha=alpha, eps=0.0, momentum=0.5, centered=True)
    p.grad = minidl.tensor(g1.copy())
    opt.step()
    v, a = (1 - alpha) * g1 ** 2, (1 - alpha) * g1
    buf = g1 / np.sqrt(v - a * a)               # = g1 / (sqrt(alpha (1 - alpha)) |g1|)
    expected = -lr * buf
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12)
    p.grad = minidl.tensor(g2)
    opt.step()
    v, a = alpha * v + (1 - alpha) * g2 ** 2, alpha * a + (1 - alpha) * g2
    buf = 0.5 * buf + g2 / np.sqrt(v - a * a)
    np.testing.assert_allclose(p.numpy(), expected - lr * buf, rtol=1e-12)
    np.testing.assert_array_equal(p.grad.numpy(), g2)
    assert list(opt.state[p]) == ["step", "square_avg", "momentum_buffer", "grad_avg"]


def test_momentum_or_centered_switched_on_later_starts_their_state():
    p = param([1.0, 2.0])
    opt = RMSprop([p], lr=0.01)
    p.grad = minidl.tensor(np.array([0.1, -0.2]))
    opt.step()
    assert list(opt.state[p]) == ["step", "square_avg"]
    opt.param_groups[0].update(momentum=0.9, centered=True)
    opt.step()
    assert opt.state[p]["step"] == 2.0 and {"momentum_buffer", "grad_avg"} <= set(opt.state[p])
