"""Adadelta against torch.optim: 60 float64 steps for every option, groups, state_dict layout, signature."""
import inspect

import numpy as np
import pytest

import minidl.nn as nn
from minidl.optim import Adadelta, Optimizer

from support.optim_twins import assert_twins_match, grouped, step_twins, torch, twin_params

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed (optional reference)")
SWITCHES = {"foreach", "capturable", "differentiable"}

OPTIONS = [dict(), dict(lr=0.5, rho=0.95), dict(weight_decay=0.1, maximize=True), dict(eps=1e-3, rho=0.0),
           dict(lr=2.0, rho=1.0)]


@needs_torch
@pytest.mark.parametrize("options", OPTIONS)
def test_matches_torch_for_every_option(options):
    rng = np.random.default_rng(len(str(options)))
    ours, theirs = twin_params(rng)
    opt = Adadelta(ours, **options)
    ref = torch.optim.Adadelta(theirs, foreach=False, **options)
    step_twins(opt, ref, ours, theirs, rng, 60, late=5)
    assert opt.state[ours[0]]["step"] == 55
    assert_twins_match(opt, ref, ours, theirs, switches=SWITCHES)


@needs_torch
def test_groups_and_signature_are_torchs():
    rng = np.random.default_rng(3)
    ours, theirs = twin_params(rng)
    groups = [([0], dict(lr=0.5)), ([1], dict(rho=0.5, weight_decay=0.1)), ([2], dict(maximize=True))]
    opt = Adadelta(grouped(ours, groups))
    ref = torch.optim.Adadelta(grouped(theirs, groups), foreach=False)
    step_twins(opt, ref, ours, theirs, rng, 30)
    assert_twins_match(opt, ref, ours, theirs, switches=SWITCHES)

    def described(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]
    assert described(Adadelta) == described(torch.optim.Adadelta)
    assert isinstance(opt, Optimizer)


@pytest.mark.parametrize("kwargs, match", [(dict(lr=-1.0), "lr"), (dict(rho=1.5), "rho"), (dict(eps=-1.0), "eps"),
                                           (dict(foreach=True), "foreach")])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Adadelta([nn.Parameter(np.ones(2))], **kwargs)
