"""Optimizers called as PyTorch's are: what params may be, step(closure), a state_dict that PyTorch made."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.nn as nn
import minidl.optim as mine_lib
from minidl.optim import SGD, Adam, AdamW, Lookahead, RMSprop, StepLR

torch = pytest.importorskip("torch")


def test_params_must_be_an_iterable_of_leaf_tensors():
    p = nn.Parameter(np.ones((3, 2)))
    with pytest.raises(TypeError, match="got one tensor of shape \\(3, 2\\); wrap it in a list"):
        SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="parameter 1 is a ndarray, not a Parameter"):
        SGD([p, np.ones(2)], lr=0.1)
    with pytest.raises(ValueError, match="parameter 0 is not a leaf"):
        SGD([p * 2.0], lr=0.1)
    opt = SGD([{"params": p, "lr": 0.5}], lr=0.1)      # a group's params may be one tensor (PyTorch)
    assert opt.param_groups[0]["params"] == [p]


def test_named_parameters_are_accepted():
    model = nn.Linear(3, 2)
    named, plain = SGD(model.named_parameters(), lr=0.1), SGD(model.parameters(), lr=0.1)
    assert named.parameters() == plain.parameters() == list(model.parameters())


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda ps: Adam(ps, lr=0.01),
                                  lambda ps: RMSprop(ps, lr=0.01), lambda ps: Lookahead(SGD(ps, lr=0.1), k=2)])
def test_step_takes_a_closure_and_returns_its_loss(make):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 3)).astype(np.float32), np.array([0, 1, 1, 0])
    a, b = nn.Linear(3, 2, rng=np.random.default_rng(1)), nn.Linear(3, 2, rng=np.random.default_rng(1))
    opt_a, opt_b = make(list(a.parameters())), make(list(b.parameters()))

    def closure():
        opt_a.zero_grad()
        loss = F.cross_entropy(a(minidl.tensor(x)), y)
        loss.backward()
        return loss

    with minidl.no_grad():       # the closure records its graph even here, as PyTorch's does
        loss = opt_a.step(closure)
    assert loss.item() > 0
    opt_b.zero_grad()
    F.cross_entropy(b(minidl.tensor(x)), y).backward()
    assert opt_b.step() is None
    for pa, pb in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(pa.numpy(), pb.numpy())


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_a_state_dict_from_torch_loads_and_steps_on_as_torch(name):
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(6)]
    kwargs = {"SGD": dict(lr=0.1, momentum=0.9), "Adam": dict(lr=0.01), "AdamW": dict(lr=0.01, weight_decay=0.1),
              "RMSprop": dict(lr=0.01, momentum=0.5)}[name]
    theirs = torch.nn.Parameter(torch.tensor(w0))
    torch_opt = getattr(torch.optim, name)([theirs], **kwargs)
    for g in grads[:3]:
        theirs.grad = torch.tensor(g)
        torch_opt.step()
    mine = nn.Parameter(theirs.detach().numpy().copy())
    opt = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW, "RMSprop": RMSprop}[name]([mine], **kwargs)
    opt.load_state_dict(torch_opt.state_dict())
    for g in grads[3:]:
        theirs.grad, mine.grad = torch.tensor(g), minidl.tensor(g)
        torch_opt.step()
        opt.step()
    np.testing.assert_allclose(mine.numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_a_torch_state_with_a_switch_turned_on_or_the_wrong_rule_is_refused():
    p = torch.nn.Parameter(torch.ones(2))
    state = torch.optim.Adam([p], lr=0.1, foreach=True).state_dict()
    with pytest.raises(ValueError, match="no 'foreach' implementation switch"):
        Adam([nn.Parameter(np.ones(2))], lr=0.1).load_state_dict(state)
    with pytest.raises(ValueError, match="decoupled_weight_decay=True: that is AdamW's rule, and this is Adam"):
        Adam([nn.Parameter(np.ones(2))], lr=0.1).load_state_dict(torch.optim.AdamW([p]).state_dict())


def test_schedules_report_every_groups_rate():
    a, b = nn.Parameter(np.ones(1)), nn.Parameter(np.ones(1))
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=1.0)
    sched = StepLR(opt, 1, gamma=0.1)
    sched.step_epoch()
    assert sched.get_last_lr() == pytest.approx([0.1, 0.05])


@pytest.mark.parametrize("name", ["StepLR", "MultiStepLR", "CosineAnnealingLR", "OneCycleLR", "ReduceLROnPlateau"])
def test_scheduler_step_follows_torch(name):
    make = {"StepLR": (lambda lib, o: lib.StepLR(o, 3, gamma=0.5)),
            "MultiStepLR": (lambda lib, o: lib.MultiStepLR(o, [2, 5], gamma=0.1)),
            "CosineAnnealingLR": (lambda lib, o: lib.CosineAnnealingLR(o, T_max=4, eta_min=0.01)),
            "OneCycleLR": (lambda lib, o: lib.OneCycleLR(o, max_lr=0.5, total_steps=12)),
            "ReduceLROnPlateau": (lambda lib, o: lib.ReduceLROnPlateau(o, patience=1))}[name]
    opt = SGD([nn.Parameter(np.ones(1))], lr=0.2)
    torch_opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.2)
    mine, theirs = make(mine_lib, opt), make(torch.optim.lr_scheduler, torch_opt)
    losses = [1.0, 0.9, 0.95, 0.97, 0.96, 0.99, 0.5, 0.6, 0.7, 0.8, 0.9]
    for loss in losses:
        args = (loss,) if name == "ReduceLROnPlateau" else ()
        torch_opt.step()
        mine.step(*args)
        theirs.step(*args)
        assert opt.param_groups[0]["lr"] == pytest.approx(torch_opt.param_groups[0]["lr"], rel=1e-9)
    state = mine.state_dict()
    again = make(mine_lib, SGD([nn.Parameter(np.ones(1))], lr=0.2))
    again.load_state_dict(state)
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"]) or name == \
        "ReduceLROnPlateau"    # the plateau's rate lives in the optimizer's state, not the schedule's
