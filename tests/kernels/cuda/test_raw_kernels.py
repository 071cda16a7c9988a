"""The hand-written CUDA kernels (minidl/kernels/cuda/) against the references they twin.

Three layers, from the real thing to what any machine can run:
  * GPU: each raw kernel against the xp reference on CuPy arrays, directly and through
    the public functions, with the fast kernels on and with MINIDL_KERNELS=reference
    (skipped without CUDA; test_raw_kernels_gpu.py);
  * nvcc: every kernel source, every element/index type, compiles to PTX for sm_90,
    and the PTX holds no atomics, shared memory or barriers (skipped without nvcc);
  * CPU emulation: the same sources compiled with g++ (tests/support/cuda_emulation.py)
    run on NumPy arrays through minidl's real launch wrappers and public functions, on
    a small grid that really strides, against the references (skipped without g++).
The kernels add in the references' order without fused multiply-adds, so emulated
results must match exactly, sums included.
"""
import contextlib
import importlib.util
import re
import shutil
import subprocess

import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.kernels
from minidl import backend
from minidl.data import transforms
from minidl.functional import conv as reference_conv
from minidl.functional.pooling import MaxPool2d
from minidl.kernels import dispatch
from minidl.kernels.cuda import channel_passes as cuda_channel_passes
from minidl.kernels.cuda import launches
from minidl.kernels.cuda import sources as cuda_sources
from minidl.kernels.cuda.pooling import RawMaxPool2d

from support.cuda_cases import FLOATS, POOL_CASES, WINDOW_CASES, case_id, out_hw, tied_input
from support.cuda_emulation import GUARD, Emulator

# ---------------------------------------------------------------------------
# Everywhere: sources, the backend factory
# ---------------------------------------------------------------------------

def test_cuda_source_types_and_errors():
    src = cuda_sources.cuda_source("minidl_max_pool2d_forward", np.float64, np.int16)
    assert src.startswith("typedef double real_t;\ntypedef short index_t;\n")
    assert cuda_sources.cuda_source("minidl_im2col", "float32") is cuda_sources.cuda_source("minidl_im2col", "float32")
    with pytest.raises(ValueError, match="unknown kernel"):
        cuda_sources.cuda_source("minidl_nope", np.float32)
    with pytest.raises(ValueError, match="float32 or float64"):
        cuda_sources.cuda_source("minidl_im2col", np.float16)
    with pytest.raises(ValueError, match="index dtype"):
        cuda_sources.cuda_source("minidl_max_pool2d_backward", np.float32)


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_raw_kernel_without_cupy_is_a_device_error():
    with pytest.raises(backend.DeviceError, match="CuPy"):
        backend.raw_kernel(cuda_sources.cuda_source("minidl_im2col", np.float32), "minidl_im2col")


@pytest.mark.parametrize("name", sorted(cuda_sources.KERNELS))
def test_every_kernel_uses_the_grid_stride_loop(name):
    # The emulation runs threads one after another, so a loop that strides by the
    # block only (every block redoing the work) would still pass there: check the text.
    body = cuda_sources.KERNELS[name].body
    assert "const long long step = (long long)blockDim.x * gridDim.x;" in body
    assert "for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step)" in body
    assert body.count("for (long long i") == 1


# ---------------------------------------------------------------------------
# nvcc: the sources compile for a real GPU
# ---------------------------------------------------------------------------

def _all_variants():
    """(kernel name, source) for every kernel and every element (and argmax) type."""
    for name, kernel in cuda_sources.KERNELS.items():
        for real in cuda_sources.REAL_TYPES:
            for index in (cuda_sources.INDEX_TYPES if kernel.uses_index else [None]):
                yield name, cuda_sources.cuda_source(name, real, index)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_every_kernel_compiles_with_nvcc(tmp_path):
    # One translation unit (nvcc's start-up dominates): each variant, unchanged, in a
    # namespace of its own, its extern "C" name made unique by a macro.
    parts, entries = [], []
    for i, (name, source) in enumerate(_all_variants()):
        unique = f"{name}__v{i}"
        parts.append(f"namespace v{i} {{\n#define {name} {unique}\n{source}#undef {name}\n}}\n")
        entries.append(unique)
    cu = tmp_path / "kernels.cu"
    cu.write_text("".join(parts))
    options = list(cuda_sources.KERNEL_OPTIONS)
    done = subprocess.run(["nvcc", "--ptx", "-arch=sm_90", "-Werror", "all-warnings", *options,
                           "-o", str(tmp_path / "kernels.ptx"), str(cu)], capture_output=True, text=True)
    assert done.returncode == 0, f"nvcc failed on {cu}:\n{done.stderr}"
    ptx = (tmp_path / "kernels.ptx").read_text()
    missing = [e for e in entries if not re.search(rf"\.entry\s+{e}\s*\(", ptx)]
    assert not missing, f"no PTX entry for {missing}"
    # The design rules: gathers only (no atomics), no shared memory, no barriers.
    used = sorted(set(re.findall(r"\b(?:atom|red|bar|barrier)\.\w+|\.shared\b", ptx)))
    assert not used, f"PTX uses {used}"


# ---------------------------------------------------------------------------
# CPU emulation: the same sources, compiled with g++, on NumPy arrays
# ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    if not Emulator.available():
        pytest.skip("g++ is not on PATH")
    return Emulator(tmp_path_factory.mktemp("cuda_emulation"))


# (threads per block, most blocks): 15 threads that each stride over many elements,
# one thread doing everything, and a grid with more threads than elements.
LAUNCHES = [(5, 3), (1, 1), (64, 65535)]


@pytest.fixture
def emulate(emulator, monkeypatch):
    """``with emulate(block, max_blocks):`` NumPy arrays take the GPU's paths, their raw kernels emulated."""
    @contextlib.contextmanager
    def on(block=5, max_blocks=3):
        with monkeypatch.context() as patch:
            patch.setattr(backend, "raw_kernel", emulator.kernel)
            patch.setattr(dispatch, "device_type", lambda array: "cuda")
            patch.setattr(launches, "_BLOCK", block)
            patch.setattr(launches, "_MAX_BLOCKS", max_blocks)
            emulator.launches.clear()
            yield emulator
    return on


def launched(emulator) -> set:
    return {name for name, _, _ in emulator.launches}


def test_emulator_catches_bad_kernels(emulator):
    """The harness must be able to fail: a write past the end, a skipped output, a wrong scalar type."""
    source = """typedef float real_t;
extern "C" __global__ void bad(const real_t* __restrict__ x, real_t* __restrict__ y, const long long n,
                               const long long extra) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
        if (i != 3) y[i] = x[i];
        if (i == 0) y[n - 1 + extra] = 0;
    }
}
"""
    kernel = emulator.kernel(source, "bad")
    x, y = np.arange(8, dtype=np.float32), np.zeros(8, np.float32)
    kernel((3,), (5,), (x, y, np.int64(8), np.int64(0)))
    assert np.isnan(y[3]) and np.array_equal(np.delete(y, 3)[:-1], np.delete(x, 3)[:-1])
    with pytest.raises(AssertionError, match="wrote outside argument y"):
        kernel((3,), (5,), (x, y, np.int64(8), np.int64(GUARD // 2)))
    with pytest.raises(TypeError, match="NumPy int64 scalar"):
        kernel((3,), (5,), (x, y, 8, np.int64(0)))
    with pytest.raises(TypeError, match="float32 array"):
        kernel((3,), (5,), (x.astype(np.float64), y, np.int64(8), np.int64(0)))


@pytest.mark.parametrize("launch", LAUNCHES, ids=str)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", WINDOW_CASES, ids=case_id)
def test_im2col_col2im_emulated(emulate, rng, case, dtype, launch):
    shape, kernel, stride, pads = case
    x = rng.standard_normal(shape).astype(dtype)
    col_ref = reference_conv.im2col(x, kernel, stride, pads)
    gcol = rng.standard_normal(col_ref.shape).astype(dtype)
    gx_ref = reference_conv.col2im(gcol, shape, stride, pads)
    with emulate(*launch) as emulator:
        col = launches.im2col(x, kernel, stride, pads, out_hw(case))
        gx = launches.col2im(gcol, shape, stride, pads)
        assert launched(emulator) == {"minidl_im2col", "minidl_col2im"}
    assert col.dtype == dtype and gx.dtype == dtype
    np.testing.assert_array_equal(col, col_ref)
    np.testing.assert_array_equal(gx, gx_ref)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
@pytest.mark.parametrize("values", ["tied", "distinct", "nan_and_inf"])
def test_max_pool_emulated(emulate, rng, case, dtype, values):
    shape, kernel, stride, pads = case
    if values == "tied":
        x = tied_input(rng, shape, dtype)
    else:
        x = rng.permutation(np.arange(np.prod(shape), dtype=dtype)).reshape(shape)
        if values == "nan_and_inf":  # -inf everywhere but a few cells: windows tie with the padding
            x = np.full(shape, -np.inf, dtype=dtype)
            x.reshape(-1)[rng.choice(x.size, size=max(1, x.size // 4), replace=False)] = 1.0
            x.reshape(-1)[rng.choice(x.size, size=max(1, x.size // 8), replace=False)] = np.nan
    ref = MaxPool2d(kernel, stride, pads)
    y_ref = ref.forward(x)
    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    gx_ref = ref.backward(gy)
    with emulate() as emulator:
        raw = RawMaxPool2d(kernel, stride, pads)
        y = raw.forward(x)
        (gx,) = raw.backward(gy, (True,))
        assert launched(emulator) == {"minidl_max_pool2d_forward", "minidl_max_pool2d_backward"}
    assert raw.argmax.itemsize <= 2 and y.dtype == dtype and gx.dtype == dtype   # 1 or 2 bytes per output
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(raw.argmax, ref.argmax)
    np.testing.assert_array_equal(gx, gx_ref)


@pytest.mark.parametrize("dtype", FLOATS)
def test_public_conv2d_and_max_pool_emulated(emulate, rng, dtype):
    """conv2d (groups, TF "same" padding, stride 4) and max_pool2d, forward and backward: the references' bits."""
    def run():
        x = minidl.tensor(rng_x, requires_grad=True)
        w = minidl.tensor(rng_w, requires_grad=True)
        b = minidl.tensor(rng_b, requires_grad=True)
        y = F.max_pool2d(F.conv2d(x, w, b, stride=4, padding="same", groups=2), 3, stride=2)
        (y * minidl.tensor(gy)).sum().backward()
        return y.data, x.grad.data, w.grad.data, b.grad.data

    rng_x = rng.standard_normal((2, 4, 27, 25)).astype(dtype)
    rng_w = rng.standard_normal((6, 2, 5, 5)).astype(dtype)
    rng_b = rng.standard_normal(6).astype(dtype)
    gy = rng.standard_normal((2, 6, 3, 3)).astype(dtype)
    with minidl.kernels.use("reference"):
        expected = run()
    with emulate() as emulator:
        got = run()
        assert launched(emulator) == {"minidl_im2col", "minidl_col2im", "minidl_max_pool2d_forward",
                                      "minidl_max_pool2d_backward"}
    for a, b in zip(got, expected):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("relu", [False, True])
def test_conv2d_with_its_residual_emulated(emulate, rng, relu):
    """Inference's conv + residual (+ ReLU) through the raw im2col path: the composed ops' bits."""
    from minidl.functional import fused
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 4, 9, 7), (6, 4, 3, 3), (6,)))
    residual = rng.standard_normal((2, 6, 5, 4)).astype(np.float32)
    args = (minidl.tensor(x), minidl.tensor(w), minidl.tensor(b), 2, 1)
    with minidl.no_grad(), emulate() as emulator:
        got = fused.conv2d_inference(*args, relu=relu, residual=minidl.tensor(residual))
        assert launched(emulator) == {"minidl_im2col"}
        y = F.conv2d(*args) + minidl.tensor(residual)
        want = F.relu(y) if relu else y
    np.testing.assert_array_equal(got.data, want.data)


@pytest.mark.parametrize("launch", LAUNCHES[:2], ids=str)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(6, 5), (1, 7), (4, 1), (3, 0)])
def test_centered_affine_emulated(emulate, rng, shape, dtype, launch):
    """Both batch-norm kernels against their xp twin, step by step, with and without a shift."""
    rows, other = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    center, scale, shift, other_scale = (rng.standard_normal((shape[0], 1)).astype(dtype) for _ in range(4))
    expected = [(rows - center) * scale + shift, (rows - center) * scale,
                (other + ((rows - center) * scale + shift)) * other_scale]
    calls = [(center, scale, shift), (center, scale), (center, scale, shift, other, other_scale)]
    with emulate(*launch) as emulator:
        got = [launches.centered_affine(rows, *args) for args in calls]
        if rows.size:
            assert launched(emulator) == {"minidl_centered_affine", "minidl_centered_affine_add"}
    for g, e in zip(got, expected):
        assert g.dtype == dtype and g.shape == shape
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("with_other", [False, True])
def test_channel_passes_affine_emulated_equals_its_xp_twin(emulate, rng, dtype, with_other):
    x = rng.standard_normal((3, 4, 5, 2)).astype(dtype)
    mean, scale, shift, other_scale = (rng.standard_normal(4).astype(dtype) for _ in range(4))
    other = rng.standard_normal(x.shape).astype(dtype) if with_other else None
    args = (x, mean, scale, shift, other, other_scale if with_other else None)
    expected = cuda_channel_passes.centered_affine_xp(*args)
    with emulate() as emulator:
        got = cuda_channel_passes.channel_centered_affine(*args)
        assert launched(emulator)
        emulator.launches.clear()   # values of another dtype: the xp twin, which rounds differently
        cuda_channel_passes.channel_centered_affine(x, mean.astype(np.float16), scale)
        assert not emulator.launches
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("training", [True, False])
def test_public_batch_norm_emulated(emulate, rng, dtype, training):
    """batch_norm forward and backward through the raw kernels against the reference.

    A channel mean of 1e4 next to a spread of 1: the centred kernels lose nothing there,
    where x * scale + (shift - mean * scale) would keep about one significant digit.
    """
    x0 = (rng.standard_normal((3, 4, 5, 6)) + 1e4 * (np.arange(4) == 2)[:, None, None]).astype(dtype)
    gamma0, beta0 = rng.standard_normal(4).astype(dtype), rng.standard_normal(4).astype(dtype)
    gy = rng.standard_normal(x0.shape).astype(dtype)

    def run():
        x, gamma, beta = (minidl.tensor(a, requires_grad=True) for a in (x0, gamma0, beta0))
        running = (x0.mean(axis=(0, 2, 3)), x0.var(axis=(0, 2, 3)) + 0.5)
        y = F.batch_norm(x, gamma, beta, *running, training=training)
        y.backward(gy)
        return y.data, x.grad.data, gamma.grad.data, beta.grad.data

    with minidl.kernels.use("reference"):
        expected = run()
    with emulate() as emulator:
        got = run()
        assert "minidl_centered_affine" in launched(emulator)
        assert ("minidl_centered_affine_add" in launched(emulator)) == training
    tol = 2e-3 if dtype == np.float32 else 1e-9
    for g, e in zip(got, expected):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol * np.abs(e).max())
    y64 = (x0.astype(np.float64) - x0.mean(axis=(0, 2, 3), dtype=np.float64)[:, None, None]) / np.sqrt(
        x0.var(axis=(0, 2, 3), dtype=np.float64)[:, None, None] + 1e-5) * gamma0[:, None, None] + beta0[:, None, None]
    if training:  # the large channel normalised as precisely as the others
        np.testing.assert_allclose(got[0], y64, atol=2e-3 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("dtype", FLOATS)
def test_batch_norm_relu_emulated_equals_the_two_ops(emulate, rng, dtype):
    """Training's batch norm + ReLU on the GPU path: the composed ops' numbers exactly.

    The mask comes from the same raw kernel that made the forward's output, so zeros
    (a constant channel with beta = 0: y = 0 at the ReLU's kink) fall alike.
    """
    from minidl.functional.fused import batch_norm_relu
    x0 = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
    x0[:, 1] = 0.5
    gamma0, beta0 = rng.standard_normal(4).astype(dtype), rng.standard_normal(4).astype(dtype)
    beta0[1] = 0
    gy = rng.standard_normal(x0.shape).astype(dtype)

    def run(fn):
        x, gamma, beta = (minidl.tensor(a, requires_grad=True) for a in (x0, gamma0, beta0))
        running = [np.zeros(4, dtype), np.ones(4, dtype)]
        y = fn(x, gamma, beta, *running, training=True)
        labels.append(getattr(y.creator, "label", None))
        y.backward(gy)
        return [y.data, x.grad.data, gamma.grad.data, beta.grad.data] + running

    labels = []
    with emulate() as emulator:
        got = run(batch_norm_relu)
        assert labels == ["BatchNormReLU [fused passes]"]
        assert "minidl_centered_affine" in launched(emulator) and "minidl_centered_affine_add" in launched(emulator)
        want = run(lambda *a, **k: F.relu(F.batch_norm(*a, **k)))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert (got[0][:, 1] == 0).all() and (got[1][:, 1] == 0).all()


@pytest.mark.parametrize("dtype", FLOATS + [np.uint8])
@pytest.mark.parametrize("shape, size", [
    ((2, 3, 5, 7), (9, 4)),      # up along H, down along W
    ((1, 2, 5, 7), (5, 11)),     # H unchanged: identity taps on that axis
    ((1, 1, 1, 1), (3, 2)),      # a single pixel
    ((2, 3, 32, 32), 224),       # the tutorial's 32 -> 224
])
def test_resize_bilinear_emulated(emulate, rng, shape, size, dtype):
    if dtype == np.uint8:
        x = rng.integers(0, 256, size=shape).astype(np.uint8)
    else:
        x = rng.standard_normal(shape).astype(dtype)
    expected = transforms.resize_bilinear(x, size)
    with emulate() as emulator:
        got = transforms.resize_bilinear(x, size)
        assert launched(emulator) == {"minidl_resize_bilinear"}
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
