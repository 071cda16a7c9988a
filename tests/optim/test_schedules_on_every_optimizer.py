"""Every schedule on every optimizer, two groups at different rates: the same rates as torch's
schedule on torch's optimizer, step after step, and the same parameters at the end."""
import numpy as np
import pytest

from minidl.optim import SGD, Adam, AdamW, CosineLR, OneCycleLR, ReduceLROnPlateau, RMSprop, StepLR

from support.optim_twins import grouped, step_twins, torch, twin_params

pytestmark = pytest.mark.skipif(torch is None, reason="torch not installed (optional reference)")

EPOCHS, STEPS_PER_EPOCH = 6, 4
METRICS = [1.0, 0.9, 0.95, 0.96, 0.8, 0.85]   # a validation loss: two plateaus

OPTIMIZERS = {
    "SGD": (SGD, dict(momentum=0.9, nesterov=True)),
    "Adam": (Adam, dict(amsgrad=True, weight_decay=0.01)),
    "AdamW": (AdamW, dict()),
    "RMSprop": (RMSprop, dict(momentum=0.5, centered=True)),
}


def schedules():
    lr_scheduler = torch.optim.lr_scheduler
    total = EPOCHS * STEPS_PER_EPOCH
    return {   # name: (minidl's, torch's, which clock drives it)
        "StepLR": (lambda o: StepLR(o, step_size_epochs=2, gamma=0.5),
                   lambda o: lr_scheduler.StepLR(o, step_size=2, gamma=0.5), "epoch"),
        "CosineLR": (lambda o: CosineLR(o, total_steps=total, min_lr=1e-4),
                     lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=total, eta_min=1e-4), "batch"),
        "OneCycleLR": (lambda o: OneCycleLR(o, max_lr=[0.02, 0.005], total_steps=total),
                       lambda o: lr_scheduler.OneCycleLR(o, max_lr=[0.02, 0.005], total_steps=total,
                                                         cycle_momentum=False), "batch"),
        "ReduceLROnPlateau": (lambda o: ReduceLROnPlateau(o, mode="min", factor=0.5, patience=0),
                              lambda o: lr_scheduler.ReduceLROnPlateau(o, mode="min", factor=0.5, patience=0),
                              "epoch"),
    }


@pytest.mark.parametrize("schedule_name", ["StepLR", "CosineLR", "OneCycleLR", "ReduceLROnPlateau"])
@pytest.mark.parametrize("optimizer_name", list(OPTIMIZERS))
def test_schedule_drives_every_group_of_every_optimizer_as_torch(optimizer_name, schedule_name):
    cls, options = OPTIMIZERS[optimizer_name]
    make_ours, make_theirs, clock = schedules()[schedule_name]
    rng = np.random.default_rng(3)
    ours, theirs = twin_params(rng)
    groups = [([0], dict(lr=0.01)), ([1, 2], dict(lr=0.003))]
    opt = cls(grouped(ours, groups), **options)
    ref = getattr(torch.optim, optimizer_name)(grouped(theirs, groups), foreach=False, **options)
    sched, ref_sched = make_ours(opt), make_theirs(ref)
    seen, total = [], EPOCHS * STEPS_PER_EPOCH

    def after_step(t):
        if t == total - 1:   # past the end torch's cosine rises again and its one-cycle refuses; minidl's hold
            return
        if clock == "batch":
            sched.step_batch()
            ref_sched.step()
        elif t % STEPS_PER_EPOCH == STEPS_PER_EPOCH - 1:
            metric = METRICS[t // STEPS_PER_EPOCH]
            sched.step_epoch(metric)
            ref_sched.step(metric) if schedule_name == "ReduceLROnPlateau" else ref_sched.step()
        lrs = [g["lr"] for g in opt.param_groups]
        assert lrs == pytest.approx([g["lr"] for g in ref.param_groups], rel=1e-9, abs=1e-15)
        seen.append(lrs)

    step_twins(opt, ref, ours, theirs, rng, total, after_step=after_step)
    for i in range(2):   # each group's rate moved, and the groups kept different rates
        assert len({round(lrs[i], 15) for lrs in seen}) > 1
    assert all(lrs[0] != lrs[1] for lrs in seen)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-9, atol=1e-12)
