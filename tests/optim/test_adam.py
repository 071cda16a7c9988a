"""Adam and AdamW against torch.optim (60 float64 steps, every option, groups, a schedule, state_dict
layout), their arguments against torch's signatures, and the fused CPU update against the reference."""
import inspect

import numpy as np
import pytest

import minidl
import minidl.kernels
import minidl.nn as nn
from minidl.kernels import dispatch
from minidl.kernels.cpu import adam as cpu_adam
from minidl.kernels.cpu import threads
from minidl.optim import Adam, AdamW, CosineLR, Optimizer

from support.optim_twins import assert_twins_match, copy_lrs, grouped, step_twins, torch, twin_params

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed (optional reference)")
STEPS = 60


def param(values):
    return nn.Parameter(np.array(values, dtype=np.float64))


# ---- against torch.optim ------------------------------------------------------------------

ADAM_OPTIONS = [
    dict(),
    dict(lr=0.01, amsgrad=True),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.01, maximize=True),
    dict(lr=0.02, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.05, amsgrad=True, maximize=True),
    dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True, maximize=True),
    dict(lr=0.0),
]
ADAMW_OPTIONS = [
    dict(),
    dict(lr=0.01, weight_decay=0.1, amsgrad=True),
    dict(lr=0.01, weight_decay=0.0, maximize=True),
    dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.3, amsgrad=True, maximize=True),
]


@needs_torch
@pytest.mark.parametrize("cls,options", [(Adam, o) for o in ADAM_OPTIONS] + [(AdamW, o) for o in ADAMW_OPTIONS])
def test_matches_torch_for_every_option(kernel_mode, cls, options):
    rng = np.random.default_rng(len(str(options)))
    ours, theirs = twin_params(rng)
    opt = cls(ours, **options)
    ref = getattr(torch.optim, cls.__name__)(theirs, foreach=False, **options)
    step_twins(opt, ref, ours, theirs, rng, STEPS, late=5)   # the first parameter starts its count late
    assert opt.state[ours[0]]["step"] == STEPS - 5 and opt.state[ours[1]]["step"] == STEPS
    assert_twins_match(opt, ref, ours, theirs)


@needs_torch
@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_parameter_groups_and_a_schedule_match_torch(kernel_mode, cls):
    """Groups with different settings, and every group's lr changed each step by a schedule."""
    rng = np.random.default_rng(11)
    ours, theirs = twin_params(rng)
    groups = [([0], dict(lr=0.05, amsgrad=True, weight_decay=0.1)),
              ([1, 2], dict(betas=(0.7, 0.99), maximize=True, eps=1e-4))]
    opt = cls(grouped(ours, groups), lr=0.01, weight_decay=0.02)
    ref = getattr(torch.optim, cls.__name__)(grouped(theirs, groups), lr=0.01, weight_decay=0.02, foreach=False)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.01]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.02]
    schedule = CosineLR(opt, total_steps=STEPS, min_lr=1e-4, warmup_steps=5)
    copy_lrs(opt, ref)

    def after_step(t):
        schedule.step_batch()
        copy_lrs(opt, ref)

    step_twins(opt, ref, ours, theirs, rng, STEPS, after_step=after_step)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert_twins_match(opt, ref, ours, theirs)


@needs_torch
def test_torchs_state_dict_loads_and_continues_alike(kernel_mode):
    """torch's state (its step a 0-d float32 tensor), as NumPy arrays, resumes in minidl: the same next steps."""
    rng = np.random.default_rng(5)
    ours, theirs = twin_params(rng)
    ref = torch.optim.Adam(theirs, lr=0.01, amsgrad=True, weight_decay=0.1, foreach=False)
    for _ in range(10):   # torch alone, then minidl takes over its parameters and state
        for q in theirs:
            q.grad = torch.tensor(rng.normal(size=tuple(q.shape)))
        ref.step()
    for p, q in zip(ours, theirs):
        p.data[...] = q.detach().numpy()
    state = ref.state_dict()
    numpy_state = {"state": {i: {k: v.numpy() for k, v in s.items()} for i, s in state["state"].items()},
                   "param_groups": [{k: v for k, v in g.items() if k not in ("foreach", "capturable", "differentiable",
                                                                              "fused")} for g in state["param_groups"]]}
    assert numpy_state["state"][0]["step"].shape == () and numpy_state["state"][0]["step"].dtype == np.float32
    opt = Adam(ours)
    opt.load_state_dict(numpy_state)
    assert type(opt.state[ours[0]]["step"]) is float and opt.state[ours[0]]["step"] == 10.0
    step_twins(opt, ref, ours, theirs, rng, 10)
    assert_twins_match(opt, ref, ours, theirs)


# ---- arguments ---------------------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_signature_and_defaults_are_torchs(cls):
    def described(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]
    assert described(cls) == described(getattr(torch.optim, cls.__name__))
    opt = cls([param([1.0])])
    expected = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2 if cls is AdamW else 0.0,
                    amsgrad=False, maximize=False, decoupled_weight_decay=cls is AdamW)
    assert {k: v for k, v in opt.param_groups[0].items() if k != "params"} == expected
    assert isinstance(opt, Optimizer)


@pytest.mark.parametrize("cls", [Adam, AdamW])
@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=-1e-3), r"lr must be a number >= 0"),
    (dict(eps=-1.0), r"eps must be a number >= 0"),
    (dict(weight_decay=-0.1), r"weight_decay must be a number >= 0"),
    (dict(betas=(1.0, 0.999)), r"betas\[0\] must be a number in \[0, 1\), got 1.0"),
    (dict(betas=(0.9, -0.1)), r"betas\[1\] must be a number in \[0, 1\), got -0.1"),
    (dict(betas=0.9), r"betas must be a pair \(beta1, beta2\), got 0.9"),
    (dict(betas=(0.9, "0.99")), r"betas\[1\] must be a number"),
    (dict(lr="0.1"), r"lr must be a number"),
])
def test_argument_errors_name_the_optimizer(cls, kwargs, match):
    with pytest.raises(ValueError, match=f"{cls.__name__}: {match}"):
        cls([param([1.0])], **kwargs)
    with pytest.raises(ValueError, match=f"{cls.__name__}: {match}"):   # in a group of its own too
        cls([{"params": [param([1.0])]}, {"params": [param([2.0])], **kwargs}])


@pytest.mark.parametrize("cls", [Adam, AdamW])
@pytest.mark.parametrize("switch,value", [("foreach", True), ("fused", True), ("capturable", True),
                                          ("differentiable", True), ("fused", "yes")])
def test_implementation_switches_only_off(cls, switch, value):
    with pytest.raises(ValueError, match=f"{cls.__name__}: minidl has no '{switch}' implementation switch.*"
                                         f"got {value!r}"):
        cls([param([1.0])], **{switch: value})
    for off in (None, False):   # asking for nothing special is fine
        opt = cls([param([1.0])], **{switch: off})
        assert switch not in opt.param_groups[0]
    with pytest.raises(TypeError):   # keyword-only, as in torch
        cls([param([1.0])], 1e-3, (0.9, 0.999), 1e-8, 0.0, False, None)


def test_adamw_is_always_decoupled_and_groups_check_their_settings():
    a, b = param([1.0]), param([2.0])
    with pytest.raises(ValueError, match="AdamW: decoupled_weight_decay is always True"):
        AdamW([{"params": [a], "decoupled_weight_decay": False}])
    with pytest.raises(ValueError, match=r"Adam: parameter group 0 has unknown settings \['momentum'\]"):
        Adam([{"params": [a], "momentum": 0.9}])
    opt = Adam([a], betas=[0.8, 0.9])
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)    # a list becomes torch's tuple
    opt.add_param_group({"params": [b], "amsgrad": True})
    assert opt.param_groups[1]["amsgrad"] and opt.param_groups[1]["betas"] == (0.8, 0.9)
    b.grad = minidl.tensor(np.array([0.5]))
    with pytest.raises(ValueError, match=r"Adam.step: a parameter of shape \(1,\) has a gradient of shape \(2,\)"):
        a.grad = minidl.tensor(np.array([0.5, 0.5]))
        opt.step()


def test_first_step_by_hand_and_grad_untouched(kernel_mode):
    # On step 1 the bias corrections undo the zero start: m_hat = g, v_hat = g^2, so
    # p moves by lr * g / (|g| + eps): lr times the gradient's sign.
    p = param([1.0, -2.0, 3.0])
    g = np.array([0.5, -4.0, 1e-3])
    p.grad = minidl.tensor(g.copy())
    data = p.data
    Adam([p], lr=0.1, eps=0.0).step()
    np.testing.assert_allclose(p.numpy(), [0.9, -1.9, 2.9], rtol=1e-12)
    np.testing.assert_array_equal(p.grad.numpy(), g)
    assert p.data is data


# ---- the fused CPU update ------------------------------------------------------------------

SETTINGS = [dict(amsgrad=True, weight_decay=0.1), dict(maximize=True, weight_decay=0.2, decoupled_weight_decay=True),
            dict(betas=(0.3, 0.9), eps=1e-3), dict(amsgrad=True, maximize=True, weight_decay=0.05)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_fused_cpu_update_equals_the_reference_bit_for_bit(monkeypatch, dtype):
    pytest.importorskip("threadpoolctl")
    monkeypatch.delenv("MINIDL_KERNELS", raising=False)
    monkeypatch.setenv("MINIDL_NUM_THREADS", "2")
    monkeypatch.setattr(cpu_adam, "ADAM_CHUNK_ELEMENTS", 5)    # chunks split rows
    monkeypatch.setattr(threads, "SERIAL_BYTES", -1)           # small as they are, on the workers
    rng = np.random.default_rng(9)
    shapes = [(4, 3), (7,), (2, 2, 2), (3, 5)]
    start = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(6)]
    chosen = []
    original = dispatch.adam_step
    monkeypatch.setattr(dispatch, "adam_step", lambda *a: chosen.append(original(*a)) or chosen[-1])

    def run(mode):
        params = [nn.Parameter(a.copy()) for a in start]
        opt = Adam([{"params": [p], **kw} for p, kw in zip(params, SETTINGS)], lr=0.1)
        with minidl.kernels.use(mode):
            for t, step_grads in enumerate(grads):
                for i, (p, g) in enumerate(zip(params, step_grads)):
                    # the last gradient arrives transposed (strided, as a Winograd conv's does)
                    p.grad = None if (i == 0 and t < 2) else minidl.tensor(np.asfortranarray(g) if i == 3 else g)
                opt.step()
        return [p.numpy() for p in params] + [v for s in opt.state.values() for v in s.values()]

    fast, reference = run("fast"), run("reference")
    assert all(isinstance(c, cpu_adam.FusedAdam) for c in chosen[:6]) and all(c is None for c in chosen[6:])
    for a, b in zip(fast, reference):
        assert type(a) is type(b)
        np.testing.assert_array_equal(a, b)
        assert np.asarray(a).dtype in (dtype, np.float64)


def test_a_strided_parameter_takes_the_reference_and_is_updated_in_place(kernel_mode):
    rng = np.random.default_rng(2)
    start = rng.normal(size=(4, 3))
    plain, strided = param(start), nn.Parameter(np.asfortranarray(start))
    opts = [AdamW([p], lr=0.1, amsgrad=True) for p in (plain, strided)]
    for _ in range(3):
        g = rng.normal(size=(4, 3))
        for p, opt in zip((plain, strided), opts):
            p.grad = minidl.tensor(g)
            opt.step()
    assert dispatch.adam_step([strided.data], [strided.grad.data]) is None
    np.testing.assert_array_equal(strided.numpy(), plain.numpy())
    assert strided.data.flags.f_contiguous
