"""A minidl optimizer and its torch.optim twin, stepped on the same parameters and gradients (float64)."""
import numpy as np

import minidl
import minidl.nn as nn

try:
    import torch
except ImportError:  # torch is an optional, test-only reference
    torch = None

SHAPES = [(3, 4), (4,), (2, 2, 3)]
# PyTorch's implementation switches: in torch's param_groups, not in minidl's.
SWITCHES = {"foreach", "capturable", "differentiable", "fused"}


def twin_params(rng, shapes=SHAPES):
    """float64 minidl Parameters and torch leaf tensors holding the same values."""
    ours = [nn.Parameter(rng.normal(size=s)) for s in shapes]
    return ours, [torch.tensor(p.numpy(), requires_grad=True) for p in ours]


def grouped(params, groups):
    """``params`` as one list (groups None) or as groups: [(indices, settings), ...] -> [{"params": ...}, ...]."""
    if groups is None:
        return list(params)
    return [{"params": [params[i] for i in indices], **settings} for indices, settings in groups]


def step_twins(opt, ref, ours, theirs, rng, steps, late=0, after_step=None):
    """``steps`` steps of both on the same random gradients.

    Args:
        late: the first parameter gets no gradient for this many steps (its step count starts late).
        after_step: called after every step (e.g. a schedule on ``opt`` that ``ref`` copies).
    """
    for t in range(steps):
        for i, (p, q) in enumerate(zip(ours, theirs)):
            if i == 0 and t < late:
                p.grad = q.grad = None
                continue
            g = rng.normal(size=p.shape)
            p.grad, q.grad = minidl.tensor(g), torch.tensor(g)
        opt.step()
        ref.step()
        if after_step is not None:
            after_step(t)


def copy_lrs(opt, ref):
    """Give ``ref``'s groups ``opt``'s learning rates (a schedule on ours, followed by torch)."""
    for mine, theirs in zip(opt.param_groups, ref.param_groups):
        theirs["lr"] = mine["lr"]


def assert_twins_match(opt, ref, ours, theirs, switches=SWITCHES, rtol=1e-12, atol=1e-13):
    """Same parameters and state (to rtol), same state_dict layout: state keys in torch's order, every
    minidl group setting equal to torch's, and torch's extra settings exactly its implementation switches."""
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=rtol, atol=atol)
    mine, torchs = opt.state_dict(), ref.state_dict()
    assert sorted(mine["state"]) == sorted(torchs["state"])
    for i, entries in mine["state"].items():
        assert list(entries) == list(torchs["state"][i])
        for key, value in entries.items():
            expected = torchs["state"][i][key]
            if key == "step":   # torch: a 0-d float tensor; minidl: the Python float
                assert type(value) is float and value == float(expected)
            else:
                np.testing.assert_allclose(value, expected.numpy(), rtol=rtol, atol=atol, err_msg=f"{i}/{key}")
    assert len(mine["param_groups"]) == len(torchs["param_groups"])
    for g_mine, g_torch in zip(mine["param_groups"], torchs["param_groups"]):
        assert g_mine == {k: g_torch[k] for k in g_mine}
        assert set(g_torch) - set(g_mine) == switches
