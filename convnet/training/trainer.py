"""Compile, fit, evaluate, and write the run folder."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from convnet.config import TrainConfig, make_config
from convnet.data import load_train_test, split
from convnet.data.dataset import Dataset
from convnet.errors import ConfigError, RunError
from convnet.evaluation import TestTimeAugmentation, predict_proba, test_metrics
from convnet.models.registry import Recipe, create_model, portable_model, resolve_precision
from convnet.reports.report import write_report
from convnet.runs import MODEL_FILE, Run, check_free_space, new_run_dir, write_yaml
from convnet.training import distributed
from convnet.training.calibration import calibrate, softmax_head
from convnet.training.callbacks import (
    BACKUP_DIR,
    BestWeights,
    EpochBackup,
    EpochTimer,
    StopOnInterrupt,
    TimeBudget,
    load_best,
    restore_backup,
    trim_history,
)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; the message says how to resume. The CLI exits 130."""


@dataclass
class TrainResult:
    run: Path
    test_loss: float
    test_accuracy: float
    wall_seconds: float


def learning_rate(recipe: Recipe, steps_per_epoch: int):
    """The recipe's learning rate: a number (None for the optimizer's default), or a schedule
    stepped once per batch."""
    if recipe.schedule == "constant":
        return recipe.learning_rate
    peak = recipe.learning_rate or 1e-3
    warmup = int(recipe.warmup_epochs * steps_per_epoch)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else peak,
        decay_steps=max(recipe.epochs * steps_per_epoch - warmup, 1),
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


def make_optimizer(recipe: Recipe, rate) -> keras.optimizers.Optimizer:
    """The recipe's optimizer, at `rate` (a number, a schedule, or None for its default)."""
    config = {}
    if rate is not None:
        config["learning_rate"] = rate
    if recipe.weight_decay:
        config["weight_decay"] = recipe.weight_decay
    return keras.optimizers.get({"class_name": recipe.optimizer, "config": config})


def compile_for_training(model: keras.Model, recipe: Recipe, rate, metrics=()) -> None:
    """Compiles `model` with the recipe's optimizer at `rate` and its label-smoothed loss.

    On JAX, `RandomTranslation` is jitted: it says it does not support XLA, for TensorFlow's
    sake (its TF kernel has none), and Keras then ran the whole JAX step eagerly. `best`
    trained at 2 s a step of 8 images that way, one XLA compile of the learning-rate schedule
    per weight update.
    """
    if keras.backend.backend() == "jax":
        for layer in model.layers:
            if isinstance(layer, keras.layers.RandomTranslation):
                layer.supports_jit = True
    model.compile(
        optimizer=make_optimizer(recipe, rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=list(metrics),
    )


def one_hot(data: Dataset) -> np.ndarray:
    return keras.utils.to_categorical(data.y, data.num_classes)


def epoch_steps(examples: int, batch_size: int) -> int:
    """Batches in one pass over `examples`, the last one partial."""
    return -(-examples // batch_size)


def batches(data: Dataset, batch_size: int, shuffle_seed: int | None = None, first_epoch: int = 0):
    """Endless (uint8 images, one-hot labels) batches, and the number that makes one pass.

    Each pass is one epoch, its last batch partial. With `shuffle_seed`, epoch e's order is a
    stateless shuffle keyed by (seed, e): the same in every iterator, so a run resumed at
    `first_epoch` sees the order an uninterrupted run gives that epoch (Keras' JAX trainer
    draws a batch from one iterator before training from another, and a reshuffling
    `Dataset.shuffle` shares its state between them). Keras keeps one iterator over an endless
    input for the whole fit, where it makes a new one every epoch for arrays; on this 2-core
    VM, the first step of about half the epochs then waited 1.4 s with both cores idle.
    tf.data's autotuner is off: destroying an iterator waits for its model thread, which held
    up the end of `fit` by 5-28 s in 3 of 8 runs.
    """
    import tensorflow as tf

    x, y = tf.constant(data.x), tf.constant(one_hot(data))
    indices = tf.range(len(data), dtype=tf.int64)

    def epoch_batches(epoch):
        order = indices
        if shuffle_seed is not None:
            seed = tf.stack([tf.constant(shuffle_seed, tf.int64), epoch])
            order = tf.random.experimental.stateless_shuffle(indices, seed=seed)
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    batched = tf.data.Dataset.counter(first_epoch).flat_map(epoch_batches)
    pairs = batched.map(lambda i: (tf.gather(x, i), tf.gather(y, i)))
    options = tf.data.Options()
    options.autotune.enabled = False
    return pairs.prefetch(2).with_options(options), epoch_steps(len(data), batch_size)


def resume(
    run_dir: str | Path, command: list[str] | None = None, verbose: int | str = "auto"
) -> TrainResult:
    """Continues an interrupted run from its last completed epoch, with its own `config.yaml`.

    Raises:
        RunError: not a run folder, already complete, still running, or its data changed.
    """
    run = Run(run_dir)
    config = make_config(run.config() | {"out": str(run_dir)}, f"{run_dir}/config.yaml")
    return train(config, command, verbose, resume=True)


def train(
    config: TrainConfig,
    command: list[str] | None = None,
    verbose: int | str = "auto",
    resume: bool = False,
) -> TrainResult:
    """Trains `config.preset` and writes a complete run folder.

    The folder is checked (writable, not full) before the data is read; a data error leaves no
    folder behind. The model is backed up after every epoch in `backup/`, so a killed or
    interrupted run continues with `resume`.

    Args:
        config: what to train and where to write it.
        command: the command line, recorded in the manifest.
        verbose: Keras' fit verbosity (0 silent, 1 progress bars, 2 one line per epoch).
        resume: continue the run folder `config.out` instead of starting a new one.

    Returns:
        The run folder and test metrics.

    Raises:
        DataError: the data cannot be read. RunError: the run folder cannot be written.
        TrainingInterrupted: Ctrl-C; the run is marked "interrupted" and can be resumed.
    """
    started = time.perf_counter()
    recipe = config.recipe()
    context = distributed.setup(config, resume)
    run_dir = Path(config.out) if resume else new_run_dir(context.out(config.out), config.preset)
    with _removed_on_error(run_dir, enabled=not resume):
        train_all, test, train_set, validation = load_data(config)
        train_set, val_set = context.shard(train_set), context.shard(validation)
        seed_everything(config)
        model = create_model(
            config.preset, train_set.image_shape, train_set.num_classes, recipe.precision
        )
        if recipe.calibrate:
            softmax_head(model)  # fails here, before training, if there is nothing to scale
        _check_time_budget(recipe, context)
        batch_size = context.local_batch(recipe.batch_size)
    if resume:
        run = _resume_run(run_dir, config, command, train_all, test)
    else:
        run = _begin_run(run_dir, config, command, train_all, test)
    context.record(run)

    steps = epoch_steps(len(train_set), batch_size)
    rate = learning_rate(recipe, steps)
    compile_for_training(model, recipe, rate, metrics=["accuracy"])
    initial_epoch = restore_backup(model, run_dir / BACKUP_DIR) if resume else 0
    train_batches, _ = batches(train_set, batch_size, config.seed, first_epoch=initial_epoch)
    val_batches, val_steps = batches(val_set, batch_size) if val_set is not None else (None, None)
    last = trim_history(run_dir / "history.csv", initial_epoch) if resume else {}
    elapsed = float(last.get("elapsed_seconds") or 0.0)
    planned = int(last["planned_epochs"]) if last.get("planned_epochs") else None
    callbacks = _callbacks(
        run_dir, recipe, rate, steps, val_set is not None, resume, elapsed=elapsed, planned=planned
    )
    fit_started = time.perf_counter()
    epochs = initial_epoch
    # Everything up to "complete" is recorded: a run stopped after its last epoch (in
    # calibration, the test pass or the report) resumes there, skipping `fit`.
    with _recording_status(run):
        if initial_epoch < (planned or recipe.epochs):
            with StopOnInterrupt() as stop:
                history = model.fit(
                    train_batches,
                    steps_per_epoch=steps,
                    validation_data=val_batches,
                    validation_steps=val_steps,
                    epochs=recipe.epochs,
                    initial_epoch=initial_epoch,
                    callbacks=[*callbacks, stop],
                    verbose=verbose,
                    shuffle=False,  # `train_batches` shuffles
                )
            epochs += len(history.epoch)
        # Counting the epochs earlier processes of a resumed run kept, as history.csv does.
        fit_seconds = elapsed + time.perf_counter() - fit_started
        best = {}
        if recipe.restore_best and val_set is not None:
            best["best_epoch"] = load_best(model, run_dir / BACKUP_DIR)
        model = portable_model(context.finish(model))
        tta = TestTimeAugmentation(recipe.flip_tta, recipe.shift_tta)
        calibrated = {}
        if recipe.calibrate and validation is not None:
            calibrated["temperature"] = calibrate(model, validation, tta)
        _save_model(model, run_dir)
        probabilities = predict_proba(model, test.x, tta=tta)
        metrics = test_metrics(test, probabilities) | best | calibrated
        wall = elapsed + time.perf_counter() - started
        metrics |= {"epochs": epochs, "fit_seconds": fit_seconds, "wall_seconds": wall}
        run.write_json("metrics.json", metrics)
        if context.is_chief:
            # The report draws the learning curves too; it reuses the test predictions above.
            write_report(run_dir, model, train_all, test, probabilities=probabilities)
        manifest = run.read_json("manifest.json") | {
            "status": "complete",
            "timings": {"fit_seconds": fit_seconds, "wall_seconds": wall},
        }
        run.write_json("manifest.json", manifest)
    shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)
    return TrainResult(run_dir, metrics["test_loss"], metrics["test_accuracy"], wall)


def load_data(config: TrainConfig) -> tuple[Dataset, Dataset, Dataset, Dataset | None]:
    """The training data (after `limit`), the test set, and the train/validation split."""
    train_all, test = load_train_test(
        config.train,
        config.test,
        config.format,
        config.label_column,
        config.class_names,
        config.data_dir,
    )
    if config.limit:
        train_all = train_all.take(slice(0, config.limit))
    recipe = config.recipe()
    train_set, val_set = split(train_all, recipe.val_split, config.seed, config.stratify)
    return train_all, test, train_set, val_set


def _check_time_budget(recipe: Recipe, context: distributed.Context) -> None:
    if recipe.time_budget and context.num_processes > 1:
        raise ConfigError(
            "time_budget works in one process: each process would plan its own epochs. "
            "Set --time-budget 0 and --epochs instead."
        )


def _callbacks(
    run_dir: Path,
    recipe: Recipe,
    rate,
    steps_per_epoch: int,
    validating: bool,
    resume: bool,
    *,
    elapsed: float,
    planned: int | None,
) -> list[keras.callbacks.Callback]:
    """The callbacks of `fit`. A resumed run continues its clock and time budget plan from the
    `elapsed` seconds and `planned` epochs of its history."""
    callbacks = [EpochTimer(elapsed)]
    if recipe.time_budget:
        schedule = rate if isinstance(rate, keras.optimizers.schedules.CosineDecay) else None
        callbacks.append(
            TimeBudget(
                recipe.time_budget, recipe.epochs, steps_per_epoch, schedule, elapsed, planned
            )
        )
    # After the clocks: it writes the times and the plan they add to the logs.
    callbacks.append(keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=resume))
    if recipe.restore_best and validating:
        callbacks.append(BestWeights(run_dir / BACKUP_DIR))
    callbacks.append(EpochBackup(run_dir / BACKUP_DIR))  # after CSVLogger; see EpochBackup
    return callbacks


def _save_model(model: keras.Model, run_dir: Path) -> None:
    tmp = run_dir / f".tmp-{MODEL_FILE}"
    model.save(tmp)
    os.replace(tmp, run_dir / MODEL_FILE)


def _begin_run(run_dir: Path, config: TrainConfig, command, train: Dataset, test: Dataset) -> Run:
    settings = config.resolved()
    for key in ("train", "test", "data_dir"):  # absolute, for use from any directory
        if settings[key]:
            settings[key] = os.path.abspath(settings[key])
    write_yaml(run_dir / "config.yaml", settings)
    run = Run(run_dir)
    run.write_json(
        "manifest.json",
        {
            "status": "running",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "preset": config.preset,
            "precision": resolve_precision(config.recipe().precision),
            "seed": config.seed,
            "command": command,
            "data": {
                "train": {
                    "source": train.source,
                    "examples": len(train),
                    "sha256": train.checksum(),
                },
                "test": {"source": test.source, "examples": len(test), "sha256": test.checksum()},
                "class_names": list(train.class_names),
                "image_shape": list(train.image_shape),
                "background_is_light": train.background_is_light(),
            },
            "process": _process(),
            "versions": versions(),
            "machine": machine(),
        },
    )
    return run


def _resume_run(run_dir: Path, config: TrainConfig, command, train: Dataset, test: Dataset) -> Run:
    """Marks an unfinished run as running again, after checking it can and should resume."""
    run = Run(run_dir)
    manifest = run.read_json("manifest.json")
    if not manifest:  # killed before the manifest was written: start it again
        return _begin_run(run_dir, config, command, train, test)
    status = run.status()
    if status == "complete":
        raise RunError(f"{run_dir}: the run is complete; there is nothing to resume.")
    if status == "running":
        pid = manifest.get("process", {}).get("pid")
        raise RunError(f"{run_dir}: still being trained by process {pid}; stop it first.")
    recorded = manifest.get("data", {}).get("train", {}).get("sha256")
    if recorded and recorded != train.checksum():
        raise RunError(
            f"{run_dir}: the training data ({train.source}) changed since the run began; "
            "start a new run instead."
        )
    check_free_space(run_dir)
    resumes = manifest.get("resumes", []) + [
        {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command}
    ]
    run.write_json(
        "manifest.json",
        manifest | {"status": "running", "process": _process(), "resumes": resumes},
    )
    return run


@contextlib.contextmanager
def _removed_on_error(run_dir: Path, enabled: bool = True):
    """Removes the (still empty) new run folder if the block fails, so no partial run remains."""
    try:
        yield
    except BaseException:
        if enabled:
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise


@contextlib.contextmanager
def _recording_status(run: Run):
    """Marks the manifest "interrupted" on Ctrl-C and "failed" on an error, then re-raises."""
    try:
        yield
    except KeyboardInterrupt:
        _set_status(run, "interrupted")
        raise TrainingInterrupted(
            f"interrupted; resume with: convnet train --resume {run.path}"
        ) from None
    except BaseException as error:
        _set_status(run, "failed", error=f"{type(error).__name__}: {error}")
        raise


def _set_status(run: Run, status: str, **extra) -> None:
    with contextlib.suppress(OSError):
        run.write_json("manifest.json", run.read_json("manifest.json") | {"status": status} | extra)


def seed_everything(config: TrainConfig) -> None:
    """Seeds Python, NumPy and the backend; with `deterministic`, also makes TF ops repeatable."""
    keras.utils.set_random_seed(config.seed)
    if config.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def _process() -> dict:
    return {"pid": os.getpid(), "hostname": platform.node()}


def machine() -> dict:
    """What this machine is, for the manifest and the benchmarks: training time depends on it
    more than on anything else (an epoch of `best` takes 23 s to 220 s on 2 cores, by CPU:
    docs/benchmarks.md)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    models = [
        line.partition(":")[2].strip() for line in cpuinfo.splitlines() if "model name" in line
    ]
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu": models[0] if models else platform.processor(),
        "cpus": os.cpu_count(),
        "auto_precision": resolve_precision("auto"),
        "hostname": platform.node(),
    }


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0], "keras_backend": keras.backend.backend()}
    for package in ("convnet", "keras", "tensorflow-cpu", "tensorflow", "jax", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found
