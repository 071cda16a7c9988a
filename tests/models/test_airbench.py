"""airbench94: shapes, parameter count, the whitening layer's statistics, identity init, frozen weights,
PyTorch's twin (forward and backward in float64), inference rewrite, and a few steps that learn."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
from minidl import nn
from minidl.models import Airbench94, airbench94, whitening_filters
from minidl.models.airbench import BN_EPS, BN_MOMENTUM, identity_init_
from minidl.optim import SGD

TRAINABLE = 1_971_352   # convs 1,967,616 + head 2,560 + whitening bias 24 + batch-norm shifts 1,152
FROZEN = 288 + 1_152    # the whitening weight and the batch norms' fixed scales


def correlated_images(rng, n=64, size=8):
    """Images whose 2x2 patches are strongly correlated (smooth, with channel mixing): a real whitening job."""
    base = rng.standard_normal((n, 3, size + 1, size + 1))
    smooth = (base[:, :, 1:, 1:] + base[:, :, :-1, 1:] + base[:, :, 1:, :-1] + base[:, :, :-1, :-1]) / 2
    mix = np.array([[1.0, 0.5, 0.2], [0.3, 1.0, 0.4], [0.1, 0.6, 1.0]])
    return np.einsum("dc,nchw->ndhw", mix, smooth)


def patch_vectors(images, k=2):
    n, c, h, w = images.shape
    rows = [images[i, :, y:y + k, x:x + k].reshape(-1) for i in range(n) for y in range(h - k + 1)
            for x in range(w - k + 1)]
    return np.array(rows)


def test_output_shape_and_parameter_counts():
    model = airbench94()
    out = model(minidl.tensor(np.zeros((2, 3, 32, 32), np.float32)))
    assert out.shape == (2, 10)
    assert sum(p.size for p in model.parameters() if p.requires_grad) == TRAINABLE
    assert sum(p.size for p in model.parameters() if not p.requires_grad) == FROZEN
    text = model.summary(print_fn=None)
    assert f"Trainable params: {TRAINABLE:,}" in text and "block3.pool (MaxPool2d)     (None, 256, 3, 3)" in text
    assert airbench94(num_classes=7).head.weight.shape == (7, 256)
    keys = list(model.state_dict())
    assert keys[:2] == ["whiten.weight", "whiten.bias"] and keys[-1] == "head.weight"
    assert "block2.norm1.running_var" in keys and "block1.conv1.bias" not in keys


def test_whitening_filters_whiten_the_patches(rng):
    images = correlated_images(rng)
    eps = 1e-3
    filters = whitening_filters(images, 2, eps)
    assert filters.shape == (24, 3, 2, 2) and filters.dtype == np.float64
    np.testing.assert_allclose(filters[12:], -filters[:12])
    patches = patch_vectors(images)
    moment = patches.T @ patches / len(patches)
    eigenvalues = np.linalg.eigvalsh(moment)[::-1]
    outputs = patches @ filters[:12].reshape(12, -1).T       # the positive half's responses
    second = outputs.T @ outputs / len(outputs)
    # uncorrelated, variances lambda / (lambda + eps), largest eigenvalue first
    np.testing.assert_allclose(second, np.diag(eigenvalues / (eigenvalues + eps)), atol=1e-10)
    assert eigenvalues.min() > 10 * eps and np.abs(second - np.eye(12)).max() < 0.1   # approximately identity


def test_whitening_through_the_model_layer(rng):
    images = correlated_images(rng, n=32, size=32).astype(np.float32)
    model = airbench94(images=images)
    with minidl.no_grad():
        y = F.conv2d(minidl.tensor(images), model.whiten.weight).numpy()   # without the bias
    flat = y[:, :12].transpose(1, 0, 2, 3).reshape(12, -1)
    second = flat @ flat.T / flat.shape[1]
    np.testing.assert_allclose(second, np.eye(12), atol=0.02)


def test_whitening_filters_errors():
    with pytest.raises(ValueError, match="whitening_filters: expected float images"):
        whitening_filters(np.zeros((2, 3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="whitening_filters: need at least one image"):
        whitening_filters(np.zeros((2, 3, 1, 1)))
    with pytest.raises(ValueError, match="init_whitening"):
        airbench94().init_whitening(np.ones((2, 1, 8, 8)))


def test_identity_init_passes_the_first_channels_through(rng):
    conv = identity_init_(nn.Conv2d(4, 6, 3, padding=1, bias=False, rng=np.random.default_rng(1)))
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    y = conv(minidl.tensor(x)).numpy()
    np.testing.assert_allclose(y[:, :4], x, rtol=1e-6)
    assert np.abs(conv.weight.data[4:]).max() > 0            # the others keep the default init
    narrow = identity_init_(nn.Conv2d(6, 4, 3, padding=1, bias=False))
    x6 = rng.standard_normal((1, 6, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(narrow(minidl.tensor(x6)).numpy(), x6[:, :4], rtol=1e-6)
    model = airbench94()
    for block in (model.block1, model.block2, model.block3):
        for conv in (block.conv1, block.conv2):
            w = conv.weight.data
            k = min(w.shape[:2])
            assert np.array_equal(w[:k, :, 1, 1][np.arange(k), np.arange(k)], np.ones(k, np.float32))
            assert np.abs(w[:k]).sum() == k
    with pytest.raises(ValueError, match="identity_init_"):
        identity_init_(nn.Conv2d(2, 2, 2))


def test_batch_norm_trains_only_its_shift_and_the_whitening_weight_is_frozen(rng):
    model = airbench94()
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["whiten.weight"] + [f"block{b}.norm{n}.weight" for b in (1, 2, 3) for n in (1, 2)]
    norm = model.block1.norm1
    assert norm.eps == BN_EPS and norm.momentum == BN_MOMENTUM
    x = minidl.tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
    loss = F.cross_entropy(model(x), np.array([0, 1, 2, 3]))
    loss.backward()
    assert model.whiten.weight.grad is None and norm.weight.grad is None
    assert model.whiten.bias.grad is not None and norm.bias.grad is not None
    before = model.whiten.weight.data.copy(), norm.weight.data.copy()
    SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True).step()
    assert np.array_equal(model.whiten.weight.data, before[0]) and np.array_equal(norm.weight.data, before[1])


def test_matches_pytorch_forward_and_backward_in_float64(rng):
    torch = pytest.importorskip("torch")
    from support.torch_airbench import Airbench94 as TorchAirbench
    images = correlated_images(rng, n=8, size=32)
    model = airbench94(images=images, seed=3).to(dtype=np.float64)
    for name, p in model.named_parameters():   # non-trivial shifts, so the biases are really compared
        if name.endswith("bias"):
            p.data[...] = rng.standard_normal(p.shape) * 0.1
    twin = TorchAirbench().double()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()}, strict=False)
    x = rng.standard_normal((6, 3, 32, 32))
    labels = np.array([0, 1, 2, 3, 4, 5])
    out = model(minidl.tensor(x))
    loss = F.cross_entropy(out, labels, label_smoothing=0.2)
    loss.backward()
    tx = torch.from_numpy(x)
    tout = twin(tx)
    tloss = torch.nn.functional.cross_entropy(tout, torch.from_numpy(labels), label_smoothing=0.2)
    tloss.backward()
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-12)
    params = dict(twin.named_parameters())
    for name, p in model.named_parameters():
        if p.requires_grad:
            np.testing.assert_allclose(p.grad.numpy(), params[name].grad.numpy(), rtol=1e-7, atol=1e-12,
                                       err_msg=name)
    state = model.state_dict()   # the running statistics moved alike (momentum 0.4 in PyTorch's convention)
    for name, value in twin.state_dict().items():
        if "running" in name:
            np.testing.assert_allclose(state[name], value.numpy(), rtol=1e-9, err_msg=name)
    # evaluation: the fused copy (conv2 + norm2 folded) agrees with PyTorch's eval mode
    with minidl.no_grad():
        ours = nn.fuse_for_inference(model)(minidl.tensor(x)).numpy()
    np.testing.assert_allclose(ours, twin.eval()(tx).detach().numpy(), rtol=1e-9, atol=1e-12)


def test_a_few_steps_reduce_the_loss(rng):
    images = rng.random((16, 3, 32, 32)).astype(np.float32) - 0.5
    labels = rng.integers(0, 10, 16)
    model = airbench94(images=images)
    optimizer = SGD(model.parameters(), lr=0.2, momentum=0.85, nesterov=True)
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(model(minidl.tensor(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_input_errors():
    with pytest.raises(ValueError, match="airbench94 expects input"):
        airbench94()(minidl.tensor(np.zeros((1, 1, 32, 32), np.float32)))
    with pytest.raises(ValueError, match="airbench94: need 3 positive widths"):
        Airbench94(widths=(64, 256))
