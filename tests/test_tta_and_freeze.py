"""Test-time augmentation (metrics.tta_logits, evaluate(tta=...), Trainer(tta=...)) and the FreezeAfter callback."""
import numpy as np
import pytest

import minidl
import minidl.functional as F
import minidl.nn as nn
from minidl.callbacks import FreezeAfter
from minidl.data import DataLoader, build_transform
from minidl.metrics import evaluate, tta_logits
from minidl.optim import SGD, LinearWarmupDecayLR
from minidl.train import Trainer


def _model(seed=0):
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, rng=rng), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3, rng=rng))


def _data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 3, 6, 6), dtype=np.uint8), rng.integers(0, 3, size=n)


def test_tta_levels_average_the_views(rng):
    model = _model().eval()
    x = rng.standard_normal((5, 3, 6, 6)).astype(np.float32)

    def net(images):
        return model(minidl.tensor(np.ascontiguousarray(images))).numpy()

    with minidl.no_grad():
        np.testing.assert_allclose(tta_logits(model, minidl.tensor(x), 0).numpy(), net(x))
        mirror = (net(x) + net(x[:, :, :, ::-1])) / 2
        np.testing.assert_allclose(tta_logits(model, minidl.tensor(x), 1).numpy(), mirror, rtol=1e-5, atol=1e-6)
        padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
        views = [padded[:, :, :6, :6], padded[:, :, 2:, 2:]]
        shifted = sum((net(v) + net(v[:, :, :, ::-1])) / 2 for v in views) / 2
        np.testing.assert_allclose(tta_logits(model, minidl.tensor(x), 2).numpy(), (mirror + shifted) / 2,
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="tta_logits: level must be one of"):
        tta_logits(model, minidl.tensor(x), 3)


def test_evaluate_with_tta_scores_the_averaged_logits():
    images, labels = _data()
    model = _model()
    loader = DataLoader(images, labels, 5, shuffle=False, transform=build_transform(6))
    x = minidl.tensor(build_transform(6)(images))
    model.eval()
    with minidl.no_grad():
        logits = tta_logits(model, x, 1)
        loss = F.softmax_cross_entropy(logits, labels).item()
    model.train()
    metrics = evaluate(model, loader, tta=1)
    assert metrics["loss"] == pytest.approx(loss, rel=1e-5)
    assert metrics["acc"] == np.mean(logits.numpy().argmax(1) == labels)
    assert evaluate(model, loader)["loss"] != pytest.approx(loss, rel=1e-5)   # without TTA it differs
    with pytest.raises(ValueError, match="Trainer: tta must be one of"):
        Trainer(model, SGD(model.parameters(), lr=0.1), loader, None, epochs=1, tta=5, progress=False)


def test_freeze_after_stops_a_group_and_the_rest_keeps_training():
    images, labels = _data(16)
    model = _model()
    frozen = model[0].bias
    others = [p for p in model.parameters() if p is not frozen]
    optimizer = SGD([{"params": others}, {"params": [frozen]}], lr=0.1, momentum=0.9, weight_decay=0.01)
    loader = DataLoader(images, labels, 4, seed=1, transform=build_transform(6, augment=True, crop_padding=1))
    schedule = LinearWarmupDecayLR(optimizer, total_steps=12, warmup_steps=2, end_factor=0.1)
    seen = []

    class Watch(FreezeAfter):   # records the bias after each epoch
        def on_epoch_end(self, trainer, row):
            seen.append((frozen.data.copy(), model[4].weight.data.copy()))

    trainer = Trainer(model, optimizer, loader, None, epochs=3, schedule=schedule, progress=False,
                      callbacks=[Watch([frozen], 1)])
    start = frozen.data.copy()
    trainer.fit()
    assert not np.array_equal(seen[0][0], start)                         # trained in the first epoch
    np.testing.assert_array_equal(seen[1][0], seen[0][0])                # then frozen, momentum and decay too
    np.testing.assert_array_equal(seen[2][0], seen[0][0])
    assert not np.array_equal(seen[2][1], seen[1][1])                    # the rest trains on
    assert optimizer.param_groups[1]["lr"] == 0.0 and optimizer.param_groups[0]["lr"] > 0
    with pytest.raises(ValueError, match="FreezeAfter: the parameters to freeze must fill"):
        bad = Trainer(model, SGD(model.parameters(), lr=0.1), loader, None, epochs=1, progress=False,
                      callbacks=[FreezeAfter([frozen], 0)])
        bad.fit()
