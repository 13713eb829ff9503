"""Training a run: a new run or a resumed one, each a path of its own into one shared fit and
finish (calibration, the saved model, test metrics, the report, the manifest). What the
manifest records of the training as it begins, resumes and stops: `convnet.training.record`."""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from convnet.config import TrainConfig
from convnet.data import TrainingData
from convnet.data.dataset import Dataset
from convnet.errors import UnderTrainingWarning, warn
from convnet.evaluation import (
    TestTimeAugmentation,
    predicted_tally,
    retracing_unlogged,
)
from convnet.files import replace_durably
from convnet.models.factory import model_for_recipe, portable_model
from convnet.models.recipe import Recipe
from convnet.models.registry import under_training
from convnet.reports.plots import read_history
from convnet.reports.report import training_samples, write_report
from convnet.run_folders import new_run_dir
from convnet.runs import MODEL_FILE, Run
from convnet.training import distributed
from convnet.training.backup import (
    BACKUP_DIR,
    BestWeights,
    EpochBackup,
    load_best,
    restore_backup,
    trim_history,
)
from convnet.training.calibration import calibrate, softmax_head
from convnet.training.callbacks import (
    ChanceWatch,
    DiskRoom,
    EarlyStop,
    EpochTimer,
    StopOnInterrupt,
    TimeBudget,
)
from convnet.training.feed import batches, epoch_steps
from convnet.training.keras_recipe import (
    compile_for_training,
    fit_batch_norm_momentum,
    learning_rate,
    seed_everything,
)
from convnet.training.progress import EpochBars
from convnet.training.record import TrainingInterrupted as TrainingInterrupted
from convnet.training.record import begin_run, mark_resumed, recording_status


@dataclass
class TrainResult:
    """What a training run gives back.

    Attributes:
        run: the run folder (a scratch folder on processes other than the chief).
        test_loss: categorical cross-entropy on the test set.
        test_accuracy: accuracy on the test set.
        wall_seconds: from the command's start to the end, earlier processes' training counted.
        is_chief: whether this process wrote the run folder (process 0 of several).
    """

    run: Path
    test_loss: float
    test_accuracy: float
    wall_seconds: float
    is_chief: bool = True


@dataclass(frozen=True)
class Start:
    """Where `fit` begins: a new run at epoch 0, a resumed one where its backup and history end.

    Attributes:
        epoch: epochs already trained.
        elapsed: seconds of training already spent, from history.csv.
        planned: the time budget's plan so far, from history.csv.
        resumed: whether history.csv is continued rather than begun.
        val_losses: the validation loss of each epoch already trained, for early stopping.
    """

    epoch: int = 0
    elapsed: float = 0.0
    planned: int | None = None
    resumed: bool = False
    val_losses: tuple[float, ...] = ()


@dataclass
class Session:
    """A compiled model and the data it trains on, built alike for new and resumed runs."""

    config: TrainConfig
    recipe: Recipe
    data: TrainingData
    context: distributed.Context
    model: keras.Model
    train: Dataset | None  # this process's share; None after `test_set`
    validation: Dataset | None  # this process's share; None after `test_set`
    batch_size: int  # this process's share of the global batch
    rate: object  # a number, None (the optimizer's default) or a schedule

    def test_set(self) -> Dataset:
        """The test set, the training and validation sets let go: after calibration nothing
        reads them, and streamed, their indexes and labels are what grows with the data (49 MB
        of 8 GB of doodles, docs/benchmarks.md, bench.scale). They are freed when the caller
        handed its `TrainingData` over (`convnet.train` does; `convnet tune` keeps one for
        all its trials)."""
        test = self.data.test
        self.data = dataclasses.replace(self.data, train=None, validation=None)
        self.train = self.validation = None
        return test


def train(
    config: TrainConfig,
    data: TrainingData,
    command: list[str] | None = None,
    verbose: int | str = "auto",
    started: float | None = None,
    callbacks: list | tuple = (),
) -> TrainResult:
    """Trains `config.preset` on `data` and writes a complete run folder.

    The model is backed up after every epoch in `backup/`, so a killed or interrupted run
    continues with `resume`.

    Args:
        config: what to train and where to write it.
        data: the data `config` names (`convnet.data.load_training_data`).
        command: the command line, recorded in the manifest.
        verbose: Keras' fit verbosity (0 silent, 1 progress bars, 2 one line per epoch).
        started: `time.perf_counter()` when the command began, for the wall time; now if None.
        callbacks: Keras callbacks of the caller's, run after convnet's own in `fit`.

    Returns:
        The run folder and test metrics.

    Raises:
        RunError: the run folder cannot be written. ConfigError: settings the data or the
            devices cannot train with.
        TrainingInterrupted: Ctrl-C; the run is marked "interrupted" and can be resumed.
    """
    started = started or time.perf_counter()
    context = distributed.setup(config)
    with new_run_dir(context.out(config.out), config.preset) as run_dir:
        session = _session(config, data, context)
        run = begin_run(run_dir, config, command, data, context)
        _warn(session, under_training(config.preset, session.recipe, data.record.examples))
        del data  # the session's from here, so that it can let the training sets go
        return _fit_and_finish(session, run, Start(), started, verbose, callbacks)


def resume(
    run: Run,
    data: TrainingData,
    command: list[str] | None = None,
    verbose: int | str = "auto",
    started: float | None = None,
    callbacks: list | tuple = (),
) -> TrainResult:
    """Continues an interrupted run from its last completed epoch, with its own config.

    A run stopped after its last epoch (in calibration, the test pass or the report) goes
    straight to those.

    Args:
        run: a run folder that `Run.check_resumable` accepts.
        data: the data its config names, as it was when the run began.
        command: the command line, recorded in the manifest's `resumes`.
        verbose: Keras' fit verbosity.
        started: `time.perf_counter()` when the command began; now if None.
        callbacks: Keras callbacks of the caller's, run after convnet's own in `fit`.

    Raises:
        RunError: the backup cannot be read.
    """
    started = started or time.perf_counter()
    config = run.config()
    session = _session(config, data, distributed.setup(config, resume=True))
    epoch = restore_backup(session.model, run.path / BACKUP_DIR)
    last = trim_history(run.path / "history.csv", epoch)
    start = Start(
        epoch,
        float(last.get("elapsed_seconds") or 0.0),
        int(last["planned_epochs"]) if last.get("planned_epochs") else None,
        resumed=True,
        val_losses=_val_losses(run.path),
    )
    if run.read_json("manifest.json"):
        mark_resumed(run, command, session.context, data.train.feed)
    else:  # killed before the manifest was written: it begins now
        begin_run(run.path, config, command, data, session.context)
    del data  # the session's from here, so that it can let the training sets go
    return _fit_and_finish(session, run, start, started, verbose, callbacks)


def _session(config: TrainConfig, data: TrainingData, context: distributed.Context) -> Session:
    """Seeds, builds and compiles the model; checks what would fail only later otherwise."""
    recipe = config.recipe()
    train_set, validation = context.shard(data.train), context.shard(data.validation)
    seed_everything(config)
    model = model_for_recipe(config.preset, train_set.image_shape, train_set.num_classes, recipe)
    if recipe.calibrate:
        softmax_head(model)  # fails here, before training, if there is nothing to scale
    batch_size = context.local_batch(recipe.batch_size)
    steps = epoch_steps(len(train_set), batch_size)
    fit_batch_norm_momentum(model, recipe.epochs * steps)
    rate = learning_rate(recipe, steps)
    compile_for_training(model, recipe, rate, metrics=["accuracy"])
    return Session(config, recipe, data, context, model, train_set, validation, batch_size, rate)


def _fit_and_finish(
    session: Session,
    run: Run,
    start: Start,
    started: float,
    verbose: int | str,
    callbacks: list | tuple = (),
) -> TrainResult:
    """Trains from `start`, then finishes the run; everything up to "complete" is recorded, so
    a run stopped anywhere resumes."""
    with recording_status(run):
        timings = _fit(session, run.path, start, verbose, callbacks)
        metrics = _finish(session, run, started - start.elapsed, timings, verbose)
        manifest = run.read_json("manifest.json") | {
            "status": "complete",
            "timings": {k: metrics[k] for k in ("fit_seconds", "wall_seconds")},
        }
        run.write_json("manifest.json", manifest)
    shutil.rmtree(run.path / BACKUP_DIR, ignore_errors=True)
    return TrainResult(
        run.path,
        metrics["test_loss"],
        metrics["test_accuracy"],
        metrics["wall_seconds"],
        session.context.is_chief,
    )


def _fit(
    session: Session, run_dir: Path, start: Start, verbose: int | str, extra: list | tuple = ()
) -> tuple[int, float]:
    """Runs `fit` from `start` to the recipe's (or the time budget's) last epoch.

    Returns:
        `epochs` trained in all and `fit_seconds` of training in all, both counting the earlier
        processes of a resumed run as history.csv does; and, when it trained, this process's
        `startup_seconds` and `first_step_seconds` (from its start to the start of training and
        to the end of the first training step).
    """
    recipe = session.recipe
    if start.epoch >= (start.planned or recipe.epochs) or _stopped_early(recipe, start.val_losses):
        return {"epochs": start.epoch, "fit_seconds": start.elapsed}
    config = session.config
    train_batches, steps = batches(session.train, session.batch_size, config.seed, start.epoch)
    val_batches, val_steps = None, None
    if session.validation is not None:
        val_batches, val_steps = batches(session.validation, session.batch_size)
    callbacks = _callbacks(session, run_dir, steps, start)
    (timer,) = (c for c in callbacks if isinstance(c, EpochTimer))
    fit_started = time.perf_counter()
    with StopOnInterrupt() as stop, EpochBars(verbose) as progress, retracing_unlogged():
        history = session.model.fit(
            train_batches,
            steps_per_epoch=steps,
            validation_data=val_batches,
            validation_steps=val_steps,
            epochs=recipe.epochs,
            initial_epoch=start.epoch,
            callbacks=[*callbacks, *extra, progress, stop],
            verbose=progress.keras_verbose,
            shuffle=False,  # `batches` shuffles
            class_weight=session.data.class_weight,
        )
    return {
        "epochs": start.epoch + len(history.epoch),
        "fit_seconds": start.elapsed + time.perf_counter() - fit_started,
        "startup_seconds": timer.startup_seconds,
        "first_step_seconds": timer.first_step_seconds,
    }


def _finish(
    session: Session, run: Run, started: float, timings: dict, verbose: int | str = 0
) -> dict:
    """After the last epoch: the best weights, calibration, the saved model, test metrics and
    the report. Returns the metrics, `timings` among them; `started` is when the run began, its
    earlier processes' training counted; `verbose` 1 shows the test-time views' progress."""
    recipe, data, model = session.recipe, session.data, session.model
    extra = {}
    if _keeps_best(recipe, session.validation):
        extra["best_epoch"] = load_best(model, run.path / BACKUP_DIR)
        if _stopped_early(recipe, _val_losses(run.path)) and timings["epochs"] < recipe.epochs:
            extra["stopped_early_at"] = timings["epochs"]
    if "stopped_early_at" not in extra:  # early stopping ends a run that has learnt
        extra |= _steps_note(session, timings["epochs"])
    model = portable_model(session.context.finish(model))
    tta = TestTimeAugmentation.of(recipe)
    if recipe.calibrate and data.validation is not None:
        extra["temperature"] = calibrate(model, data.validation, tta)
    _save_model(model, run.path)
    samples = training_samples(data.train) if session.context.is_chief else None
    del data  # so that `test_set` lets the training sets go
    test = session.test_set()
    tally = predicted_tally(model, test, tta=tta, verbose=verbose)
    metrics = tally.metrics() | {"test_data": test.source} | extra | timings
    metrics["parameters"] = model.count_params()
    metrics["wall_seconds"] = time.perf_counter() - started
    run.write_json("metrics.json", metrics)
    if session.context.is_chief:  # the report reuses the test predictions' tally above
        write_report(run.path, model, samples, test, tally=tally)
    return metrics


def _callbacks(session: Session, run_dir: Path, steps: int, start: Start) -> list:
    """The callbacks of `fit`. A resumed run continues its clock and time budget plan."""
    recipe, rate = session.recipe, session.rate
    callbacks = [DiskRoom(run_dir), EpochTimer(start.elapsed)]
    if recipe.time_budget:
        schedule = rate if isinstance(rate, keras.optimizers.schedules.CosineDecay) else None
        callbacks.append(
            TimeBudget(
                recipe.time_budget, recipe.epochs, steps, schedule, start.elapsed, start.planned
            )
        )
    # After the clocks: it writes the times and the plan they add to the logs.
    callbacks.append(keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=start.resumed))
    if session.validation is not None:
        callbacks.append(ChanceWatch(session.validation.y))
    if recipe.patience and session.validation is not None:
        callbacks.append(EarlyStop(recipe.patience, start.val_losses))
    if _keeps_best(recipe, session.validation):
        callbacks.append(BestWeights(run_dir / BACKUP_DIR))
    callbacks.append(EpochBackup(run_dir / BACKUP_DIR))  # after CSVLogger; see EpochBackup
    return callbacks


def _warn(session: Session, message: str) -> None:
    """`message` as an `UnderTrainingWarning`, from the process that writes the run only."""
    if message and session.context.is_chief:
        warn(message, UnderTrainingWarning)


def _steps_note(session: Session, epochs: int) -> dict:
    """The under-training warning for the epochs trained, for metrics.json and the report; said
    now too when the time budget, not the recipe, cut the steps short (`train` said the other)."""
    preset, recipe, examples = session.config.preset, session.recipe, session.data.record.examples
    message = under_training(preset, recipe, examples, epochs)
    if epochs < recipe.epochs and not under_training(preset, recipe, examples):
        _warn(session, message)
    return {"under_training": message} if message else {}


def _keeps_best(recipe: Recipe, validation: Dataset | None) -> bool:
    """Whether the run ends with its best epoch's weights: with `restore_best` or early
    stopping, given a validation set to tell the best by."""
    return bool(recipe.restore_best or recipe.patience) and validation is not None


def _stopped_early(recipe: Recipe, val_losses) -> bool:
    """Whether `patience` epochs have passed since the lowest of `val_losses`."""
    if not recipe.patience or not len(val_losses):
        return False
    losses = np.nan_to_num(np.asarray(val_losses, dtype=float), nan=np.inf)
    return len(losses) - 1 - int(np.argmin(losses)) >= recipe.patience


def _val_losses(run_dir: Path) -> tuple[float, ...]:
    """The validation loss of each epoch in the run's history.csv, if it has one."""
    history = run_dir / "history.csv"
    return tuple(read_history(history).get("val_loss", [])) if history.is_file() else ()


def _save_model(model: keras.Model, run_dir: Path) -> None:
    tmp = run_dir / f".tmp-{MODEL_FILE}"
    try:
        model.save(tmp)
        replace_durably(tmp, run_dir / MODEL_FILE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
