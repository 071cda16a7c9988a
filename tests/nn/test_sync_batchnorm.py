"""nn.SyncBatchNorm, convert_sync_batchnorm, the batch-slice context and BatchNorm's affine/tracking options.

Processes are played by threads: a group whose all_reduce sums over them in rank
order (what MPI does); the real multi-process runs are in tests/distributed.
"""
import threading

import numpy as np
import pytest

import minidl
import minidl.nn as nn

try:
    import torch
except ImportError:  # torch is an optional, test-only reference
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed (optional reference)")


class _ThreadGroup:
    """A process group of `size` threads; `rank(r)` is what thread r passes as process_group."""

    def __init__(self, size):
        self.barrier, self.slots, self.calls = threading.Barrier(size, timeout=30), [None] * size, 0

    def rank(self, r):
        group = self

        class Member:
            def all_reduce(self, array, op="sum"):
                assert op == "sum"
                group.slots[r] = array.copy()
                group.barrier.wait()
                total = sum(group.slots[1:], group.slots[0].copy())
                group.barrier.wait()
                group.calls += r == 0
                array[...] = total
                return array
        return Member()


def _in_threads(size, work):
    results = [None] * size
    errors = []

    def run(r):
        try:
            results[r] = work(r)
        except Exception as exc:  # surfaced below: a failing thread must fail the test
            errors.append(exc)
            raise

    threads = [threading.Thread(target=run, args=(r,)) for r in range(size)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors, errors
    return results


def _layer(cls, group=None, **kw):
    layer = cls(3, momentum=0.3, **kw) if group is None else cls(3, momentum=0.3, process_group=group, **kw)
    layer.to(dtype=np.float64)
    layer.weight.data[...] = [0.5, 1.5, -2.0]
    layer.bias.data[...] = [0.1, -0.2, 0.3]
    return layer


def test_sync_batch_norm_over_uneven_slices_and_an_empty_one_is_batch_norm_of_the_whole_batch(kernel_mode):
    rng = np.random.default_rng(0)
    x, gy = rng.normal(1.0, 2.0, (5, 3, 4, 4)), rng.normal(size=(5, 3, 4, 4))
    whole = _layer(nn.BatchNorm2d)
    xt = minidl.tensor(x, requires_grad=True)
    y = whole(xt)
    y.backward(minidl.tensor(gy))
    rows = [slice(0, 3), slice(3, 5), slice(5, 5)]   # rank 2 holds no rows
    group = _ThreadGroup(3)

    def step(r):
        layer = _layer(nn.SyncBatchNorm, group.rank(r))
        part = minidl.tensor(x[rows[r]], requires_grad=True)
        out = layer(part)
        # each process's loss is scaled by processes * rows / total; the reducer then averages
        out.backward(minidl.tensor(gy[rows[r]]))
        return out.numpy(), part.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy(), \
            layer.running_mean, layer.running_var

    parts = _in_threads(3, step)
    assert group.calls == 3  # forward: the sums, then the centred squares; backward: both gradient sums at once
    np.testing.assert_allclose(np.concatenate([p[0] for p in parts]), y.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([p[1] for p in parts]), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sum(p[2] for p in parts), whole.weight.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(sum(p[3] for p in parts), whole.bias.grad.numpy(), rtol=1e-12)
    for p in parts:  # every process holds the global batch's running statistics
        np.testing.assert_allclose(p[4], whole.running_mean, rtol=1e-12)
        np.testing.assert_allclose(p[5], whole.running_var, rtol=1e-12)


class _Refusing:
    def all_reduce(self, array, op="sum"):
        raise AssertionError("no collective expected here")


def test_without_a_group_or_in_eval_mode_sync_batch_norm_is_batch_norm(kernel_mode):
    rng = np.random.default_rng(1)
    x = minidl.tensor(rng.normal(size=(4, 3, 2, 2)))
    plain, alone = _layer(nn.BatchNorm2d), _layer(nn.SyncBatchNorm)
    np.testing.assert_array_equal(alone(x).numpy(), plain(x).numpy())
    np.testing.assert_array_equal(alone.running_var, plain.running_var)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(alone, _Refusing()).eval()
    np.testing.assert_array_equal(synced(x).numpy(), plain.eval()(x).numpy())


def test_sync_batch_norm_takes_2d_3d_and_4d_inputs_and_checks_its_arguments():
    for shape in ((4, 3), (4, 3, 5), (4, 3, 2, 2)):
        assert nn.SyncBatchNorm(3)(minidl.tensor(np.ones(shape, np.float32) * np.arange(4).reshape(
            (4,) + (1,) * (len(shape) - 1)))).shape == shape
    with pytest.raises(ValueError, match=r"SyncBatchNorm: expected input \(N, C\) or \(N, C, L\) or"):
        nn.SyncBatchNorm(3)(minidl.tensor(np.ones((4, 2), np.float32)))
    with pytest.raises(ValueError, match="process_group must have an all_reduce"):
        nn.SyncBatchNorm(3, process_group=object())
    assert list(nn.SyncBatchNorm(3).state_dict()) == list(nn.BatchNorm2d(3).state_dict()) == \
        ["weight", "bias", "running_mean", "running_var"]


def _net():
    rng = np.random.default_rng(2)
    inner = nn.Sequential(nn.Linear(4, 6, rng=rng), nn.BatchNorm1d(6, eps=1e-3, momentum=0.01))
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, rng=rng), nn.BatchNorm2d(4, affine=False), nn.ReLU(),
                         nn.Flatten(), nn.Linear(64, 4, rng=rng), inner)


def test_convert_sync_batchnorm_keeps_parameters_buffers_order_flags_and_device():
    model = _net().to(dtype=np.float64)
    model[5].eval()
    params, buffers = list(model.parameters()), list(model.buffers())
    keys = list(model.state_dict())
    group = _Refusing()
    assert nn.SyncBatchNorm.convert_sync_batchnorm(model, group) is model
    converted = [m for m in model.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert [type(m).__name__ for m in model.modules()].count("SyncBatchNorm") == 2 == len(converted)
    assert all(m.process_group is group for m in converted)
    assert [p is q for p, q in zip(model.parameters(), params)] == [True] * len(params)
    assert [a is b for a, b in zip(model.buffers(), buffers)] == [True] * len(buffers)
    assert list(model.state_dict()) == keys
    bn1, bn2 = model[1], model[5][1]
    assert (bn1.affine, bn1.weight, bn1.training) == (False, None, True)
    assert (bn2.eps, bn2.momentum, bn2.training, bn2.running_mean.dtype) == (1e-3, 0.01, False, np.float64)
    # a batch-norm layer itself comes back as a new SyncBatchNorm; a SyncBatchNorm gets the new group
    single = nn.BatchNorm2d(3)
    assert isinstance(nn.SyncBatchNorm.convert_sync_batchnorm(single), nn.SyncBatchNorm)
    again = nn.SyncBatchNorm.convert_sync_batchnorm(bn2, None)
    assert again is not bn2 and again.process_group is None and again.weight is bn2.weight


def test_replacing_a_child_keeps_its_place():
    model = _net()
    names = [name for name, _ in model.named_parameters()]
    setattr(model, "1", nn.BatchNorm2d(4))   # Sequential's children are attributes "0", "1", ...
    assert [name for name, _ in model.named_parameters()] == names[:2] + ["1.weight", "1.bias"] + names[2:]


@needs_torch
@pytest.mark.parametrize("affine, track", [(False, True), (True, False), (False, False)])
def test_affine_and_track_running_stats_match_torch(affine, track):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 3, 4, 4))
    ours = nn.BatchNorm2d(3, affine=affine, track_running_stats=track).to(dtype=np.float64)
    theirs = torch.nn.BatchNorm2d(3, affine=affine, track_running_stats=track).double()
    assert list(ours.state_dict()) == [k for k in theirs.state_dict() if k != "num_batches_tracked"]
    for mode in ("train", "eval"):
        getattr(ours, mode)(), getattr(theirs, mode)()
        xt = minidl.tensor(x, requires_grad=True)
        tx = torch.tensor(x, requires_grad=True)
        y, ty = ours(xt), theirs(tx)
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        y.backward(minidl.tensor(np.cos(x)))
        ty.backward(torch.tensor(np.cos(x)))
        np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-12)
        for name, buffer in ours.named_buffers():
            np.testing.assert_allclose(buffer, getattr(theirs, name).numpy(), rtol=1e-12)


# ---- the batch-slice context --------------------------------------------------------

def test_dropout_inside_batch_slices_applies_the_global_batch_mask():
    x = minidl.tensor(np.ones((5, 4)))
    whole = nn.Dropout(0.5, rng=np.random.default_rng(7))(x).numpy()
    parts = []
    for start, stop in ((0, 3), (3, 5), (5, 5)):
        layer = nn.Dropout(0.5, rng=np.random.default_rng(7))
        with nn.batch_slice(start, 5):
            assert nn.current_batch_slice() == (start, 5)
            parts.append(layer(minidl.tensor(np.ones((stop - start, 4)))).numpy())
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert nn.current_batch_slice() is None


def test_batch_slices_nest_and_check_their_arguments():
    with nn.batch_slice(2, 8):
        with nn.batch_slice(0, 4):
            assert nn.current_batch_slice() == (0, 4)
        assert nn.current_batch_slice() == (2, 8)
    for start, total in ((5, 4), (-1, 4), (0, 0)):
        with pytest.raises(ValueError, match="batch_slice: expected 0 <= start <= total"):
            with nn.batch_slice(start, total):
                pass
    with nn.batch_slice(3, 4), pytest.raises(ValueError, match="does not hold the 2 rows"):
        nn.Dropout(0.5)(minidl.tensor(np.ones((2, 3))))
