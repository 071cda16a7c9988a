"""The Optimizer base and SGD against hand-computed updates and torch.optim.SGD: parameter groups,
PyTorch's state_dict layout, earlier checkpoints, and the fused CPU update against the reference."""
import json

import numpy as np
import pytest

import minidl
import minidl.kernels
import minidl.nn as nn
from minidl.kernels import dispatch
from minidl.kernels.cpu import sgd as cpu_sgd
from minidl.kernels.cpu import threads
from minidl.optim import SGD, Optimizer

try:
    import torch
except ImportError:  # torch is an optional, test-only reference
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed (optional reference)")


def param(values):
    return nn.Parameter(np.array(values, dtype=np.float64))


def set_grad(p, values):
    p.grad = minidl.tensor(np.array(values, dtype=np.float64))


# ---- SGD -----------------------------------------------------------------------------

def test_plain_sgd_and_weight_decay_by_hand(kernel_mode):
    p = param([1.0, -2.0])
    opt = SGD([p], lr=0.1, weight_decay=0.5)
    grad = np.array([0.2, 0.4])
    set_grad(p, grad)
    opt.step()
    np.testing.assert_allclose(p.numpy(), [1.0 - 0.1 * (0.2 + 0.5), -2.0 - 0.1 * (0.4 - 1.0)])
    np.testing.assert_array_equal(p.grad.numpy(), grad)  # the gradient itself is not modified


def test_momentum_and_nesterov_by_hand(kernel_mode):
    g1, g2 = np.array([1.0, 2.0]), np.array([-1.0, 0.5])
    for nesterov in (False, True):
        p = param([0.0, 0.0])
        opt = SGD([p], lr=0.1, momentum=0.9, nesterov=nesterov)
        set_grad(p, g1)
        opt.step()
        buf = g1
        expected = -0.1 * (g1 + 0.9 * buf if nesterov else buf)
        np.testing.assert_allclose(p.numpy(), expected)
        set_grad(p, g2)
        opt.step()
        buf = 0.9 * buf + g2
        expected = expected - 0.1 * (g2 + 0.9 * buf if nesterov else buf)
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("options", [dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=0.1),
                                     dict(weight_decay=0.01, max_grad_norm=0.5)])
def test_step_on_the_workers_matches_one_thread(monkeypatch, options):
    # On the CPU the chunks of every parameter are shared over the worker threads, each
    # with its own scratch: bit for bit the single-threaded result, steps after steps.
    pytest.importorskip("threadpoolctl")
    monkeypatch.delenv("MINIDL_KERNELS", raising=False)
    monkeypatch.setattr(cpu_sgd, "SGD_CHUNK_ELEMENTS", 7)         # many pieces per parameter
    monkeypatch.setattr(threads, "SERIAL_BYTES", -1)              # small as they are, on the workers
    rng = np.random.default_rng(3)
    shapes = [(5, 4), (3,), (40,), (2, 3, 3)]
    start = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(3)]

    def run(workers):
        monkeypatch.setenv("MINIDL_NUM_THREADS", str(workers))
        params = [param(v) for v in start]
        opt = SGD(params, lr=0.1, **options)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                set_grad(p, g)
            opt.step()
        return [p.numpy() for p in params] + [s["momentum_buffer"] for s in opt.state.values()]

    regions = []
    original = threads.parallel_map
    monkeypatch.setattr(threads, "parallel_map", lambda fn, items: regions.append(len(items)) or original(fn, items))
    serial, threaded = run(1), run(2)
    assert regions == [3 + 1 + 6 + 3] * 6    # one region per step (each run), every chunk of 7 in it
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)


def test_skips_params_without_grad_and_zero_grad(kernel_mode):
    a, b = param([1.0]), param([2.0])
    opt = SGD([a, b], lr=1.0, momentum=0.5)
    set_grad(a, [1.0])
    opt.step()
    assert b.numpy()[0] == 2.0 and b not in opt.state and a in opt.state
    opt.zero_grad(set_to_none=False)
    assert a.grad.numpy()[0] == 0.0 and b.grad is None
    opt.zero_grad()
    assert a.grad is None and b.grad is None


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=-1.0), "lr"), (dict(lr=0.1, momentum=-0.1), "momentum"),
    (dict(lr=0.1, weight_decay=-1), "weight_decay"), (dict(lr=0.1, nesterov=True), "nesterov"),
    (dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
])
def test_sgd_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SGD([param([1.0])], **kwargs)
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)


@needs_torch
@pytest.mark.parametrize("momentum,weight_decay,nesterov", [
    (0.0, 0.0, False), (0.9, 0.0, False), (0.9, 5e-4, True), (0.5, 0.1, False), (0.0, 0.01, False)])
def test_sgd_matches_torch(kernel_mode, momentum, weight_decay, nesterov):
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (4,), (2, 2, 3)]
    ours = [param(rng.normal(size=s)) for s in shapes]
    theirs = [torch.tensor(p.numpy(), requires_grad=True) for p in ours]
    opt = SGD(ours, lr=0.05, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    ref = torch.optim.SGD(theirs, lr=0.05, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    for step in range(5):
        for p, t in zip(ours, theirs):
            g = rng.normal(size=p.shape)
            set_grad(p, g)
            t.grad = torch.tensor(g)
        if step == 3:  # a schedule changing lr between steps
            opt.lr = ref.param_groups[0]["lr"] = 0.01
        opt.step()
        ref.step()
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-14)


@needs_torch
@pytest.mark.parametrize("momentum,weight_decay,nesterov", [(0.9, 5e-4, False), (0.0, 0.0, False), (0.9, 0.1, True)])
def test_sgd_gradient_clipping_matches_torch_clip_grad_norm(kernel_mode, momentum, weight_decay, nesterov):
    """max_grad_norm = torch.nn.utils.clip_grad_norm_ before each step; .grad itself stays unclipped."""
    rng = np.random.default_rng(1)
    shapes = [(3, 4), (4,), (2, 2, 3)]
    ours = [param(rng.normal(size=s)) for s in shapes]
    theirs = [torch.tensor(p.numpy(), requires_grad=True) for p in ours]
    opt = SGD(ours, lr=0.05, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, max_grad_norm=2.0)
    ref = torch.optim.SGD(theirs, lr=0.05, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    clipped = 0
    for step in range(6):
        scale = 3.0 if step % 2 else 0.1  # every other step above the limit, the others below it
        for p, t in zip(ours, theirs):
            g = rng.normal(size=p.shape) * scale
            set_grad(p, g)
            t.grad = torch.tensor(g)
        raw = [p.grad.numpy() for p in ours]
        clipped += float(torch.nn.utils.clip_grad_norm_(theirs, 2.0)) > 2.0
        opt.step()
        ref.step()
        for p, g in zip(ours, raw):
            np.testing.assert_array_equal(p.grad.numpy(), g)
    assert clipped == 3
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-14)
    state = opt.state_dict()
    assert state["max_grad_norm"] == 2.0
    fresh = SGD(ours, lr=0.05, momentum=momentum)
    fresh.load_state_dict(state)
    assert fresh.max_grad_norm == 2.0
    with pytest.raises(ValueError, match="max_grad_norm"):
        SGD(ours, lr=0.1, max_grad_norm=0.0)


@pytest.mark.parametrize("nesterov,weight_decay", [(False, 0.0), (True, 0.01)])
def test_sgd_chunked_and_non_contiguous_steps_match_the_rule(monkeypatch, nesterov, weight_decay):
    # The CPU walks flat parameters in chunks (5 elements here, so chunks split rows);
    # a non-contiguous parameter takes one whole pass. Both must follow the rule exactly.
    monkeypatch.setattr(cpu_sgd, "SGD_CHUNK_ELEMENTS", 5)
    rng = np.random.default_rng(3)
    start = rng.normal(size=(4, 3))
    chunked = param(start)
    strided = nn.Parameter(np.asfortranarray(start))     # same values, not C-contiguous
    assert not strided.data.flags.c_contiguous
    opts = [SGD([p], lr=0.1, momentum=0.9, weight_decay=weight_decay, nesterov=nesterov)
            for p in (chunked, strided)]
    expected, buf = start.copy(), None
    for _ in range(3):
        g = rng.normal(size=(4, 3))
        for p, opt in zip((chunked, strided), opts):
            set_grad(p, g)
            opt.step()
        d = g + weight_decay * expected
        buf = d.copy() if buf is None else 0.9 * buf + d
        expected = expected - 0.1 * (d + 0.9 * buf if nesterov else buf)
    for p in (chunked, strided):
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-13, atol=1e-15)
    assert strided.data.flags.f_contiguous  # updated in place, not replaced


def test_sgd_float32_step_keeps_dtype_and_arrays():
    p = nn.Parameter(np.ones((3, 3), np.float32))
    data = p.data
    opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True)
    p.grad = minidl.tensor(np.full((3, 3), 0.5, np.float32))
    opt.step()
    assert p.data is data and p.dtype == np.float32  # updated in place
    np.testing.assert_allclose(p.numpy(), 1.0 - 0.1 * (0.51 + 0.9 * 0.51), rtol=1e-6)


def test_sgd_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(1)
    start = [rng.normal(size=(4, 3)), rng.normal(size=(3,))]
    grads = [[rng.normal(size=s.shape) for s in start] for _ in range(5)]

    def make():
        params = [param(v) for v in start]
        return params, SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)

    def run(params, opt, steps):
        for gs in steps:
            for p, g in zip(params, gs):
                set_grad(p, g)
            opt.step()

    params_a, opt_a = make()
    run(params_a, opt_a, grads)
    params_b, opt_b = make()
    run(params_b, opt_b, grads[:3])
    state = opt_b.state_dict()
    json.dumps(state["param_groups"])  # numbers only
    assert sorted(state["state"]) == [0, 1]
    assert all(type(s["momentum_buffer"]) is np.ndarray for s in state["state"].values())
    params_c = [param(p.numpy()) for p in params_b]
    opt_c = SGD(params_c, lr=1.0)
    opt_c.load_state_dict(state)
    group = opt_c.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0.9, 1e-3)
    run(params_c, opt_c, grads[3:])
    for a, c in zip(params_a, params_c):
        np.testing.assert_allclose(c.numpy(), a.numpy(), rtol=1e-12)
    bad = dict(state, state={0: {"momentum_buffer": np.zeros((2, 2))}})
    with pytest.raises(ValueError, match=r"momentum_buffer of parameter 0 has shape \(2, 2\)"):
        opt_c.load_state_dict(bad)
    with pytest.raises(ValueError, match=r"expected 1 parameter group\(s\), got 2"):
        opt_c.load_state_dict(dict(state, param_groups=state["param_groups"] * 2))


# ---- parameter groups and the Optimizer base -------------------------------------------

@needs_torch
def test_parameter_groups_match_torch_with_dampening_and_maximize(kernel_mode):
    rng = np.random.default_rng(7)
    shapes = [(3, 4), (4,), (2, 3)]
    ours = [param(rng.normal(size=s)) for s in shapes]
    theirs = [torch.tensor(p.numpy(), requires_grad=True) for p in ours]
    opt = SGD([{"params": ours[:2], "lr": 0.2, "dampening": 0.3},
               {"params": ours[2:], "nesterov": True, "weight_decay": 0.05}], lr=0.05, momentum=0.9, maximize=True)
    ref = torch.optim.SGD([{"params": theirs[:2], "lr": 0.2, "dampening": 0.3},
                           {"params": theirs[2:], "nesterov": True, "weight_decay": 0.05}], lr=0.05, momentum=0.9,
                          maximize=True)
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.05]   # a group's own value, else the default
    for _ in range(4):
        for p, t in zip(ours, theirs):
            g = rng.normal(size=p.shape)
            set_grad(p, g)
            t.grad = torch.tensor(g)
        opt.step()
        ref.step()
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-14)
    # the state_dict has torch's layout: the same groups (minus torch's own flags) and state keys
    mine, torchs = opt.state_dict(), ref.state_dict()
    assert sorted(mine["state"]) == sorted(torchs["state"]) and set(mine) == {"state", "param_groups", "max_grad_norm"}
    for g_mine, g_torch in zip(mine["param_groups"], torchs["param_groups"]):
        assert g_mine == {k: g_torch[k] for k in g_mine}
    for i, s in mine["state"].items():
        np.testing.assert_allclose(s["momentum_buffer"], torchs["state"][i]["momentum_buffer"].numpy(), rtol=1e-12)


def test_the_fused_cpu_update_equals_the_reference_bit_for_bit(monkeypatch):
    monkeypatch.delenv("MINIDL_KERNELS", raising=False)
    monkeypatch.setattr(cpu_sgd, "SGD_CHUNK_ELEMENTS", 5)
    rng = np.random.default_rng(9)
    start = [rng.standard_normal(s).astype(np.float32) for s in [(4, 3), (7,), (2, 2, 2)]]
    grads = [[rng.standard_normal(a.shape).astype(np.float32) for a in start] for _ in range(3)]
    settings = [dict(momentum=0.9, dampening=0.2, weight_decay=0.01), dict(momentum=0.8, nesterov=True),
                dict(maximize=True, weight_decay=0.1)]

    def run(mode):
        params = [nn.Parameter(a.copy()) for a in start]
        opt = SGD([{"params": [p], **kw} for p, kw in zip(params, settings)], lr=0.1, max_grad_norm=1.0)
        with minidl.kernels.use(mode):
            for step_grads in grads:
                for p, g in zip(params, step_grads):
                    p.grad = minidl.tensor(g)
                opt.step()
        return [p.numpy() for p in params] + [s["momentum_buffer"] for s in opt.state.values()]

    for fast, reference in zip(run("fast"), run("reference")):
        np.testing.assert_array_equal(fast, reference)


def test_a_strided_gradient_keeps_the_fused_cpu_update(monkeypatch):
    # A Winograd convolution's weight gradient comes channels-last (not C-contiguous); the
    # fused update only reads it, so it still runs, and equals the reference to the bit.
    monkeypatch.delenv("MINIDL_KERNELS", raising=False)
    rng = np.random.default_rng(4)
    start = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    grads = [np.ascontiguousarray(rng.standard_normal((4, 2, 3, 3)).astype(np.float32)).transpose(0, 2, 3, 1)
             for _ in range(3)]
    assert not grads[0].flags.c_contiguous

    def run(mode):
        p = nn.Parameter(start.copy())
        opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
        with minidl.kernels.use(mode):
            for g in grads:
                p.grad = minidl.tensor(g)
                assert isinstance(dispatch.sgd_step([p.data], [p.grad.data]), cpu_sgd.FusedSGD) == (mode == "fast")
                opt.step()
        return p.numpy(), opt.state[p]["momentum_buffer"]

    for fast, reference in zip(run("fast"), run("reference")):
        np.testing.assert_array_equal(fast, reference)
    fortran = nn.Parameter(np.asfortranarray(start))           # a strided parameter: the reference writes it
    assert dispatch.sgd_step([fortran.data], [grads[0]]) is None


def test_group_errors_are_clear():
    a, b = param([1.0]), param([2.0])
    with pytest.raises(ValueError, match=r"SGD: parameter group 0 has unknown settings \['betas'\]"):
        SGD([{"params": [a], "betas": (0.9, 0.99)}], lr=0.1)
    with pytest.raises(ValueError, match="more than one group"):
        SGD([{"params": [a]}, {"params": [a, b]}], lr=0.1)
    with pytest.raises(ValueError, match="'params' entry"):
        SGD([{"lr": 0.1}], lr=0.1)
    with pytest.raises(ValueError, match="SGD: lr must be a number >= 0"):
        SGD([{"params": [a], "lr": -1}], lr=0.1)
    opt = SGD([a], lr=0.1)
    opt.add_param_group({"params": [b], "lr": 0.5})
    assert opt.parameters() == [a, b] and opt.param_groups[1]["momentum"] == 0.0
    assert isinstance(opt, Optimizer)


def test_the_earlier_single_group_state_loads():
    # minidl's SGD state before parameter groups (what older checkpoints hold)
    a, b = param([1.0, 2.0]), param([3.0])
    old = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": True, "max_grad_norm": 5.0,
           "momentum_buffers": [np.array([0.5, -0.5]), None]}
    opt = SGD([a, b], lr=1.0)
    opt.load_state_dict(old)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (0.05, 0.9, 1e-4, True)
    assert opt.max_grad_norm == 5.0 and b not in opt.state
    np.testing.assert_array_equal(opt.state[a]["momentum_buffer"], [0.5, -0.5])
