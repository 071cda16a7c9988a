"""Lookahead: the pull towards the slow weights every k steps, alpha schedules, state and exact resumption."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.checkpoint import load_checkpoint, save_checkpoint
from minidl.optim import SGD, LinearWarmupDecayLR, Lookahead


def quadratic_grad(p, target):
    """The gradient of 0.5 ||p - target||^2."""
    p.grad = minidl.tensor(p.data - target)


def test_every_kth_step_pulls_the_weights_to_the_slow_average():
    target = np.array([1.0, -2.0])
    p = nn.Parameter(np.array([0.0, 0.0]))
    opt = Lookahead(SGD([p], lr=0.1), k=2, alpha=0.5)
    fast, slow = p.data.copy(), p.data.copy()
    for step in range(1, 7):
        quadratic_grad(p, target)
        opt.step()
        fast = fast - 0.1 * (fast - target)       # plain SGD
        if step % 2 == 0:
            slow = slow + 0.5 * (fast - slow)
            fast = slow.copy()
        np.testing.assert_allclose(p.data, fast, rtol=1e-14)
    assert opt.steps == 6


def test_alpha_one_is_the_wrapped_optimizer_and_alpha_may_follow_the_steps():
    target = np.array([3.0])
    a, b = nn.Parameter(np.array([0.0])), nn.Parameter(np.array([0.0]))
    plain, wrapped = SGD([a], lr=0.2, momentum=0.85, nesterov=True), Lookahead(SGD([b], lr=0.2, momentum=0.85,
                                                                                      nesterov=True), k=3, alpha=1.0)
    for _ in range(7):
        quadratic_grad(a, target), quadratic_grad(b, target)
        plain.step(), wrapped.step()
    np.testing.assert_array_equal(a.data, b.data)
    seen = []
    c = nn.Parameter(np.array([0.0]))
    ramp = Lookahead(SGD([c], lr=0.1), k=2, alpha=lambda steps: seen.append(steps) or 1.0 - steps / 10)
    for _ in range(5):
        quadratic_grad(c, target)
        ramp.step()
    assert seen == [2, 4]


def test_schedules_drive_the_wrapped_groups():
    p, q = nn.Parameter(np.zeros(1)), nn.Parameter(np.zeros(1))
    opt = Lookahead(SGD([{"params": [p]}, {"params": [q], "lr": 4.0}], lr=1.0), k=5)
    sched = LinearWarmupDecayLR(opt, total_steps=4, warmup_steps=2, start_factor=0.5, end_factor=0.0)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 2.0] and opt.lr == 0.5
    sched.step_batch()
    assert [g["lr"] for g in opt.param_groups] == [0.75, 3.0]


def test_state_dict_resumes_exactly_through_a_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    target = rng.standard_normal((3, 2))

    def make():
        p = nn.Parameter(np.zeros((3, 2)))
        return p, Lookahead(SGD([p], lr=0.3, momentum=0.9), k=3, alpha=lambda s: 0.5)

    p, opt = make()
    for _ in range(4):
        quadratic_grad(p, target)
        opt.step()
    save_checkpoint(tmp_path / "c.npz", {"optim": opt.state_dict(), "p": p.data})
    for _ in range(5):
        quadratic_grad(p, target)
        opt.step()
    state = load_checkpoint(tmp_path / "c.npz")
    p2, opt2 = make()
    p2.data[...] = state["p"]
    opt2.load_state_dict(state["optim"])
    for _ in range(5):
        quadratic_grad(p2, target)
        opt2.step()
    np.testing.assert_array_equal(p2.data, p.data)
    np.testing.assert_array_equal(opt2.slow[0], opt.slow[0])


def test_a_modules_buffers_are_averaged_too_and_resume():
    rng = np.random.default_rng(1)
    bn = nn.BatchNorm1d(3, momentum=0.5, dtype=np.float64)
    opt = Lookahead(SGD(bn.parameters(), lr=0.1), k=2, alpha=0.25, module=bn)
    slow = bn.running_mean.copy()
    for step in range(1, 7):
        y = bn(minidl.tensor(rng.standard_normal((8, 3)) * 3 + 1))   # moves the running statistics
        (y * y).sum().backward()
        fast = bn.running_mean.copy()
        opt.step()
        bn.zero_grad()
        if step % 2 == 0:   # the buffers follow the weights' rule
            slow = slow + 0.25 * (fast - slow)
            np.testing.assert_allclose(bn.running_mean, slow, rtol=1e-12)
        else:
            np.testing.assert_array_equal(bn.running_mean, fast)
    state = opt.state_dict()
    assert len(state["lookahead"]["slow_buffers"]) == 2
    other = nn.BatchNorm1d(3, dtype=np.float64)
    again = Lookahead(SGD(other.parameters(), lr=0.1), k=2, module=other)
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.slow_buffers[0], opt.slow_buffers[0])
    with pytest.raises(ValueError, match="slow buffers"):
        Lookahead(SGD(other.parameters(), lr=0.1), k=2).load_state_dict(state)


def test_errors():
    p = nn.Parameter(np.zeros(1))
    with pytest.raises(ValueError, match="Lookahead: k must be"):
        Lookahead(SGD([p], lr=0.1), k=0)
    with pytest.raises(ValueError, match="Lookahead: alpha must be"):
        Lookahead(SGD([p], lr=0.1), alpha=1.5)
    with pytest.raises(ValueError, match="Lookahead: expected a minidl optimizer"):
        Lookahead([p])
    with pytest.raises(ValueError, match="Lookahead.load_state_dict: expected the state of a Lookahead"):
        Lookahead(SGD([p], lr=0.1)).load_state_dict(SGD([p], lr=0.1).state_dict())
    bad = Lookahead(SGD([p], lr=0.1), alpha=lambda s: 2.0)
    p.grad = minidl.tensor(np.ones(1))
    for _ in range(4):
        bad.step()
    with pytest.raises(ValueError, match="Lookahead: alpha must be"):
        bad.step()
