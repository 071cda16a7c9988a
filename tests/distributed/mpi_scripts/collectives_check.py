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

print(f"ok {world.rank}", flush=True)
