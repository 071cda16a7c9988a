"""Every optimizer's state through a checkpoint file: save, load into a fresh model, optimizer and
schedule, continue, and get the uninterrupted run to the bit."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.nn as nn
from minidl.checkpoint import load_checkpoint, save_checkpoint
from minidl.optim import SGD, Adam, AdamW, CosineLR, RMSprop

STEPS, SAVE_AT = 12, 5


def make_model(seed):
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(6, 8, rng=rng), nn.ReLU(), nn.Linear(8, 4, rng=rng))


def make_optimizer(cls, model, options):
    """Two groups: the first layer's weight, and the rest with its own rate (and settings)."""
    first, *rest = model.parameters()
    return cls([{"params": [first]}, {"params": rest, **options["group"]}], **options["all"])


OPTIMIZERS = [
    (Adam, {"all": dict(lr=0.01, amsgrad=True, weight_decay=1e-3), "group": dict(lr=0.02, betas=(0.8, 0.99))}),
    (AdamW, {"all": dict(lr=0.01), "group": dict(amsgrad=True, maximize=False, weight_decay=0.1)}),
    (RMSprop, {"all": dict(lr=0.005, momentum=0.9, centered=True), "group": dict(centered=False, alpha=0.9)}),
    (SGD, {"all": dict(lr=0.05, momentum=0.9, nesterov=True), "group": dict(weight_decay=1e-3)}),
]


def batches():
    rng = np.random.default_rng(17)
    return [(rng.normal(size=(5, 6)).astype(np.float32), rng.integers(0, 4, 5)) for _ in range(STEPS)]


def train(model, opt, schedule, data):
    for x, y in data:
        opt.zero_grad()
        F.softmax_cross_entropy(model(minidl.tensor(x)), y).backward()
        opt.step()
        schedule.step_batch()


@pytest.mark.parametrize("cls,options", OPTIMIZERS, ids=[c.__name__ for c, _ in OPTIMIZERS])
def test_save_load_continue_is_bit_identical(kernel_mode, tmp_path, cls, options):
    data = batches()
    model_a = make_model(0)
    opt_a = make_optimizer(cls, model_a, options)
    schedule_a = CosineLR(opt_a, total_steps=STEPS, min_lr=1e-4, warmup_steps=2)
    train(model_a, opt_a, schedule_a, data)

    model_b = make_model(0)
    opt_b = make_optimizer(cls, model_b, options)
    schedule_b = CosineLR(opt_b, total_steps=STEPS, min_lr=1e-4, warmup_steps=2)
    train(model_b, opt_b, schedule_b, data[:SAVE_AT])
    path = tmp_path / "run.npz"
    save_checkpoint(path, {"model": model_b.state_dict(), "optim": opt_b.state_dict(),
                           "schedule": schedule_b.state_dict()})

    state = load_checkpoint(path)
    model_c = make_model(1)                       # other weights and settings, all replaced by the file
    model_c.load_state_dict(state["model"])
    opt_c = make_optimizer(cls, model_c, {"all": {}, "group": {}})
    opt_c.load_state_dict(state["optim"])
    schedule_c = CosineLR(opt_c, total_steps=STEPS, min_lr=1e-4, warmup_steps=2)
    schedule_c.load_state_dict(state["schedule"])
    assert opt_c.param_groups[1]["lr"] == opt_b.param_groups[1]["lr"]
    if cls is not SGD:   # the per-parameter count comes back as the same Python float
        counts = [s["step"] for s in opt_c.state.values()]
        assert counts == [float(SAVE_AT)] * 4 and all(type(c) is float for c in counts)
    train(model_c, opt_c, schedule_c, data[SAVE_AT:])

    for (name, a), c in zip(model_a.state_dict().items(), model_c.state_dict().values()):
        np.testing.assert_array_equal(c, a, err_msg=name)
    end_a, end_c = opt_a.state_dict(), opt_c.state_dict()
    assert end_c["param_groups"] == end_a["param_groups"]
    for i, entries in end_a["state"].items():
        assert list(end_c["state"][i]) == list(entries)
        for key, value in entries.items():
            np.testing.assert_array_equal(end_c["state"][i][key], value, err_msg=f"{i}/{key}")
            assert np.asarray(end_c["state"][i][key]).dtype == np.asarray(value).dtype


def test_a_state_for_other_parameters_is_refused():
    model = make_model(0)
    opt = make_optimizer(Adam, model, {"all": {}, "group": {}})
    for p in model.parameters():
        p.grad = minidl.tensor(np.ones(p.shape, np.float32))
    opt.step()
    state = opt.state_dict()
    other = Adam(make_model(0).parameters())
    with pytest.raises(ValueError, match=r"Adam.load_state_dict: expected 1 parameter group\(s\), got 2"):
        other.load_state_dict(state)
    bad = {**state, "state": {**state["state"], 0: {**state["state"][0], "exp_avg": np.zeros((2, 2))}}}
    with pytest.raises(ValueError, match=r"exp_avg of parameter 0 has shape \(2, 2\)"):
        opt.load_state_dict(bad)
