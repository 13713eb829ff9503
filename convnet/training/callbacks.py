"""Callbacks convnet adds to Keras' own; those that back a run up while it trains are in
`convnet.training.backup`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import keras
import numpy as np

from convnet.errors import ConvnetWarning, DiskFull, command, setting, warn
from convnet.interrupts import Deferred
from convnet.machine import process_seconds


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` and `elapsed_seconds` (since training began) to each epoch's logs,
    and keeps `startup_seconds` (from the process's start to the start of training: imports,
    data, model) and `first_step_seconds` (to the end of its first training step, which traces
    the step): what a user waits before training moves.

    `elapsed_seconds` is wall-clock time, so it counts the work between epochs (backups,
    logging) too. Place it before `CSVLogger` so the history file records the times.

    Args:
        elapsed: seconds already spent, when a run resumes.
    """

    def __init__(self, elapsed: float = 0.0):
        super().__init__()
        self.initial_elapsed = elapsed

    def on_train_begin(self, logs=None):
        self._train_start = time.perf_counter()
        self.startup_seconds = process_seconds()
        self.first_step_seconds = None

    def on_train_batch_end(self, batch, logs=None):
        if self.first_step_seconds is None:
            self.first_step_seconds = process_seconds()

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        if logs is not None:
            logs["epoch_seconds"] = now - self._start
            logs["elapsed_seconds"] = self.initial_elapsed + now - self._train_start


# Steps of the first epoch, after the one that compiles, whose pace makes an early plan.
EARLY_STEPS = 10


class TimeBudget(keras.callbacks.Callback):
    """Fits training into a budget of wall-clock seconds: as many epochs as fit, at most a cap.

    The plan is made once the pace of an epoch that did not compile the training step is known
    (the end of the second epoch): the epochs done, plus as many more as fit in the rest of the
    budget at that pace. A cosine schedule is refitted to end with the plan, and the training
    step rebuilt, since it holds the schedule's length as a constant. After that the plan is
    only ever shortened, at the mean pace of the last 3 epochs (a machine that slows down), so
    the learning rate never climbs back. With 2 epochs of warm-up, as `best` has, the first plan
    is in force before the decay begins. Training stops when the plan is done, or at the first
    batch past the budget if an epoch runs long. Each epoch's logs get `planned_epochs`: place
    it before `CSVLogger`, so a resumed run continues the plan it had.

    On a machine too slow for the cap, the first plan comes early instead: after
    `EARLY_STEPS` steps of the first epoch that did not compile, if the cap's epochs would not
    fit at their pace, as many epochs as would (at least one), and the warm-up shrinks with the
    plan (2 of `best`'s 24 epochs: a sixth of an epoch in a plan of 2). Waiting for the second
    epoch there would leave no budget to decay in: on a 2-core CPU without AMX, `best` took
    about 220 s an epoch, so 590 s held 2, and they would have ended with the warm-up, at the
    peak learning rate.

    Args:
        seconds: the budget, from the start of `fit`, validation and backups included.
        max_epochs: the cap (the recipe's `epochs`).
        steps_per_epoch: training steps in one epoch.
        schedule: the optimizer's `CosineDecay`, to refit; None for a constant learning rate.
        elapsed: seconds already spent, when a run resumes.
        planned: the plan a resumed run had.
    """

    def __init__(
        self,
        seconds: float,
        max_epochs: int,
        steps_per_epoch: int,
        schedule: keras.optimizers.schedules.CosineDecay | None = None,
        elapsed: float = 0.0,
        planned: int | None = None,
    ):
        super().__init__()
        self.seconds = seconds
        self.max_epochs = max_epochs
        self.steps_per_epoch = steps_per_epoch
        self.schedule = schedule
        self.initial_elapsed = elapsed
        self.planned = planned or max_epochs
        self._has_plan = planned is not None
        self._paces: list[float] = []

    def on_train_begin(self, logs=None):
        self._start = self._epoch_end = time.perf_counter()
        if self._has_plan:  # resumed: the schedule ends with the plan, as it did
            self._refit_schedule(self.planned)
        self._compiling = True  # the first epoch compiles the training step

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._spent() > self.seconds:
            self.model.stop_training = True
        if not self._has_plan and self._compiling:
            if batch == 0:  # the step that compiled
                self._first_step_end = time.perf_counter()
            elif batch == EARLY_STEPS:
                self._plan_early(batch)

    def _plan_early(self, batch: int) -> None:
        """The first plan, from the pace of the first epoch's steps, if the cap does not fit."""
        step = (time.perf_counter() - self._first_step_end) / batch
        epoch_seconds = step * self.steps_per_epoch
        rest_of_epoch = step * (self.steps_per_epoch - batch - 1)
        more = int((self.seconds - self._spent() - rest_of_epoch) // epoch_seconds)
        plan = self._epoch + 1 + max(more, 0)  # counting the epochs of a resumed run's past
        if plan >= self.max_epochs:
            return  # the cap fits: plan at the end of the second epoch, as usual
        self.planned, self._has_plan = plan, True
        if self.schedule is not None:
            self.schedule.warmup_steps = int(
                self.schedule.warmup_steps * self.planned / self.max_epochs
            )
        self._refit_schedule(self.planned)

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        if not self._compiling:
            self._paces.append(now - self._epoch_end)
        self._epoch_end, self._compiling = now, False
        done = epoch + 1
        if self._paces:
            pace = sum(self._paces[-3:]) / len(self._paces[-3:])
            plan = min(self.max_epochs, done + int((self.seconds - self._spent()) // pace))
            if self._has_plan:
                plan = min(plan, self.planned)
            if plan != self.planned and plan > done:
                self._refit_schedule(plan)
            self.planned, self._has_plan = max(plan, done), True
        if logs is not None:
            logs["planned_epochs"] = self.planned
        if done >= self.planned or self._spent() > self.seconds:
            self.model.stop_training = True

    def _spent(self) -> float:
        return self.initial_elapsed + time.perf_counter() - self._start

    def _refit_schedule(self, epochs: int) -> None:
        if self.schedule is None:
            return
        total = epochs * self.steps_per_epoch
        self.schedule.decay_steps = max(total - self.schedule.warmup_steps, 1)
        self.model.make_train_function(force=True)
        self._compiling = True


class StopOnInterrupt(Deferred, keras.callbacks.Callback):
    """Makes Ctrl-C during `fit` a KeyboardInterrupt at the next batch's end
    (`convnet.interrupts.Deferred`; a second Ctrl-C raises at once).

    With the JAX backend, Keras runs batch-end callbacks on a thread pool and the main thread
    waits on its futures: an interrupt raised in that wait left the process hung at exit (its
    pool thread blocked on a lock) or was lost and training went on, in 3 of 21 tries. Here the
    callback raises at a batch boundary on the main thread (a callback with batch hooks turns
    Keras' pool off).

    Use it as a context manager around `fit`, which installs and restores the handler, and pass
    it to `fit` as a callback.
    """

    def on_train_batch_end(self, batch, logs=None):
        self.check()

    on_test_batch_end = on_train_batch_end


class DiskRoom(keras.callbacks.Callback):
    """Stops training, before an epoch's files are written, when the run folder's disk has no
    room for them: the history row, a backup beside the one it replaces, and the final model.
    A full disk otherwise surfaces as an error deep inside h5py or the CSV logger, and a weights
    file half-written by h5py has crashed the process. Place it first.

    Args:
        run_dir: the run folder.
    """

    MARGIN = 4 * 2**20  # bytes, for history.csv, the manifest and the backup's state file

    def __init__(self, run_dir: str | Path):
        super().__init__()
        self.run_dir = Path(run_dir)

    def on_train_begin(self, logs=None):
        variables = [*self.model.variables, *getattr(self.model.optimizer, "variables", [])]
        state = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)
        self.needed = 3 * state + self.MARGIN

    def on_epoch_end(self, epoch, logs=None):
        free = shutil.disk_usage(self.run_dir).free
        if free < self.needed:
            raise disk_full(self.run_dir, free, self.needed, f"before saving epoch {epoch + 1}")


def disk_full(run_dir: Path, free: int, needed: int, when: str) -> DiskFull:
    """The error for a run whose disk filled up, saying what to free and how to resume."""
    mb = 2**20
    return DiskFull(
        f"{run_dir}: its disk is full ({free / mb:.1f} MB free {when}); free at least "
        f"{max(needed - free, mb) / mb:.0f} MB there, then resume with: "
        f"{command('train', resume=run_dir)}"
    )


class EarlyStop(keras.callbacks.EarlyStopping):
    """Keras' `EarlyStopping` on the validation loss, which a resumed run continues: the epochs
    before it (their validation losses, from history.csv) count towards its patience. The best
    weights are kept by `convnet.training.backup.BestWeights` in the backup, not in memory.

    Args:
        patience: epochs without improvement before training stops.
        previous: the validation losses of the epochs already trained.
    """

    def __init__(self, patience: int, previous: list[float] = ()):
        super().__init__(monitor="val_loss", patience=patience, restore_best_weights=False)
        self.previous = list(previous)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for epoch, value in enumerate(self.previous):  # as `on_epoch_end` counts, min_delta 0
            self.wait += 1
            if self.best is None or value < self.best:
                self.best, self.best_epoch, self.wait = value, epoch, 0


class NearChanceWarning(ConvnetWarning):
    """Training accuracy climbed while validation accuracy stayed near chance."""


class ChanceWatch(keras.callbacks.Callback):
    """Warns at the end of training when training accuracy has left chance and validation
    accuracy has not: the net learnt something that does not carry over to held-out images
    (mismatched splits, a bad pixel range, too few steps for BatchNorm's statistics).

    Args:
        labels: the validation set's labels; chance is the accuracy of always guessing its most
            common class.
    """

    LEFT = 0.3  # training accuracy this share of the way from chance to 1 has left chance
    NEAR = 0.1  # validation accuracy within this share of the way is still near chance
    # Below this, validation accuracy moves in steps of 5% or more, and a set of one class
    # leaves no room above chance: neither can tell a model that learnt from one that did not.
    FEWEST = 20

    def __init__(self, labels: np.ndarray):
        super().__init__()
        counts = np.bincount(labels)
        self.chance = counts.max() / counts.sum() if len(labels) else 1.0
        self.telling = len(labels) >= self.FEWEST and self.chance < 1

    def on_train_begin(self, logs=None):
        self.last = {}

    def on_epoch_end(self, epoch, logs=None):
        self.last = dict(logs or {})

    def on_train_end(self, logs=None):
        train, val = self.last.get("accuracy"), self.last.get("val_accuracy")
        if train is None or val is None or not self.telling:
            return
        room = 1 - self.chance
        if train >= self.chance + self.LEFT * room and val <= self.chance + self.NEAR * room:
            warn(
                f"validation accuracy {val:.3f} stayed near chance ({self.chance:.3f}) while "
                f"training accuracy reached {train:.3f}: the model does not carry over to "
                "held-out images. Check that the training and test data are alike (the same "
                f"pixel range, {setting('pixel_range')}) and try more epochs or smaller batches "
                f"({setting('batch_size')}).",
                NearChanceWarning,
            )
