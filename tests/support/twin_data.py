"""The tiny CIFAR fixture as minidl's loaders see it, for the tests that hold a PyTorch twin to minidl."""
from __future__ import annotations

import numpy as np

from minidl import Tensor
from minidl.callbacks import Callback


def as_loaded(fixture):
    """The fixture as ``minidl.data.load_cifar10(val_size=0)`` returns it (no validation images)."""
    return type("Data", (), dict(train_images=fixture.train_images, train_labels=fixture.train_labels,
                                 val_images=fixture.train_images[:0], val_labels=fixture.train_labels[:0],
                                 test_images=fixture.test_images, test_labels=fixture.test_labels,
                                 label_names=fixture.label_names))


class Float64Batches:
    """A minidl DataLoader whose batches are cast to float64 (after its float32 normalisation).

    Comparisons run in float64 so that rounding cannot hide a difference between two engines.
    """

    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def batch_rows(self, index):
        return self.loader.batch_rows(index)

    def epoch_batches(self, epoch, start_batch=0):
        for x, y in self.loader.epoch_batches(epoch, start_batch):
            yield Tensor(x.data.astype(np.float64)), y


class StepSnapshots(Callback):
    """Keeps a copy of ``model``'s state_dict after every training step, in ``states``."""

    def __init__(self, model):
        self.model, self.states = model, []

    def on_step_end(self, trainer):
        self.states.append({k: np.array(v) for k, v in self.model.state_dict().items()})
