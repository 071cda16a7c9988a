"""minidl's top-level names in PyTorch's spelling: creating tensors, joining them, saving state."""
import subprocess
import sys

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.optim import Adam

torch = pytest.importorskip("torch")


def test_created_tensors_have_torchs_shapes_values_and_dtypes():
    pairs = [(minidl.zeros(2, 3), torch.zeros(2, 3)), (minidl.ones((4,)), torch.ones(4)),
             (minidl.full((2, 2), 7), torch.full((2, 2), 7)), (minidl.full((2,), 0.5), torch.full((2,), 0.5)),
             (minidl.arange(5), torch.arange(5)), (minidl.arange(1.0, 2.0, 0.25), torch.arange(1.0, 2.0, 0.25)),
             (minidl.linspace(0, 1, 5), torch.linspace(0, 1, 5)), (minidl.eye(3, 2), torch.eye(3, 2)),
             (minidl.zeros(3, dtype=minidl.long), torch.zeros(3, dtype=torch.long))]
    for mine, theirs in pairs:
        assert mine.shape == tuple(theirs.shape) and str(mine.dtype) == str(theirs.dtype).replace("torch.", "")
        np.testing.assert_allclose(mine.numpy(), theirs.numpy())
    like = minidl.zeros_like(minidl.ones(2, 2, dtype=minidl.float64), requires_grad=True)
    assert like.dtype == np.float64 and like.requires_grad and not like.numpy().any()


def test_from_numpy_shares_memory_and_random_tensors_need_a_generator():
    array = np.zeros(3)
    shared = minidl.from_numpy(array)
    array[0] = 5.0
    assert shared.numpy()[0] == 5.0 and shared.dtype == np.float64
    a = minidl.randn(2, 3, generator=np.random.default_rng(0))
    b = minidl.randn(2, 3, generator=np.random.default_rng(0))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert a.dtype == np.float32 and minidl.randint(10, (4,), generator=np.random.default_rng(1)).dtype == np.int64
    with pytest.raises(ValueError, match="randn: needs generator=numpy.random.default_rng"):
        minidl.randn(2)


def test_cat_and_stack_match_torch_with_gradients():
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal((2, 3)) for _ in range(3)]
    for dim in (0, 1, -1):
        mine = [minidl.tensor(a, requires_grad=True) for a in arrays]
        theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
        for join in ("cat", "stack"):
            got, want = getattr(minidl, join)(mine, dim), getattr(torch, join)(theirs, dim)
            np.testing.assert_array_equal(got.numpy(), want.detach().numpy())
            gy = rng.standard_normal(got.shape)
            got.backward(gy)
            want.backward(torch.tensor(gy))
        for m, t in zip(mine, theirs):
            np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy())
    with pytest.raises(ValueError, match="stack: the tensors must share one shape"):
        minidl.stack([minidl.zeros(2), minidl.zeros(3)])


def test_save_and_load_a_model_and_its_optimizer(tmp_path):
    model = nn.Linear(3, 2, rng=np.random.default_rng(3))
    opt = Adam(model.parameters(), lr=0.1)
    model(minidl.ones(1, 3)).sum().backward()
    opt.step()
    minidl.save({"model": model.state_dict(), "optim": opt.state_dict(), "note": "epoch 1"}, tmp_path / "run.pth")
    state = minidl.load(tmp_path / "run.pth")
    fresh = nn.Linear(3, 2, rng=np.random.default_rng(4))
    fresh.load_state_dict(state["model"])
    np.testing.assert_array_equal(fresh.weight.numpy(), model.weight.numpy())
    assert state["note"] == "epoch 1" and state["optim"]["state"][0]["step"] == 1.0
    with pytest.raises(TypeError, match="save: expected a dict"):
        minidl.save(model, tmp_path / "model.pth")


def test_import_minidl_alone_reaches_nn_and_optim():
    code = ("import minidl; import minidl.nn.functional as F; "
            "print(minidl.nn.Linear.__name__, minidl.optim.SGD.__name__, minidl.float32.__name__, "
            "F is minidl.functional)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["Linear", "SGD", "float32", "True"]


def test_torchs_functions_that_are_tensor_methods():
    data = np.array([[1.0, 5.0, 2.0], [7.0, 0.0, 1.0]])
    x, t = minidl.tensor(data), torch.tensor(data)
    values, indices = minidl.max(x, 1)
    torch_values, torch_indices = torch.max(t, 1)
    np.testing.assert_array_equal(values.numpy(), torch_values.numpy())
    np.testing.assert_array_equal(indices.numpy(), torch_indices.numpy())
    for name, args in [("flatten", ()), ("sum", ()), ("mean", ()), ("argmax", (1,)), ("transpose", (0, 1)),
                       ("unsqueeze", (0,)), ("exp", ()), ("sqrt", ()), ("clamp", (1.0, 4.0))]:
        np.testing.assert_allclose(getattr(minidl, name)(x, *args).numpy(), getattr(torch, name)(t, *args).numpy(),
                                   err_msg=name)
    np.testing.assert_allclose(minidl.softmax(x, dim=1).numpy(), torch.softmax(t, dim=1).numpy())
