"""Callbacks: what a training run does besides training (progress, checkpoints, history, plots).

The ``Trainer`` (``minidl.train``) runs the steps and keeps the run's state; at
fixed points it calls every callback in its list, in order, with itself:

    on_fit_start(trainer)        fit() begins (also a fit() with nothing left to train)
    on_epoch_start(trainer)      before the epoch's first step (or the resumed step)
    on_step_end(trainer)         after each optimizer step
    on_steps_end(trainer)        after the epoch's last step, before validation; also when
                                 the steps stop on an exception (close what you opened)
    on_epoch_end(trainer, row)   after validation; ``row`` is the epoch's history row
    on_fit_end(trainer)          fit() finished every epoch

A callback reads what it needs from the trainer: ``trainer.state`` (epoch, step,
global_step, the epoch's running sums, history, best_val_acc, best_epoch; at
``on_epoch_end`` it already points at the next epoch), ``trainer.model``,
``trainer.is_main`` and ``trainer.writes`` (under data parallelism every process
runs the callbacks; only the main process should print, and only it writes files),
and ``trainer.path(name)`` (a file in the run's ``out_dir``).

    class PrintLR(Callback):
        def on_epoch_end(self, trainer, row):
            if trainer.is_main:
                print("lr", row["lr"])

The ones here are what ``Trainer``'s flags switch on (``progress``, ``out_dir``,
``checkpoint_every``, ``plots``), plus ``FilterPlot`` (conv1's filters, which the
AlexNet command line adds) and ``FreezeAfter`` (airbench94's whitening bias).
Callbacks carry no state into checkpoints: a resumed run rebuilds them.
"""
from __future__ import annotations

import csv
import io

from ._progress import Progress, clock
from .checkpoint import atomic_write
from .plots import plot_curves, plot_filters

HISTORY_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "seconds",
                  "images_per_s"]


class Callback:
    """The base: every hook does nothing. Subclasses override the hooks they need (module doc)."""

    def on_fit_start(self, trainer) -> None:
        pass

    def on_epoch_start(self, trainer) -> None:
        pass

    def on_step_end(self, trainer) -> None:
        pass

    def on_steps_end(self, trainer) -> None:
        pass

    def on_epoch_end(self, trainer, row: dict) -> None:
        pass

    def on_fit_end(self, trainer) -> None:
        pass


class ProgressLog(Callback):
    """A progress bar per epoch (tqdm, or a plain line every ~10% without it) and a line per epoch.

    Args:
        bar: show the per-epoch bar.
        log: where the epoch lines go (default: print). Only the main process prints.
    """

    def __init__(self, bar: bool = True, log=print):
        self.bar, self.log, self._progress = bar, log, None

    def on_epoch_start(self, trainer):
        state = trainer.state
        self._progress = Progress(len(trainer.train_loader), state["step"], f"epoch {state['epoch'] + 1}/"
                                  f"{trainer.epochs}", self.bar and trainer.is_main)

    def on_step_end(self, trainer):
        running = trainer.state["running"]
        seen = max(running["seen"], 1)
        self._progress.update(running["loss_sum"] / seen, running["correct"] / seen,
                              running["seen"] / max(running["seconds"], 1e-9))

    def on_steps_end(self, trainer):
        if self._progress is not None:
            self._progress.close()
            self._progress = None

    def on_epoch_end(self, trainer, row):
        if not trainer.is_main:
            return
        improved = trainer.state["best_epoch"] == row["epoch"] and trainer.val_loader is not None
        val = "no validation" if trainer.val_loader is None else \
            f"val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}% top-5 {100 * row['val_top5']:.2f}%"
        self.log(f"epoch {row['epoch']}/{trainer.epochs}: train loss {row['train_loss']:.4f} acc "
                 f"{100 * row['train_acc']:.2f}% | {val} | lr {row['lr']:.4g} | {clock(row['seconds'])}, "
                 f"{row['images_per_s']:.0f} img/s" + (" | best" if improved else ""))


class Checkpoints(Callback):
    """checkpoint.npz after every epoch and every ``every`` optimizer steps; best.npz at the best validation accuracy.

    Every process calls ``trainer.save`` (it checks the weights and, without sync
    batch norm, gathers rank 0's statistics); the main process writes.

    Args:
        every: also checkpoint every this many optimizer steps (0: only at epoch ends).
    """

    def __init__(self, every: int = 0):
        if every < 0:
            raise ValueError(f"Checkpoints: every must be >= 0, got {every}")
        self.every = int(every)

    def on_step_end(self, trainer):
        state = trainer.state
        if self.every and state["global_step"] % self.every == 0 \
                and state["step"] < len(trainer.train_loader):  # the epoch's end writes its own checkpoint
            trainer.save()

    def on_epoch_end(self, trainer, row):
        # best.npz before checkpoint.npz: a kill in between redoes this epoch from the
        # previous checkpoint and rewrites the same best.npz.
        if trainer.state["best_epoch"] == row["epoch"]:
            trainer.save("best.npz")
        trainer.save()


class _Report(Callback):
    """A file redrawn from the history after every epoch, and at the end of a fit that did not draw it.

    The second case is a run killed after its last checkpoint but before its
    reports: resuming it has no epoch left to train and writes them then.
    """

    def __init__(self):
        self._drawn = None   # how many history rows the file holds, as this object wrote it

    def write(self, trainer) -> None:
        raise NotImplementedError

    def _update(self, trainer):
        if trainer.writes and trainer.state["history"]:
            self.write(trainer)
            self._drawn = len(trainer.state["history"])

    def on_epoch_end(self, trainer, row):
        self._update(trainer)

    def on_fit_end(self, trainer):
        if self._drawn != len(trainer.state["history"]):
            self._update(trainer)


class History(_Report):
    """history.csv: one row per finished epoch, columns ``HISTORY_FIELDS``."""

    def write(self, trainer):
        write_history(trainer.path("history.csv"), trainer.state["history"])


class CurvePlot(_Report):
    """curves.png: loss and accuracy per epoch, train and validation (needs matplotlib; else nothing)."""

    def write(self, trainer):
        plot_curves(trainer.path("curves.png"), trainer.state["history"])


class FilterPlot(_Report):
    """filters.png: the model's first-layer filters (its first 4-D weight with 3 input channels)."""

    def write(self, trainer):
        plot_filters(trainer.path("filters.png"), trainer.model)


def write_history(path, history: list) -> None:
    """Write ``history`` (rows with ``HISTORY_FIELDS``) as CSV, atomically; floats as repr (they read back exactly)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write(path, lambda f: f.write(buffer.getvalue()), mode="w")


class FreezeAfter(Callback):
    """Stop training ``params`` once ``epochs`` epochs are done: their parameter groups' lr becomes 0.

    airbench94 trains its whitening layer's bias for the first few epochs only. The lr of
    the groups holding ``params`` is set to 0 at every epoch start and after every step
    (after the schedule has set the next step's rates), from epoch ``epochs`` on. With lr 0
    SGD leaves a weight exactly as it is, whatever its momentum and weight decay, and the
    gradients still flow as before, so data-parallel processes stay in step (changing
    ``requires_grad`` mid-run would leave a gradient bucket waiting). The decision is a
    function of the epoch alone: a resumed run freezes at the same point. Under
    ``Lookahead`` the weights still move once more, to the slow average, at the next
    synchronisation (airbench's average covers its frozen bias alike).

    Args:
        params: the Parameters to freeze; each of their groups must hold nothing else.
        epochs: how many epochs they train, >= 0.
    """

    def __init__(self, params, epochs: int):
        self.params, self.epochs = list(params), int(epochs)
        if not self.params or self.epochs < 0:
            raise ValueError(f"FreezeAfter: need parameters and epochs >= 0, got {len(self.params)} parameters and "
                             f"{epochs} epochs")

    def _groups(self, optimizer) -> list:
        ids = {id(p) for p in self.params}
        groups = [g for g in optimizer.param_groups if any(id(p) in ids for p in g["params"])]
        if sum(len(g["params"]) for g in groups) != len(ids) or any(id(p) not in ids for g in groups
                                                                    for p in g["params"]):
            raise ValueError("FreezeAfter: the parameters to freeze must fill parameter groups of their own "
                             "(and be in the optimizer)")
        return groups

    def _apply(self, trainer) -> None:
        if trainer.state["epoch"] >= self.epochs:
            for group in self._groups(trainer.optimizer):
                group["lr"] = 0.0

    def on_fit_start(self, trainer) -> None:
        self._groups(trainer.optimizer)   # a wrong grouping fails before the first step

    def on_epoch_start(self, trainer) -> None:
        self._apply(trainer)

    def on_step_end(self, trainer) -> None:
        self._apply(trainer)
