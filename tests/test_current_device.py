"""On cuda:1, every array is made on cuda:1: a fake CuPy shows what a second GPU would.

CuPy makes new arrays on the current GPU, whatever device the inputs live on, so
code that forgets ``backend.device_context`` works on GPU 0 and silently spreads a
``--device cuda:1`` run over two GPUs. ``fake_cupy`` records the GPU each array is
made on and every operation that reads an array of another GPU than the current
one; each test runs minidl on a fake "cuda:1" and asserts there was none, once with the
references and once with the GPU's fast paths (their raw kernels emulated with g++).
"""
import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.kernels
import minidl.nn as nn
from minidl import backend
from minidl.autograd import Function
from minidl.optim import SGD

from support import fake_cupy
from support.cuda_emulation import Emulator


@pytest.fixture(scope="session")
def emulated_raw_kernel(tmp_path_factory):
    return Emulator(tmp_path_factory.mktemp("cuda_emulation")).kernel if Emulator.available() else None


@pytest.fixture(params=minidl.kernels.MODES)
def fake(request, monkeypatch, emulated_raw_kernel):
    fake = fake_cupy.install(monkeypatch)
    if request.param == "fast":
        if emulated_raw_kernel is None:
            pytest.skip("g++ is not on PATH: the raw CUDA kernels cannot be emulated")
        monkeypatch.setattr(backend, "raw_kernel", emulated_raw_kernel)
    with minidl.kernels.use(request.param):
        yield fake


def on_gpu1(fake, values, requires_grad=False):
    t = minidl.tensor(np.asarray(values), requires_grad=requires_grad, device="cuda:1")
    assert isinstance(t.data, fake.ndarray) and t.device == "cuda:1"
    return t


def assert_all_on_gpu1(fake, *arrays):
    assert not fake.cross_device, "arrays of another GPU used from the current one:\n" + "\n".join(
        f"{op}: arrays on {devices}, current {current}\n{where}" for op, devices, current, where in fake.cross_device)
    for a in arrays:
        assert a.device.id == 1, f"an array was made on GPU {a.device.id}"


def test_the_fake_records_what_cupy_would_do(fake):
    """The harness must be able to fail: an operation outside the array's GPU is caught."""
    x = on_gpu1(fake, [1.0, 2.0])
    y = x.data + 1                                   # current GPU is 0: a cross-device read
    assert y.device.id == 0 and fake.cross_device[0][1:3] == ([1], 0)
    fake.cross_device.clear()
    with backend.device_context(x.device):
        z = x.data * 2
        view = z.reshape(2, 1)
    assert_all_on_gpu1(fake, z, view)
    assert z.device.id == 1 and view.device.id == 1


class _TwoOutputs(Function):
    # x -> (2x, 3x): backward gets a zero gradient for an output that did not reach the root
    def forward(self, x):
        return x * 2, x * 3

    def backward(self, g2, g3):
        return g2 * 2 + g3 * 3


def test_backward_seed_sums_and_leaf_accumulation_stay_on_the_tensors_gpu(fake):
    w = on_gpu1(fake, [0.5, -1.0, 2.0], requires_grad=True)
    doubled, _unused = _TwoOutputs()(w)
    loss = (doubled * w + w * 3.0).sum()     # w used three times; a Python scalar operand
    loss.backward()                          # seed: ones_like on w's GPU
    first = w.grad.data
    (w * w).sum().backward()                 # accumulates into the existing .grad
    assert_all_on_gpu1(fake, first, w.grad.data)
    np.testing.assert_allclose(backend.to_numpy(w.grad.data), 6 * np.array([0.5, -1.0, 2.0]) + 3)


def test_explicit_upstream_gradient_goes_to_the_tensors_gpu(fake):
    x = on_gpu1(fake, [[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = x * x
    y.backward(np.ones((2, 2)))              # a host gradient, copied to cuda:1
    assert_all_on_gpu1(fake, x.grad.data)


def test_loss_forward_and_backward_on_the_tensors_gpu(fake):
    logits = on_gpu1(fake, np.arange(12.0).reshape(3, 4) / 7, requires_grad=True)
    loss = F.softmax_cross_entropy(logits, np.array([0, 3, 1]))  # host labels
    loss.backward()
    assert_all_on_gpu1(fake, loss.data, logits.grad.data)


def test_out_of_range_labels_poison_the_loss_on_a_gpu_without_a_host_sync(fake, monkeypatch):
    """On a GPU the range is not read back per batch: a bad label makes the loss NaN instead."""
    logits = on_gpu1(fake, np.zeros((2, 3)))
    monkeypatch.setattr(fake.ndarray, "__int__", lambda self: pytest.fail("int() of a GPU array: a host sync"),
                        raising=False)
    loss = F.softmax_cross_entropy(logits, backend.to_device(np.array([1, 3]), "cuda:1"))
    assert np.isnan(float(backend.to_numpy(loss.data)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got values from 1 to 3"):
        F.softmax_cross_entropy(logits, np.array([1, 3]))  # host labels: checked on the host, for free
    good = F.softmax_cross_entropy(logits, backend.to_device(np.array([1, 2]), "cuda:1"))
    np.testing.assert_allclose(float(backend.to_numpy(good.data)), np.log(3.0), rtol=1e-6)
    assert_all_on_gpu1(fake, loss.data, good.data)


def small_model(seed=0):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, rng=np.random.default_rng(seed)), nn.BatchNorm2d(4),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3, rng=np.random.default_rng(seed + 1)))


def test_a_training_step_runs_on_the_models_gpu(fake):
    model = small_model().to("cuda:1")
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, max_grad_norm=1e-3)
    x = on_gpu1(fake, np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32))
    labels = backend.to_device(np.array([0, 2]), "cuda:1")
    for _ in range(2):
        optimizer.zero_grad()
        F.softmax_cross_entropy(model(x), labels).backward()
        # a clipped step decides nothing on the host: no int()/float()/bool() of a GPU array
        with pytest.MonkeyPatch.context() as patch:
            for sync in ("__bool__", "__float__", "__int__"):
                patch.setattr(fake.ndarray, sync, lambda self: pytest.fail("a host sync in SGD.step"), raising=False)
            optimizer.step()
    arrays = [p.data for p in model.parameters()] + [p.grad.data for p in model.parameters()]
    assert_all_on_gpu1(fake, *arrays, *(s["momentum_buffer"] for s in optimizer.state.values()))


def test_resume_copies_land_on_the_parameters_gpu(fake):
    """Module and SGD load_state_dict (what --resume runs) copy host values onto cuda:1."""
    source = small_model(seed=3)
    model = small_model().to("cuda:1")
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "nesterov": False,
             "momentum_buffers": [np.full(p.shape, 0.5, np.float64) for p in model.parameters()]}
    model.load_state_dict(source.state_dict())
    optimizer.load_state_dict(state)   # minidl's earlier one-group layout, as old checkpoints hold it
    buffers = [optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
    arrays = [p.data for p in model.parameters()] + buffers
    assert_all_on_gpu1(fake, *arrays, model[1].running_mean)
    assert all(b.dtype == np.float32 for b in buffers) and optimizer.lr == 0.05
    for (key, want), got in zip(source.state_dict().items(), model.state_dict().values()):
        np.testing.assert_array_equal(got, want, err_msg=key)


def test_batch_norm_statistics_stay_float32_when_products_run_in_tf32(fake, rng):
    """With --tf32, cuBLAS rounds float32 products' inputs to 10 mantissa bits; BN's sums must not use them."""
    fake.tf32 = True
    assert float(fake.matmul(fake.asarray(np.float32([1 + 2 ** -12])), fake.asarray(np.float32([1])))) == 1.0
    x0 = (3.0 + 0.01 * rng.standard_normal((8, 4, 6, 6))).astype(np.float32)
    gy0 = rng.standard_normal(x0.shape).astype(np.float32)
    x = on_gpu1(fake, x0, requires_grad=True)
    gamma = on_gpu1(fake, np.ones(4, np.float32), requires_grad=True)
    y = F.batch_norm(x, gamma, None, None, None, training=True)
    y.backward(gy0)
    x64 = x0.astype(np.float64)
    mean, var = x64.mean(axis=(0, 2, 3), keepdims=True), x64.var(axis=(0, 2, 3), keepdims=True)
    xhat = (x64 - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(backend.to_numpy(y.data), xhat, atol=1e-4)
    np.testing.assert_allclose(backend.to_numpy(gamma.grad.data), (gy0 * xhat).sum(axis=(0, 2, 3)), rtol=2e-3)
    assert_all_on_gpu1(fake, y.data, x.grad.data)


def test_the_convolutions_hand_cupys_batched_matmul_no_view_of_the_column_matrix(fake, rng):
    """CuPy's batched matmul copies each non-contiguous operand: a transposed column matrix is a full copy.

    The GPU kernel's products take the column matrix as it lies (its weight gradient
    is computed transposed, col @ gy^T); only weight-sized operands may be copied.
    """
    if minidl.kernels.mode() == "reference":
        pytest.skip("the references are written for reading; the GPU runs the fast kernels")
    x = on_gpu1(fake, rng.standard_normal((2, 4, 9, 9)).astype(np.float32), requires_grad=True)
    w = on_gpu1(fake, rng.standard_normal((6, 2, 3, 3)).astype(np.float32), requires_grad=True)
    for stride in (1, 2):   # the input gradient by correlation (stride 1) and by col2im
        y = F.conv2d(x, w, stride=stride, padding=1, groups=2)
        y.backward(np.ones(y.shape, np.float32))
    copies = [(shape, nbytes) for shape, nbytes in fake.matmul_copies if nbytes > w.data.nbytes]
    assert copies == [] and fake.matmul_copies, fake.matmul_copies
    assert_all_on_gpu1(fake, x.grad.data, w.grad.data)


def test_tf32_rounds_the_dense_layers_products_and_not_the_convolutions(fake, rng):
    """With CUPY_TF32=1 CuPy runs its 2-D GEMMs in TF32 but its batched matmul in float32 (docs/gpu.md)."""
    if minidl.kernels.mode() == "reference":
        pytest.skip("the fast kernels' products: batched matmul for convolutions")
    x0 = (1 + 2.0 ** -12 * rng.integers(1, 8, (2, 3, 4, 4))).astype(np.float32)   # bits that TF32 drops
    w0 = np.full((2, 3, 1, 1), 1 + 2.0 ** -11, np.float32)
    results = {}
    for tf32 in (False, True):
        fake.tf32 = tf32
        conv = F.conv2d(on_gpu1(fake, x0), on_gpu1(fake, w0))
        dense = F.linear(on_gpu1(fake, x0.reshape(2, 48)), on_gpu1(fake, np.full((2, 48), 1 + 2.0 ** -11, np.float32)))
        results[tf32] = backend.to_numpy(conv.data), backend.to_numpy(dense.data)
    np.testing.assert_array_equal(results[True][0], results[False][0])   # convolutions: float32 either way
    assert not np.array_equal(results[True][1], results[False][1])       # dense layers: rounded to TF32
