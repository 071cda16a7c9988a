"""Training and evaluation: the fit loop for any model and loss, with callbacks (metrics: ``minidl.metrics``).

    trainer = Trainer(model, optimizer, train_loader, val_loader, epochs=30,
                      loss_fn=F.softmax_cross_entropy, schedule=schedule,
                      out_dir="runs/alexnet", checkpoint_every=200, callbacks=[FilterPlot()])
    trainer.fit()                 # history.csv, checkpoint.npz, best.npz, curves.png, filters.png
    trainer.test(test_loader)     # results.json

The loop itself only trains: forward, loss, backward, optimizer and schedule
steps, validation, and the run's state. Everything else is a callback
(``minidl.callbacks``): the progress bar and epoch lines, checkpoints, history.csv,
plots, and any of your own. The data-parallel side of a step (the batch's slice,
the loss scaling, the gradient reducer, the metric sums) is the
``minidl.distributed.DataParallel``'s; without one the trainer uses a
DataParallel over a world of one process, where each of those is the plain step.

Exact resumption. A run is a pure function of its settings: data order and
augmentation come from (seed, epoch, batch) (see ``minidl.data.DataLoader``),
dropout masks from generators owned by the Dropout layers, and nothing depends on
timing. A checkpoint records everything else that changes as training goes on:
weights and BatchNorm statistics, optimizer momentum, the schedule, the dropout
generators' states, the position (epoch, batch within the epoch), the running
sums of the epoch's metrics, the history so far and the best validation accuracy.
So a run killed at any moment and resumed from its last checkpoint replays the
lost batches exactly and ends with bit-identical weights and results (on the CPU;
GPU libraries may pick non-deterministic kernels).

Files in ``out_dir`` (each written atomically, see ``minidl.checkpoint``):
history.csv (a row per epoch), checkpoint.npz (after every epoch and every
``checkpoint_every`` steps), best.npz (at the best validation accuracy),
results.json (test metrics and settings, from ``test``), and with matplotlib
curves.png (loss/accuracy per epoch); filters.png with the ``FilterPlot`` callback.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time

import numpy as np

from . import backend
from . import functional as F
from .autograd import Tensor
from .callbacks import HISTORY_FIELDS, Checkpoints, CurvePlot, History, ProgressLog, write_history
from .checkpoint import atomic_write, load_checkpoint, save_checkpoint
from .distributed import DataParallel, World
from .metrics import TTA_LEVELS, batch_sums, correct_counts, count_correct, evaluate  # noqa: F401  (public too)

__all__ = ["Trainer", "fit", "evaluate", "count_correct", "NonFiniteLossError", "HISTORY_FIELDS"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite (usually: the learning rate is too high)."""


def fit(model, optimizer, train_loader, val_loader, *, epochs: int, **kwargs) -> "Trainer":
    """Train for ``epochs`` epochs with a new ``Trainer`` (same keyword arguments); returns it."""
    trainer = Trainer(model, optimizer, train_loader, val_loader, epochs=epochs, **kwargs)
    trainer.fit()
    return trainer


def _fresh_running() -> dict:
    """Sums over the current epoch so far (kept in checkpoints, for exact mid-epoch resumes)."""
    return {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "lr": None}


class Trainer:
    """Runs epochs of optimizer steps with metrics, callbacks and exact resumption.

    Args:
        model: an ``nn.Module`` on the loaders' device.
        optimizer: a ``minidl.optim.Optimizer`` (``lr``, ``zero_grad``, ``step``,
            ``state_dict``, ``load_state_dict``).
        train_loader, val_loader: ``DataLoader``s (``epoch_batches`` and ``len``),
            yielding (inputs, targets); val_loader may be None.
        epochs: total number of epochs of the run.
        loss_fn: ``loss_fn(outputs, targets)`` -> the mean loss over the batch's rows,
            a scalar Tensor (default ``F.softmax_cross_entropy``). It must be a mean:
            the epoch's loss and the data-parallel scaling weight it by the rows.
            Accuracy is counted when the outputs are (N, K) scores and the targets
            (N,) integer classes; otherwise it is NaN in the history.
        callbacks: more ``minidl.callbacks.Callback`` objects, called after the ones
            the flags below switch on (progress, checkpoints, history, curves).
        schedule: None (constant lr) or a schedule with ``step_batch()`` (after each
            optimizer step), ``step_epoch(metric)`` (with the validation accuracy)
            and ``state_dict``/``load_state_dict``.
        out_dir: where the run's files go; None writes nothing.
        settings: a JSON-able dict describing the run, stored in checkpoints and results.
        checkpoint_every: also checkpoint every this many optimizer steps (0: only
            at the end of each epoch).
        progress: show a progress bar (or plain lines without tqdm).
        plots: redraw curves.png after every epoch (needs matplotlib).
        log: where the line per epoch goes (default: print).
        tta: test-time augmentation in validation and ``test`` (a level of
            ``minidl.metrics.tta_logits``: 0 none, 1 mirror, 2 mirror and translate).
        parallel: a ``minidl.distributed.DataParallel`` for data-parallel training:
            the loaders are then sharded with ``parallel.shard``, every process
            runs the same steps on its slices, metrics are summed over all
            processes, and only the main process prints and writes files.

    ``self.callbacks`` is the list in calling order: ``ProgressLog``, then with an
    ``out_dir`` ``Checkpoints``, ``History`` and (``plots``) ``CurvePlot``, then
    ``callbacks``. Every step reads one thing back from the device: the step's loss
    and correct count (summed over processes), after backward and before the
    optimizer step, which is also when a non-finite loss stops the run.
    """

    def __init__(self, model, optimizer, train_loader, val_loader, *, epochs: int, loss_fn=None, callbacks=(),
                 schedule=None, out_dir=None, settings: dict | None = None, checkpoint_every: int = 0,
                 progress: bool = True, plots: bool = True, log=print, parallel=None, tta: int = 0):
        if epochs < 0 or checkpoint_every < 0:
            raise ValueError(f"Trainer: epochs and checkpoint_every must be >= 0, got {epochs} and {checkpoint_every}")
        if tta not in TTA_LEVELS:
            raise ValueError(f"Trainer: tta must be one of {TTA_LEVELS}, got {tta!r}")
        if loss_fn is not None and not callable(loss_fn):
            raise ValueError(f"Trainer: loss_fn must be callable as loss_fn(outputs, targets), got {loss_fn!r}")
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.loss_fn = F.softmax_cross_entropy if loss_fn is None else loss_fn
        self.train_loader, self.val_loader = train_loader, val_loader
        self.epochs, self.out_dir = int(epochs), (os.fspath(out_dir) if out_dir is not None else None)
        self.settings = dict(settings or {})
        self.parallel, self.tta = parallel, tta
        # one process: the plain step, through the same calls
        self._step_parallel = parallel if parallel is not None else DataParallel(model, World())
        self.is_main = parallel is None or parallel.world.is_main
        self.writes = self.out_dir is not None and self.is_main  # only the main process writes files
        self.callbacks = [ProgressLog(bar=progress, log=log)]
        if self.out_dir is not None:
            self.callbacks += [Checkpoints(checkpoint_every), History()] + ([CurvePlot()] if plots else [])
        self.callbacks += list(callbacks)
        self.state = {"epoch": 0, "step": 0, "global_step": 0, "history": [], "best_val_acc": None,
                      "best_epoch": None, "running": _fresh_running()}
        if self.writes:
            os.makedirs(self.out_dir, exist_ok=True)

    def path(self, name: str) -> str:
        """``name`` in the run's ``out_dir``."""
        return os.path.join(self.out_dir, name)

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    # ---- state ---------------------------------------------------------------
    def _dropout_generators(self) -> dict:
        """name -> Generator of every module that owns one (Dropout layers), in module order."""
        return {name: m.rng for name, m in self.model.named_modules()
                if isinstance(getattr(m, "rng", None), np.random.Generator)}

    def state_dict(self) -> dict:
        """Everything needed to continue this run exactly (arrays + JSON-able values)."""
        return {"model": self.model.state_dict(),
                "optim": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict() if self.schedule is not None else None,
                "rngs": {name: rng.bit_generator.state for name, rng in self._dropout_generators().items()},
                "trainer": copy.deepcopy(self.state),
                "settings": self.settings}

    def load_state_dict(self, state: dict, rebuild_schedule=None) -> None:
        """Restore a ``state_dict`` (e.g. from ``load_checkpoint``).

        Args:
            rebuild_schedule: None to restore the saved schedule state. For a run
                whose length changed (a new ``epochs``), a callable that builds a
                fresh schedule for the new length on ``self.optimizer``; it is then
                advanced through the steps and epochs already done, so it continues
                from the current step on the new curve.
        Raises:
            ValueError naming what is missing when ``state`` is not a Trainer's
            state_dict, or when its dropout generators are not the model's.
        """
        missing = [key for key in ("model", "optim", "rngs", "trainer") if key not in state]
        if missing:
            raise ValueError(f"Trainer.load_state_dict: not the state of a training run (no {', '.join(missing)}); "
                             "expected a checkpoint.npz or best.npz written by a Trainer")
        generators = self._dropout_generators()
        if set(generators) != set(state["rngs"]):
            raise ValueError(f"Trainer.load_state_dict: the checkpoint has dropout generators "
                             f"{sorted(state['rngs'])}, the model {sorted(generators)}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optim"])
        for name, rng in generators.items():
            rng.bit_generator.state = state["rngs"][name]
        self.state = copy.deepcopy(state["trainer"])
        if rebuild_schedule is not None:
            self.schedule = rebuild_schedule(self.optimizer)
            self._replay_schedule()
        elif self.schedule is not None and state.get("schedule") is not None:
            self.schedule.load_state_dict(state["schedule"])

    def _replay_schedule(self) -> None:
        """Advance a fresh schedule through every step and epoch end already done."""
        if self.schedule is None:
            return
        steps = len(self.train_loader)
        for row in self.state["history"]:
            for _ in range(steps):
                self.schedule.step_batch()
            self.schedule.step_epoch(row["val_acc"])
        for _ in range(self.state["step"]):
            self.schedule.step_batch()

    def save(self, name: str = "checkpoint.npz") -> None:
        """Checkpoint to ``out_dir/name``, refusing to overwrite a good one with non-finite weights.

        Under data parallelism every process checks its weights (they are equal, so
        all stop together) and the main process writes.
        """
        if self.out_dir is None:
            return
        for key, param in self.model.named_parameters():
            xp = backend.get_array_module(param.data)
            if not bool(xp.isfinite(param.data).all()):
                raise NonFiniteLossError(f"the weights became non-finite ({key}); the learning rate is probably "
                                         f"too high. {self._kept()}")
        self._step_parallel.sync_buffers()  # without sync BN: rank 0's running statistics are kept
        if self.writes:
            save_checkpoint(self.path(name), self.state_dict())

    def _kept(self) -> str:
        """What happened to the checkpoint when training stops on a non-finite value."""
        if self.out_dir is None or not os.path.exists(self.path("checkpoint.npz")):
            return "No checkpoint had been written yet."
        return f"The last good checkpoint {self.path('checkpoint.npz')} is kept."

    def resume(self, path=None, rebuild_schedule=None) -> None:
        """Load ``path`` (default ``out_dir/checkpoint.npz``) and continue from it on the next ``fit``."""
        self.load_state_dict(load_checkpoint(path or self.path("checkpoint.npz")), rebuild_schedule)

    # ---- training ---------------------------------------------------------------
    def _device(self) -> backend.Device:
        return next(iter(self.model.parameters())).device

    def fit(self) -> list:
        """Train from the current position to ``epochs``; returns the history rows.

        The model's device is made this thread's current GPU (``backend.use_device``,
        for good: switching back would make a context on GPU 0), so everything the
        step allocates (gradients, metric sums, scalars) lands on it, also on cuda:N.
        """
        self._call("on_fit_start")
        backend.use_device(self._device())
        while self.state["epoch"] < self.epochs:
            self._train_epoch()
            self._end_epoch()
        self._call("on_fit_end")
        return self.state["history"]

    def _train_epoch(self) -> None:
        state, running = self.state, self.state["running"]
        if running["lr"] is None:
            running["lr"] = float(self.optimizer.lr)
        self.model.train()
        self._call("on_epoch_start")
        # time since the epoch (re)started; earlier wall time of this epoch is in running["seconds"]
        started, seconds_before = time.perf_counter(), running["seconds"]
        try:
            for x, y in self.train_loader.epoch_batches(state["epoch"], start_batch=state["step"]):
                loss, correct, n = self._train_step(x, y)
                running["loss_sum"] += loss * n
                running["correct"] += correct
                running["seen"] += n
                state["step"] += 1
                state["global_step"] += 1
                running["seconds"] = seconds_before + time.perf_counter() - started
                self._call("on_step_end")
        finally:
            self._call("on_steps_end")

    def _train_step(self, x, y):
        """One optimizer step on a batch; returns (mean loss, correct count, images) of the global batch.

        Under data parallelism x holds this process's rows of the global batch
        (possibly none); ``DataParallel.backward`` turns their loss into the global
        batch's mean gradient. A loader that skipped unreadable files served fewer
        images than planned: the step's image count, summed with the metrics, then
        rescales the gradients to the images that were really there.
        """
        if hasattr(self.train_loader, "batch_rows"):
            start, _, total = self.train_loader.batch_rows(self.state["step"])
        else:  # any loader of whole batches
            start, total = 0, int(y.shape[0])
        n, parallel = int(y.shape[0]), self._step_parallel
        with parallel.batch(start, total):
            outputs = self.model(x)
        self.optimizer.zero_grad()
        loss = self.loss_fn(outputs, y) if n else None
        sums = batch_sums(loss, outputs.data, y)
        parallel.backward(loss, outputs, n, total)
        parallel.all_reduce(sums)
        loss_sum, correct, seen = (float(v) for v in backend.to_numpy(sums))  # the step's one host sync
        value = loss_sum / seen if seen else float("nan")
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"the training loss became {value} at epoch {self.state['epoch'] + 1}, batch "
                f"{self.state['step'] + 1} (lr {float(self.optimizer.lr):.4g}); lower the learning rate. "
                f"{self._kept()}")
        if seen != total:  # files were skipped: the gradients were scaled for `total` images
            for p in self.model.parameters():
                if p.grad is not None:  # a new array: gradient arrays may be shared between leaves
                    p.grad = Tensor(p.grad.data * p.grad.data.dtype.type(total / seen))
        self.optimizer.step()
        if self.schedule is not None:
            self.schedule.step_batch()
        return value, (int(correct) if math.isfinite(correct) else correct), int(seen)

    def _end_epoch(self) -> None:
        state, running = self.state, self.state["running"]
        self._step_parallel.sync_buffers()  # without sync BN: every process evaluates rank 0's statistics
        val = self._evaluate(self.val_loader) if self.val_loader is not None else \
            {"loss": float("nan"), "acc": float("nan"), "top5": float("nan")}
        seen = max(running["seen"], 1)
        row = {"epoch": state["epoch"] + 1, "lr": running["lr"], "train_loss": running["loss_sum"] / seen,
               "train_acc": running["correct"] / seen, "val_loss": val["loss"], "val_acc": val["acc"],
               "val_top5": val["top5"], "seconds": running["seconds"],
               "images_per_s": running["seen"] / max(running["seconds"], 1e-9)}
        state["history"].append(row)
        if self.schedule is not None:
            self.schedule.step_epoch(val["acc"])
        if self.val_loader is None:   # no validation: the latest weights are the best known (best.npz)
            state["best_epoch"] = row["epoch"]
        elif state["best_val_acc"] is None or val["acc"] > state["best_val_acc"]:
            state["best_val_acc"], state["best_epoch"] = val["acc"], row["epoch"]
        state["epoch"], state["step"], state["running"] = state["epoch"] + 1, 0, _fresh_running()
        self._call("on_epoch_end", row)

    def _evaluate(self, loader) -> dict:
        return evaluate(self.model, loader, self.parallel, loss_fn=self.loss_fn, tta=self.tta)

    # ---- files --------------------------------------------------------------------
    def write_history(self) -> None:
        """history.csv: one row per finished epoch, columns ``HISTORY_FIELDS``."""
        write_history(self.path("history.csv"), self.state["history"])

    def test(self, test_loader) -> dict:
        """Evaluate the final weights on ``test_loader``; write results.json.

        Returns:
            the results: test_loss, test_acc, test_top5, best_val_acc, best_epoch,
            epochs, the settings and the history.
        """
        self._step_parallel.sync_buffers()
        backend.use_device(self._device())
        metrics = self._evaluate(test_loader)
        results = {"test_loss": metrics["loss"], "test_acc": metrics["acc"], "test_top5": metrics["top5"],
                   "best_val_acc": self.state["best_val_acc"], "best_epoch": self.state["best_epoch"],
                   "epochs": self.state["epoch"], "settings": self.settings, "history": self.state["history"]}
        if self.writes:
            text = json.dumps(results, indent=2, allow_nan=True) + "\n"
            atomic_write(self.path("results.json"), lambda f: f.write(text), mode="w")
        return results
