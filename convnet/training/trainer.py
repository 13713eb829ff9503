"""Compile, fit, evaluate, and write the run folder."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from convnet.config import TrainConfig
from convnet.data import load_train_test, split
from convnet.data.dataset import Dataset
from convnet.evaluation import evaluate
from convnet.models.registry import Recipe, get_preset
from convnet.reports.plots import learning_curves, read_history
from convnet.runs import MODEL_FILE, Run, new_run_dir, write_yaml
from convnet.training.callbacks import EpochTimer


@dataclass
class TrainResult:
    run: Path
    test_loss: float
    test_accuracy: float
    wall_seconds: float


def make_optimizer(recipe: Recipe, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The recipe's optimizer, with its learning-rate schedule stepped once per batch."""
    config = {}
    if recipe.learning_rate is not None:
        config["learning_rate"] = recipe.learning_rate
    if recipe.schedule == "cosine":
        peak = recipe.learning_rate or 1e-3
        warmup = int(recipe.warmup_epochs * steps_per_epoch)
        config["learning_rate"] = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else peak,
            decay_steps=max(recipe.epochs * steps_per_epoch - warmup, 1),
            warmup_target=peak if warmup else None,
            warmup_steps=warmup,
        )
    elif recipe.schedule != "constant":
        raise ValueError(f"schedule must be 'constant' or 'cosine'. Received: {recipe.schedule!r}.")
    if recipe.weight_decay:
        config["weight_decay"] = recipe.weight_decay
    return keras.optimizers.get({"class_name": recipe.optimizer, "config": config})


def one_hot(data: Dataset) -> np.ndarray:
    return keras.utils.to_categorical(data.y, data.num_classes)


def train(
    config: TrainConfig, command: list[str] | None = None, verbose: int | str = "auto"
) -> TrainResult:
    """Trains `config.preset` and writes a complete run folder.

    Args:
        config: what to train and where to write it.
        command: the command line, recorded in the manifest.
        verbose: Keras' fit verbosity (0 silent, 1 progress bars, 2 one line per epoch).

    Returns:
        The run folder and test metrics.

    Raises:
        DataError: the data cannot be read. RunError: the run folder cannot be written.
    """
    started = time.perf_counter()
    recipe = config.recipe()
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
    train_set, val_set = split(train_all, recipe.val_split, config.seed, config.stratify)
    run_dir = new_run_dir(config.out, config.preset)
    run = _begin_run(run_dir, config, command, train_all, test)

    keras.utils.set_random_seed(config.seed)
    model = get_preset(config.preset).build(train_set.image_shape, train_set.num_classes)
    steps = int(np.ceil(len(train_set) / recipe.batch_size))
    model.compile(
        optimizer=make_optimizer(recipe, steps),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=["accuracy"],
    )
    callbacks = [EpochTimer(), keras.callbacks.CSVLogger(str(run_dir / "history.csv"))]
    if recipe.restore_best and val_set is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=recipe.epochs, restore_best_weights=True
            )
        )
    fit_started = time.perf_counter()
    model.fit(
        train_set.x,
        one_hot(train_set),
        validation_data=(val_set.x, one_hot(val_set)) if val_set is not None else None,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        callbacks=callbacks,
        verbose=verbose,
    )
    fit_seconds = time.perf_counter() - fit_started
    _save_model(model, run_dir)
    metrics = evaluate(model, test, flip_tta=recipe.flip_tta)
    wall = time.perf_counter() - started
    metrics |= {"fit_seconds": fit_seconds, "wall_seconds": wall}
    run.write_json("metrics.json", metrics)
    learning_curves(
        read_history(run_dir / "history.csv"), run_dir / "plots" / "learning_curves.png"
    )
    manifest = run.read_json("manifest.json") | {
        "status": "complete",
        "timings": {"fit_seconds": fit_seconds, "wall_seconds": wall},
    }
    run.write_json("manifest.json", manifest)
    return TrainResult(run_dir, metrics["test_loss"], metrics["test_accuracy"], wall)


def _save_model(model: keras.Model, run_dir: Path) -> None:
    tmp = run_dir / f".tmp-{MODEL_FILE}"
    model.save(tmp)
    os.replace(tmp, run_dir / MODEL_FILE)


def _begin_run(run_dir: Path, config: TrainConfig, command, train: Dataset, test: Dataset) -> Run:
    write_yaml(run_dir / "config.yaml", config.resolved())
    run = Run(run_dir)
    run.write_json(
        "manifest.json",
        {
            "status": "running",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "preset": config.preset,
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
            "versions": _versions(),
            "machine": {
                "platform": platform.platform(),
                "processor": platform.machine(),
                "cpus": os.cpu_count(),
                "hostname": platform.node(),
            },
        },
    )
    return run


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0], "keras_backend": keras.backend.backend()}
    for package in ("convnet", "keras", "tensorflow-cpu", "tensorflow", "jax", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found
