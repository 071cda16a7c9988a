"""Run under mpiexec: minidl's collectives and gradient reducer against NumPy on every rank.

Each rank builds the arrays of every rank from seeded generators, so it knows the
exact expected result without any communication. Prints "ok <rank>" when all pass.
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import minidl  # noqa: E402
from minidl import distributed as dist  # noqa: E402

world = dist.init()
assert world.size >= 2, "run me under mpiexec -n 2 (or more)"
ranks = range(world.size)


def arrays_of(rank, shape, dtype):
    rng = np.random.default_rng([rank, len(shape), int(np.prod(shape))])
    return (rng.normal(size=shape) * 100).astype(dtype) if dtype != np.int64 else rng.integers(-9, 9, shape)


# all_reduce: sum / max / min, odd sizes, empty, one element, several dtypes
for shape in [(0,), (1,), (7, 3), (1001,), (2, 3, 5)]:
    for dtype in (np.float32, np.float64, np.int64):
        everyone = [arrays_of(r, shape, dtype) for r in ranks]
        for op, reference in (("sum", np.sum), ("max", np.max), ("min", np.min)):
            mine = everyone[world.rank].copy()
            result = dist.all_reduce(mine, op)
            assert result is mine
            expected = reference(np.stack(everyone), axis=0)
            if dtype == np.int64 or op != "sum":
                np.testing.assert_array_equal(mine, expected)
            else:
                np.testing.assert_allclose(mine, expected, rtol=1e-6 if dtype == np.float32 else 1e-13)

# a non-contiguous view is reduced in place through a contiguous copy
base = np.stack([arrays_of(r, (6, 4), np.float64) for r in ranks])
mine = arrays_of(world.rank, (6, 4), np.float64)
dist.all_reduce(mine[:, ::2])
np.testing.assert_allclose(mine[:, ::2], base.sum(axis=0)[:, ::2], rtol=1e-13)
np.testing.assert_array_equal(mine[:, 1::2], arrays_of(world.rank, (6, 4), np.float64)[:, 1::2])

# broadcast from every root
for root in ranks:
    mine = arrays_of(world.rank, (5, 2), np.float32)
    dist.broadcast(mine, root=root)
    np.testing.assert_array_equal(mine, arrays_of(root, (5, 2), np.float32))

# non-blocking all-reduce
mine = arrays_of(world.rank, (333,), np.float64)
request = dist.iall_reduce(mine)
request.wait()
np.testing.assert_allclose(mine, sum(arrays_of(r, (333,), np.float64) for r in ranks), rtol=1e-13)

# the gradient reducer: odd sizes, buckets that are no multiple of anything, an unused
# parameter (contributes zeros; registered first, so its bucket is the last to start),
# overlap on and off
for overlap in (True, False):
    for bucket_bytes in (40, 10**6):
        params = [minidl.tensor(np.ones(size), requires_grad=True) for size in (3, 7, 1, 5)]
        unused = minidl.tensor(np.ones(4), requires_grad=True)
        reducer = dist.GradientReducer([unused] + params, bucket_bytes=bucket_bytes, overlap=overlap)
        for step in range(2):  # the buffers are reused on the second step
            scales = [np.random.default_rng([r, step]).normal(size=4) for r in ranks]
            loss = sum((p * float(scales[world.rank][i])).sum() for i, p in enumerate(params))
            for p in params + [unused]:
                p.grad = None
            loss.backward()
            reducer.wait()
            for i, p in enumerate(params):
                mean = sum(s[i] for s in scales) / world.size
                np.testing.assert_allclose(p.grad.numpy(), np.full(p.shape, mean), rtol=1e-13)
            np.testing.assert_array_equal(unused.grad.numpy(), np.zeros(4))
        if bucket_bytes == 40:
            assert reducer.stats["buckets"] == 5, reducer.stats  # 40 | 8 | 56 | 24 | 32 bytes
            if overlap:
                assert reducer.stats["started_in_backward"] >= 1, reducer.stats
        reducer.remove()

# dense layers split over the processes of the host (DataParallel's shared factors): outputs and
# gradients of the global batch, with uneven slices (rank r has r + 1 rows), a converted layer
# that never runs (its weight gradient is zeros), forward inside DataParallel.batch (split by
# output rows), outside it (each process alone; the inputs then go over in backward), and
# twice within one step, backward through the second (which then runs alone)
import minidl.functional as F  # noqa: E402
import minidl.nn as nn  # noqa: E402
from minidl.distributed import factors  # noqa: E402


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 7, rng=np.random.default_rng(1), dtype=np.float64)
        self.fc2 = nn.Linear(7, 3, rng=np.random.default_rng(2), dtype=np.float64)
        self.spare = nn.Linear(4, 6, rng=np.random.default_rng(3), dtype=np.float64)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


factors.FACTOR_MIN_WEIGHTS = 1
rows = [r + 1 for r in ranks]
total, start = sum(rows), sum(rows[:world.rank])
for mode in ("batch", "alone", "twice"):
    model, reference = Net(), Net()
    parallel = dist.DataParallel(model, world, share_factors=True)
    assert parallel.factors is not None and len(parallel.factors.layers) == 3
    for step in range(2):  # the shared arrays are reused on the second step
        x_all = np.random.default_rng([step, 7]).normal(size=(total, 5))
        c_all = np.random.default_rng([step, 8]).normal(size=(total, 3))
        for p in list(model.parameters()) + list(reference.parameters()):
            p.grad = None
        expected = reference(minidl.tensor(x_all))
        ((expected * minidl.tensor(c_all)).sum() / total).backward()
        mine = slice(start, start + rows[world.rank])
        x, c = minidl.tensor(x_all[mine]), minidl.tensor(c_all[mine])
        if mode == "alone":
            y = model(x)
        else:
            with parallel.batch(start, total):
                y = model(x) if mode == "batch" else (model(x * 2.0), model(x))[1]   # another input first
        np.testing.assert_allclose(y.numpy(), expected.numpy()[mine], rtol=1e-13)
        parallel.backward((y * c).sum() / rows[world.rank], y, rows[world.rank], total)
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            want = np.zeros(p.shape) if q.grad is None else q.grad.numpy()
            np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-12, atol=1e-15, err_msg=name)
    parallel.reducer.remove()

print(f"ok {world.rank}", flush=True)
