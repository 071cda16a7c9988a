"""nll_loss and mse_loss, and the loss modules, against torch: values and gradients, every option."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.nn as nn
from minidl.gradcheck import check_gradients

torch = pytest.importorskip("torch")
TF = torch.nn.functional


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 2, 2), (4,)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_matches_torch(shape, reduction, weighted):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    labels = rng.integers(0, 4, (shape[0],) + shape[2:]) if len(shape) > 1 else np.array(2)
    if labels.ndim:
        labels.reshape(-1)[0] = -100                      # one ignored sample
    weight = rng.random(4) + 0.5 if weighted else None
    mine, theirs = minidl.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    got = F.nll_loss(F.log_softmax(mine, dim=-1 if len(shape) == 1 else 1), labels, weight=weight,
                     reduction=reduction)
    want = TF.nll_loss(torch.log_softmax(theirs, dim=-1 if len(shape) == 1 else 1), torch.tensor(labels),
                       weight=None if weight is None else torch.tensor(weight), reduction=reduction)
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-12, atol=1e-14)
    gy = rng.standard_normal(got.shape)
    got.backward(gy)
    want.backward(torch.tensor(gy))
    np.testing.assert_allclose(mine.grad.numpy(), theirs.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_nll_loss_of_log_softmax_is_cross_entropy_and_passes_the_gradient_check():
    rng = np.random.default_rng(1)
    x = minidl.tensor(rng.standard_normal((5, 3)), requires_grad=True)
    labels = rng.integers(0, 3, 5)
    np.testing.assert_allclose(F.nll_loss(F.log_softmax(x, dim=1), labels).item(),
                               F.cross_entropy(x, labels).item(), rtol=1e-12)
    assert check_gradients(lambda x: F.nll_loss(x, labels, weight=np.array([1.0, 2.0, 0.5])), [x])
    everything_ignored = F.nll_loss(x, np.full(5, -100))
    assert np.isnan(everything_ignored.item())          # PyTorch's 0 / 0
    with pytest.raises(ValueError, match=r"nll_loss: labels must lie in \[0, 3\)"):
        F.nll_loss(x, np.array([0, 1, 2, 3, 0]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_matches_torch_for_both_inputs(reduction):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    x, t = minidl.tensor(a, requires_grad=True), minidl.tensor(b, requires_grad=True)
    tx, tt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    got, want = F.mse_loss(x, t, reduction=reduction), TF.mse_loss(tx, tt, reduction=reduction)
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-12)
    got.sum().backward()
    want.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(t.grad.numpy(), tt.grad.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match=r"mse_loss: input \(3, 4\) and target \(3, 1\) must have the same shape"):
        F.mse_loss(x, np.zeros((3, 1)))


def test_loss_modules_as_torchs():
    rng = np.random.default_rng(3)
    x, labels, w = rng.standard_normal((6, 4)), rng.integers(0, 4, 6), rng.random(4)
    pairs = [(nn.CrossEntropyLoss(weight=w, label_smoothing=0.1),
              torch.nn.CrossEntropyLoss(weight=torch.tensor(w), label_smoothing=0.1), labels),
             (nn.NLLLoss(reduction="sum", ignore_index=2), torch.nn.NLLLoss(reduction="sum", ignore_index=2), labels),
             (nn.MSELoss(), torch.nn.MSELoss(), rng.standard_normal((6, 4)))]
    for mine, theirs, target in pairs:
        got = mine(minidl.tensor(x), target)
        want = theirs(torch.tensor(x), torch.tensor(target))
        np.testing.assert_allclose(got.item(), want.item(), rtol=1e-12)
        assert list(mine.state_dict()) == list(theirs.state_dict())
    log_probs = nn.LogSoftmax(dim=1)(minidl.tensor(x))
    np.testing.assert_allclose(log_probs.numpy(), torch.log_softmax(torch.tensor(x), 1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(nn.Softmax(dim=0)(minidl.tensor(x)).numpy(),
                               torch.softmax(torch.tensor(x), 0).numpy(), rtol=1e-12)
