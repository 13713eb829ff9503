"""The entry points the CLI and the server call. They return results and never exit.

Each reads and checks its input with the core (config, data, run folders) first, then imports
the framework it needs: a refusal of bad input never waits for Keras.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import ipaddress
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from convnet import framework
from convnet.config import TrainConfig, check_lr_range, load_config
from convnet.errors import ConfigError, DataError
from convnet.models.registry import Preset, check_image_size, get_preset, list_presets
from convnet.reports.html import HtmlPage
from convnet.run import Run
from convnet.runs import RUNS_ROOT, check_new_run_dir, claimed, default_run_dir, list_runs
from convnet.runs import Run as RunFolder

# Keras writes a SavedModel only through TensorFlow, and ONNX on JAX needs jax2onnx, which cannot
# convert max-pooling; a run's model.keras is the same on every backend, so exports (and the
# ONNX engine, which exports) load it on TensorFlow.
EXPORT_BACKEND = "tensorflow"
DATA_ARGUMENTS = ("train", "test")  # `train` takes data in memory (a DataFrame, arrays) for these


def train(
    config: TrainConfig | str | Path | None = None,
    *,
    command: list[str] | None = None,
    verbose: int | str = "auto",
    resume: str | Path | None = None,
    callbacks: list | tuple = (),
    tensorboard: str | None = None,
    mlflow: str | None = None,
    mlflow_register: str | None = None,
    **settings,
):
    """Trains a preset and writes a run folder.

    Args:
        config: a TrainConfig, or the path of a YAML config file, or None for the defaults.
        command: the command line to record in the manifest.
        verbose: Keras' fit verbosity.
        resume: an interrupted run folder to continue from its last completed epoch, with its own
            `config.yaml`; `config` and `settings` must then be empty.
        callbacks: Keras callbacks of your own, run in `fit` after convnet's (which write the
            history, backups and timings): logging, pruning, stopping.
        tensorboard: a folder for TensorBoard's logs, which get a subfolder named after the run;
            "" for RUN/tensorboard; None (the default) for none.
        mlflow: an MLflow tracking URI to log the run to (its config, each epoch's metrics, the
            test metrics, report.html, config.yaml and model.keras); "" for `sqlite:///mlruns.db`
            in the current directory; None (the default) for none. Not part of the run's config.
            The model is logged too, as the MLflow model `model` (README, Tracking).
        mlflow_register: a name to register that MLflow model under in MLflow's model registry,
            as a new version; None (the default) registers nothing. Needs `mlflow`.
        **settings: any config or recipe key (`preset="fast"`, `epochs=3`, `train="a.csv"`, ...),
            applied over `config`. `train` and `test` also take data in hand: a pandas or
            polars DataFrame in the Kaggle layout (a label column, by `label_column` or named
            label, class, target or y, and H*W or H*W*3 pixel columns), or an (x, y) tuple of
            arrays (`convnet.data.memory.read_memory`). The run keeps such data in its folder
            (`data/train.npz`, `data/test.npz`), so it resumes, evaluates and reports as a run
            trained from files.

    Returns:
        The `convnet.Run`: its folder, test loss and accuracy, model, `predict`, report.

    Example:
        >>> run = convnet.train(preset="fast", train=(x_train, y_train), epochs=5)
        >>> run.test_accuracy

    Raises:
        ConfigError: invalid settings, or settings given with `resume`; MLflow or TensorBoard
            asked for but not installed (`pip install 'convnet[track]'`), MLflow unreachable,
            `mlflow_register` without `mlflow` or a name the registry refuses, before training;
            the model not logged to MLflow, after it. DataError: the data cannot be read.
            RunError: the run folder cannot be written, or not resumed.
    """
    started = time.perf_counter()
    if mlflow_register is not None and mlflow is None:
        raise ConfigError(
            "--mlflow-register registers the model that --mlflow logs; add --mlflow (in Python, "
            f"mlflow=). Received: --mlflow-register {mlflow_register!r} without --mlflow."
        )
    trackers = {"tensorboard": tensorboard, "mlflow": mlflow}
    if resume and tensorboard is None and mlflow is None:
        return _resume(resume, config, settings, command, verbose, started, callbacks)
    if resume:
        recorded = RunFolder(resume).config()  # the trackers import Keras: on the run's backend
        framework.load(recorded.backend, recorded.devices)
        from convnet.training import tracking

        def resume_with(extra: list):
            everything = [*callbacks, *extra]
            return _resume(resume, config, settings, command, verbose, started, everything)

        return tracking.tracked(
            resume, resume_with, **trackers, resume=True, register=mlflow_register
        )
    _check_callbacks(callbacks)
    memory = {key: settings.pop(key) for key in DATA_ARGUMENTS if _in_memory(settings.get(key))}
    config = _config(config, settings)
    config = _keeping(config, memory) if memory else config
    check_new_run_dir(config.out)  # before the data is read
    from convnet.data import fitted_to_data, load_training_data, read_given  # NumPy, polars

    data = load_training_data(config, read_given(config, memory), keep=True)
    config = fitted_to_data(config, data)
    # Recorded in config.yaml: evaluate, predict, report and serve use it again.
    config = dataclasses.replace(config, backend=framework.load(config.backend, config.devices))
    from convnet.training import tracking, trainer

    config = tracking.with_run_folder(config, **trackers)

    def train_with(extra: list):
        everything = [*callbacks, *extra]
        return trainer.train(
            config, data, command=command, verbose=verbose, started=started, callbacks=everything
        )

    result = tracking.tracked(config.out, train_with, **trackers, register=mlflow_register)
    return Run(result.run, result.is_chief)


def _check_callbacks(callbacks) -> None:
    """Refuses, before anything is read or written, callbacks that are not Keras callbacks.

    Raises:
        ConfigError: naming the first one's index and type.
    """
    hooks = ("set_model", "set_params", "on_train_begin", "on_epoch_end")
    for index, callback in enumerate(callbacks):
        if isinstance(callback, type) or not all(hasattr(callback, h) for h in hooks):
            raise ConfigError(
                f"callbacks[{index}] is a {type(callback).__name__}; expected a "
                "keras.callbacks.Callback instance."
            )


def _in_memory(value) -> bool:
    """Whether a `train=` or `test=` value is data in hand (a DataFrame, arrays), not a path."""
    return value is not None and not isinstance(value, str | os.PathLike)


def _keeping(config: TrainConfig, memory: dict) -> TrainConfig:
    """`config` with its run folder fixed, and the data given in Python (`memory`, by argument)
    named where the run keeps it, `RUN/data/ARGUMENT.npz`, so that it reads back like a file.

    Raises:
        ConfigError: `format` given for a file beside data in memory: the kept data is NPZ.
    """
    if config.format and len(memory) < len(DATA_ARGUMENTS) and config.format != "npz":
        raise ConfigError(
            f"format {config.format!r} would apply to the data kept from memory too; leave "
            "format unset when passing data in memory beside a file."
        )
    out = Path(config.out or default_run_dir(config.preset))
    kept = {argument: str(out / "data" / f"{argument}.npz") for argument in memory}
    return dataclasses.replace(config, out=str(out), **kept)


def _resume(run_dir, config, settings: dict, command, verbose, started: float, callbacks=()):
    if config is not None or settings:
        given = ", ".join(["config"] * (config is not None) + sorted(settings))
        raise ConfigError(
            f"--resume continues {run_dir} with its own config.yaml; drop the other "
            f"settings (received: {given})."
        )
    run = RunFolder(run_dir)
    with claimed(run.path):  # held until the run ends, so no other process trains it meanwhile
        run.check_resumable()
        config = run.config()
        from convnet.data import load_training_data  # the readers: NumPy and polars

        data = load_training_data(config)
        run.check_same_data(data.full)
        framework.load(config.backend, config.devices)
        from convnet.training import trainer

        result = trainer.resume(
            run, data, command=command, verbose=verbose, started=started, callbacks=callbacks
        )
        return Run(result.run, result.is_chief)


def _config(config: TrainConfig | str | Path | None, settings: dict) -> TrainConfig:
    """`config` (an object, a YAML file or None for the defaults) with `settings` applied."""
    if not isinstance(config, TrainConfig):
        return load_config(config, settings)
    return load_config(None, config.resolved() | settings) if settings else config


def evaluate(
    run: str | Path, test: str | None = None, unsafe: bool = False, tta: bool = True
) -> dict:
    """Test loss and accuracy of a run's model, on its own test set or on `test`.

    The result is saved as the run's `metrics.json` when it is the run's own test set, scored
    as the run scores it. `tta=False` scores one pass per image, ignoring the run's test-time
    augmentation (the mirror with `flip`, `shift_tta`); `unsafe` loads a model that carries
    Python code (Lambda layers), only for trusted files.

    Returns:
        {"test_loss", "test_accuracy", "test_examples", "test_data", "tta_views"}.
    """
    run = RunFolder(run)
    config = run.config()
    run.require_model()
    test_set = run.load_test(test)
    framework.load_for_run(config.backend)
    from convnet.evaluation import TestTimeAugmentation
    from convnet.evaluation import evaluate as score
    from convnet.models.factory import load_model

    model = load_model(run.model_file, safe_mode=not unsafe)
    run.check_outputs(model.output_shape[-1])
    views = TestTimeAugmentation.of(config.recipe(), enabled=tta)
    metrics = score(model, test_set, tta=views) | {"tta_views": views.count}
    if test is None and tta:
        run.write_json("metrics.json", run.read_json("metrics.json") | metrics)
    return metrics


def predict(
    run: str | Path,
    files: str | Path | list[str | Path],
    top_k: int = 3,
    unsafe: bool = False,
    tta: bool = True,
) -> list[dict]:
    """Classifies image, .npy or CSV files, or folders of images, with a run's model, at once.

    For a few inputs: every one is read into memory first, and any unreadable file stops it.
    `predict_files` streams any number, and goes on past unreadable files.
    `tta=False` makes one model pass per image, ignoring the run's test-time augmentation;
    `unsafe` loads a model that carries Python code (Lambda layers), only for trusted files.
    `files` is a path or a list of them; for arrays or PIL images in hand, use
    `convnet.load(run).predict(x)`.

    Returns:
        One dict per input: {"file", "class", "probability", "top": [{"class", "probability"}]}.

    Raises:
        ConfigError: `top_k` below 1. DataError: an input file cannot be read.
    """
    from convnet.inputs import load_inputs

    files = [files] if isinstance(files, str | os.PathLike) else files  # a path, not its letters
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1. Received: {top_k}.")
    run, reading = _prediction_inputs(run)
    shape = reading.pop("image_shape", None)
    if shape:  # the inputs are checked before the framework is imported
        names, x = load_inputs(files, shape, **reading)
    model, views, class_names = _predictor(run, unsafe, tta)
    if not shape:
        names, x = load_inputs(files, model.input_shape[1:], **reading)
    from convnet.evaluation import predict_proba
    from convnet.predictions import top_classes

    probabilities = predict_proba(model, x, tta=views)
    return [
        top_classes(name, p, class_names, top_k)
        for name, p in zip(names, probabilities, strict=True)
    ]


def predict_files(
    run: str | Path,
    paths: str | Path | list[str | Path],
    out: str | Path | None = None,
    format: str | None = None,
    top_k: int = 3,
    batch_size: int = 1024,
    unsafe: bool = False,
    tta: bool = True,
    on_row: Callable[[dict], None] | None = None,
    verbose: int = 1,
) -> dict:
    """Classifies any number of files, streaming: rows are written as each batch finishes.

    Memory holds one batch of inputs (and one `.npy` or CSV file at a time), whatever the count:
    see docs/benchmarks.md, "Batch prediction". A file that cannot be read gets a row with its
    reason in `error` and the rest go on.

    Args:
        run: the run folder.
        paths: image, .npy or CSV files, and folders walked for image files
            (`convnet.inputs.expand_paths`); for `format="kaggle"`, one test CSV.
        out: the file to write, atomically (`convnet.predictions`); None writes to stdout.
        format: "csv", "jsonl" or "kaggle" (ImageId,Label); None takes `out`'s extension, and
            without `out` writes nothing (`on_row` sees every row).
        top_k: classes per row (CSV columns class_2, ... ; JSON "top").
        batch_size: inputs read and classified together.
        unsafe, tta: as for `predict`.
        on_row: called with each row, after it is written (the CLI lists failures).
        verbose: 1 shows a progress bar of the inputs done, in a notebook or on a terminal's
            stderr (`convnet.progress.bar`); 0 none. Defaults to 1.

    Returns:
        {"out", "format", "rows", "failed": [{"file", "error"}], "skipped": [{"file",
        "reason"} of the other files found in folders], "stream": whether the rows went to a
        stream (stdout, `out` a FIFO or a character device) rather than a file}. File names
        that are not UTF-8 are given with their bytes escaped (`convnet.inputs.display_name`).

    Raises:
        ConfigError: `top_k` or `batch_size` below 1, an unknown format, an `out` that cannot be
            written, kaggle for inputs other than one CSV. DataError: a path is missing or of an
            unsupported type, or (kaggle) the test CSV cannot be read. All before any row.
    """
    from convnet.data.folder import IMAGE_SUFFIXES
    from convnet.inputs import display_name, expand_paths, skip_reason
    from convnet.predictions import PredictionWriter, output_format
    from convnet.progress import bar

    paths = [paths] if isinstance(paths, str | os.PathLike) else paths

    if top_k < 1 or batch_size < 1:
        raise ConfigError(f"top_k and batch_size must be >= 1. Received: {top_k}, {batch_size}.")
    format = output_format(out, format)
    files, skipped = expand_paths(paths)
    if not files:
        raise DataError(
            f"{', '.join(map(str, paths))}: no image files; expected image, .npy or .csv files "
            "or folders of images."
        )
    if format == "kaggle" and (len(files) != 1 or files[0].suffix.lower() != ".csv"):
        named = ", ".join(map(str, files[:3])) + (" and more" if len(files) > 3 else "")
        raise ConfigError(
            "--format kaggle writes ImageId,Label for the rows of one test CSV; received "
            f"{len(files)} files: {named or 'none'}."
        )
    run, reading = _prediction_inputs(run)
    class_names = run.read_json("manifest.json").get("data", {}).get("class_names")
    failed, unread = [], []
    # Opened first, so an `out` that cannot be written is refused before the model loads.
    images = all(path.suffix.lower() in IMAGE_SUFFIXES for path in files)  # an input each
    shown = bar(len(files) if images else None, "predict", verbose, unit="input")
    with PredictionWriter(out, format, top_k, class_names) as writer, shown:
        # Loaded (with its framework) when the first readable input needs it, so inputs that
        # cannot be read are refused without paying for Keras.
        predictor = functools.cache(lambda: _predictor(run, unsafe, tta))
        if "image_shape" not in reading:  # older runs record it only in the model
            reading["image_shape"] = predictor()[0].input_shape[1:]
        for row in _stream(predictor, files, reading, class_names, top_k, batch_size):
            shown.update(1)
            if "error" in row:
                if format == "kaggle":
                    raise DataError(f"{row['file']}: {row['error']}")
                failed.append(row)
                if not writer.rows:  # held back until an input reads: see below
                    unread.append(row)
                    continue
            for each in [*unread, row]:
                writer.write(each)
                if on_row:
                    on_row(each)
            unread = []
        if unread:  # not one input could be read: bad input, refused like any other
            more = len(unread) - 1
            raise DataError(
                f"{unread[0]['file']}: {unread[0]['error']}"
                + (f" ({more} more inputs could not be read either)" if more else "")
            )
    return {
        "out": str(out) if out else None,
        "format": format,
        "rows": writer.rows,
        "failed": failed,
        "skipped": [{"file": display_name(p), "reason": skip_reason(p)} for p in skipped],
        "stream": writer.stream,
    }


def _stream(predictor, files, reading, class_names, top_k, batch_size):
    """Rows for `files`, in order, a batch at a time (see `predict_files`); `predictor()`
    gives the run's (model, views, class names)."""
    import itertools

    import numpy as np

    from convnet.inputs import iter_inputs
    from convnet.predictions import top_classes

    items = iter_inputs(files, reading.pop("image_shape"), **reading)
    while batch := list(itertools.islice(items, batch_size)):
        pixels = [x for _, x, _ in batch if x is not None]
        if pixels:  # the first loads the model; scikit-learn comes with evaluation
            from convnet.evaluation import predict_proba

            model, views, _ = predictor()
            probabilities = iter(predict_proba(model, np.stack(pixels), tta=views))
        for name, x, error in batch:
            if x is None:
                yield {"file": name, "error": error}
            else:
                yield top_classes(name, next(probabilities), class_names, top_k)


def _prediction_inputs(run: str | Path) -> tuple[RunFolder, dict]:
    """The run, and how to read inputs for its model (`convnet.runs.Run.input_reading`)."""
    run = RunFolder(run)
    run.config()
    run.require_model()
    return run, run.input_reading()


def _predictor(run: RunFolder, unsafe: bool, tta: bool):
    """(model, test-time views, class names) of a run."""
    config = run.config()
    framework.load_for_run(config.backend)
    from convnet.evaluation import TestTimeAugmentation
    from convnet.models.factory import load_model

    model = load_model(run.model_file, safe_mode=not unsafe)
    run.check_outputs(model.output_shape[-1])
    views = TestTimeAugmentation.of(config.recipe(), enabled=tta)
    return model, views, run.read_json("manifest.json").get("data", {}).get("class_names")


def create_model(
    preset: str, input_shape=(28, 28, 1), num_classes: int = 10, precision: str = "float32"
):
    """A preset's Keras model for raw uint8 images (see `convnet.models.factory.create_model`)."""
    get_preset(preset)  # an unknown name is refused before Keras is imported
    _check_model_shape(preset, input_shape, num_classes)
    framework.load()
    from convnet.models.factory import create_model as build

    return build(preset, input_shape, num_classes, precision)


def _check_model_shape(preset: str, input_shape, num_classes: int) -> None:
    """Refuses what no model can be built for: an input shape that is not (H, W, C) images as
    large as the preset takes, or fewer than two classes.

    Raises:
        ConfigError: naming the argument and what was expected.
    """
    shape = tuple(input_shape) if isinstance(input_shape, list | tuple) else None
    whole = shape and len(shape) == 3 and all(_is_count(v) for v in shape)
    if not whole:
        raise ConfigError(
            f"input_shape must be (height, width, channels), each an integer >= 1. "
            f"Received: {input_shape!r}."
        )
    try:
        check_image_size(preset, shape, "input_shape")
    except DataError as error:
        raise ConfigError(str(error)) from None
    if not _is_count(num_classes) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer >= 2. Received: {num_classes!r}.")


def _is_count(value) -> bool:
    """Whether `value` is an integer >= 1 (NumPy's included, bool not)."""
    return not isinstance(value, bool) and hasattr(value, "__index__") and value >= 1


def presets(pattern: str = "*") -> list[Preset]:
    """The registered presets whose names match a shell-style pattern, by name."""
    return [get_preset(name) for name in list_presets(pattern)]


def summary(preset: str, input_shape=(28, 28, 1), num_classes: int = 10) -> str:
    """The Keras summary of a preset's model."""
    model = create_model(preset, input_shape, num_classes)
    lines = io.StringIO()
    model.summary(print_fn=lambda line, **_: lines.write(line + "\n"))
    return lines.getvalue()


def runs(root: str | Path = RUNS_ROOT) -> list[dict]:
    """The run folders under `root`: run, status, preset, test_accuracy, started (oldest first)."""
    return list_runs(root)


def export_csv(out_dir: str | Path, data_dir: str | Path | None = None) -> list[Path]:
    """Writes Fashion-MNIST as the Kaggle CSVs the seed reads; returns their paths."""
    from convnet.data.kaggle import export_fashion_mnist_csv

    return export_fashion_mnist_csv(out_dir, data_dir)


def fetch(
    name: str = "fashion-mnist", data_dir: str | Path | None = None, progress: bool = True
) -> Path:
    """Makes sure a dataset is on this machine, checked against its published checksums, and
    returns the folder that `train=name` reads (docs/data.md, Datasets by name).

    Args:
        name: "fashion-mnist", "mnist", "kmnist", "emnist-letters", or "quickdraw:CLASS,CLASS".
        data_dir: the folder to keep it in; defaults to `~/.cache/convnet/NAME`.
        progress: show a progress bar while downloading.

    Raises:
        ConfigError: an unknown name. DataError: a download failed or a file is not the one
            published.
    """
    from convnet.data.catalogue import fetch_dataset

    return fetch_dataset(name, data_dir, progress)


def report(run: str | Path) -> HtmlPage:
    """Writes a run's plots (`RUN/plots/`) and its self-contained `RUN/report.html`; returns it."""
    found = RunFolder(run)
    found.require_model()
    framework.load_for_run(found.config().backend)
    from convnet.reports.report import write_report

    return HtmlPage(write_report(run))


def compare(runs: list[str | Path | Run], out: str | Path = "compare.html") -> HtmlPage:
    """Writes one HTML page overlaying the runs' learning curves and tabulating their metrics;
    a notebook shows it inline.

    Args:
        runs: run folders, or the `Run`s that `train` and `load` return.
        out: the page to write. Defaults to `compare.html`.
    """
    from convnet.reports.report import write_compare

    folders = [run.path if isinstance(run, Run) else run for run in runs]
    return HtmlPage(write_compare(folders, out))


def lr_find(
    config: TrainConfig | str | Path | None = None,
    *,
    plot: str | Path = "lr_find.png",
    steps: int = 200,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    **settings,
) -> dict:
    """Runs a learning-rate range test and plots loss against learning rate.

    Args:
        config: a TrainConfig, a YAML config file, or None for the defaults.
        plot: where to write the PNG (defaults to `lr_find.png`).
        steps: batches to run at most (defaults to 200).
        min_lr: the first learning rate (defaults to 1e-7).
        max_lr: the last learning rate (defaults to 10).
        **settings: config or recipe keys applied over `config`, as for `train` (`train` and
            `test` take data in hand too).

    Returns:
        The result of `convnet.training.lr_find.lr_range_test`, plus "plot": the PNG's path.
    """
    check_lr_range(steps, min_lr, max_lr)
    memory = {key: settings.pop(key) for key in DATA_ARGUMENTS if _in_memory(settings.get(key))}
    config = _config(config, settings)
    from convnet.data import fitted_to_data, load_training_data, read_given  # NumPy, polars

    data = load_training_data(config, read_given(config, memory))
    config = fitted_to_data(config, data)
    train_set = data.train  # the very examples `train` would fit on
    framework.load(config.backend)
    from convnet.reports.plots import lr_find_plot
    from convnet.training.lr_find import lr_range_test

    result = lr_range_test(config, train_set, steps=steps, min_lr=min_lr, max_lr=max_lr)
    return result | {"plot": lr_find_plot(result, plot)}


def tune(
    config: TrainConfig | str | Path | None = None,
    *,
    trials: int | None = None,
    space: str | Path | None = None,
    objectives: list[str] | tuple[str, ...] | None = None,
    time_budget: float | None = None,
    workers: int = 1,
    storage: str | None = None,
    study: str | None = None,
    pruner: str | None = None,
    heartbeat: int | None = None,
    out: str | Path | None = None,
    tensorboard: str | None = None,
    mlflow: str | None = None,
    verbose: int = 1,
    **settings,
):
    """Searches a preset's recipe with Optuna (TPE, and a pruner fed each epoch's validation
    metric); each trial is a run folder. Given the `out` of an earlier tune, continues it with
    its own settings (only `trials`, `time_budget`, `workers`, `heartbeat`, `storage` and the
    trackers may be given then).

    Args:
        config: the settings every trial starts from: a TrainConfig, a YAML file, or None.
        trials: finished trials (complete or pruned) to stop at; default 20, or a continued
            tune's own number.
        space: a YAML file replacing or adding to the preset's default space
            (`convnet.tuning.space`).
        objectives: "val_accuracy" (the default), "val_loss", "train_seconds" or "parameters";
            two give a Pareto front instead of one best trial (and no pruning).
        time_budget: seconds each worker searches for at most; None for no limit.
        workers: worker processes on this machine, sharing the study.
        storage: a database URL (`postgresql://...`) to share the study between machines;
            None for a SQLite file in the tune folder.
        study: the study's name in its storage; default "convnet".
        pruner: "median" (the default), "hyperband" or "none".
        heartbeat: seconds between a running trial's heartbeats; a trial silent for twice that
            (its worker killed) is failed and run again. Defaults to 30, or a continued
            tune's own.
        out: the tune folder; default `tunes/PRESET-YYYYmmdd-HHMMSS`.
        tensorboard: TensorBoard logs of each trial, as `train` takes it.
        mlflow: an MLflow tracking URI that each trial is logged to, as `train` takes it.
        verbose: 1 prints a line on stderr as each trial finishes, whichever worker ran it (its
            values, the best so far, the time left); 0 prints nothing. Defaults to 1.
        **settings: config or recipe keys applied over `config`, as for `train`; a recipe
            setting given here or in `config` is fixed for every trial, not searched.

    Returns:
        A TuneResult: folder, study, trials finished, the best trial(s), the best run's copy.

    Raises:
        ConfigError: invalid settings or space, a storage that cannot be opened, or a study
            made for another preset. DataError: the data cannot be read. TuneInterrupted:
            Ctrl-C; run it again to continue.
    """
    from convnet.tuning.plan import check_folder, continued_plan, new_plan

    _check_tune_numbers(trials, workers, time_budget, heartbeat)
    earlier = check_folder(Path(out)) if out else None
    given = {"config": config, "space": space, "objectives": objectives, "study": study}
    given |= {"pruner": pruner} | settings
    running = {"trials": trials, "time_budget": time_budget, "workers": workers}
    running |= {"heartbeat": heartbeat, "storage": storage}
    running |= {"tensorboard": tensorboard, "mlflow": mlflow}
    if earlier:
        plan = continued_plan(earlier, given, **running)
    else:
        config = _config(config, settings)
        folder = Path(out or Path("tunes") / f"{config.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
        plan = new_plan(folder, config, space, objectives, study, pruner, **running)
    url = plan.storage_url(storage)
    config = load_config(None, plan.config)
    from convnet.data import load_training_data  # the readers: NumPy, polars

    data = load_training_data(config)  # bad data is refused before anything is written
    framework.load(config.backend, config.devices)  # before tuning's modules import Keras
    from convnet.training.tracking import check_installed

    check_installed(plan.tensorboard, plan.mlflow)
    from convnet.tuning.tune import run

    return run(plan, url, data, verbose=verbose)


def _check_tune_numbers(trials, workers, time_budget, heartbeat) -> None:
    checks = [
        ("trials", trials, trials is None or trials >= 1, "an integer >= 1"),
        ("workers", workers, workers >= 1, "an integer >= 1"),
        ("time_budget", time_budget, time_budget is None or time_budget > 0, "> 0 seconds"),
        ("heartbeat", heartbeat, heartbeat is None or heartbeat >= 1, "an integer >= 1 (seconds)"),
    ]
    for name, value, ok, expected in checks:
        if not ok:
            raise ConfigError(f"{name} must be {expected}. Received: {value!r}.")


def serve(
    run: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    engine: str = "keras",
    *,
    header_timeout: float = 10.0,
    body_timeout: float = 30.0,
    max_connections: int = 256,
    workers: int = 1,
    api_key: str | None = None,
    insecure: bool = False,
    grpc_port: int | None = None,
) -> None:
    """Serves a run's model over HTTP (see `convnet.serving.create_app`) until interrupted.

    Bound to a loopback address, the server answers anyone; bound to any other address it
    requires `api_key` unless `insecure` says to serve everyone on purpose. The same holds for
    gRPC, which listens on the same host.

    Args:
        header_timeout: seconds for a request's headers to arrive; slower connections are
            closed. Defaults to 10.
        body_timeout: seconds for a request's whole body to arrive; slower ones get a 408.
            Defaults to 30.
        max_connections: open connections per worker past which requests get a 503.
            Defaults to 256.
        workers: processes serving requests on the same port, each with the model loaded.
            Defaults to 1.
        api_key: the key requests must carry (`Authorization: Bearer KEY` or `X-API-Key`).
            Defaults to $CONVNET_API_KEY, or none.
        insecure: serve a non-loopback address without a key. Defaults to False.
        grpc_port: also serve the Open Inference Protocol over gRPC on this port of `host`
            (0: any free port), in every worker (`convnet.serving.grpc`). Defaults to None: no
            gRPC.

    Raises:
        ConfigError: a timeout, `max_connections` or `workers` not above 0, an empty key or one
            with spaces at its ends, the address or the gRPC port is in use, or a non-loopback
            address without a key or `insecure`.
    """
    guards = dict(
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_connections=max_connections,
        workers=workers,
    )
    for name, value in guards.items():
        if not value > 0:  # also refuses NaN
            raise ConfigError(f"{name} must be above 0; received {value!r}.")
    if api_key is None:
        api_key = os.environ.get("CONVNET_API_KEY")
    if api_key is not None and not api_key.strip():
        raise ConfigError("the API key is empty; pass a non-empty --api-key or CONVNET_API_KEY.")
    if api_key is not None and api_key != api_key.strip():
        raise ConfigError(
            "the API key has spaces at its ends, which no request can carry; pass --api-key "
            "or CONVNET_API_KEY without them."
        )
    found = RunFolder(run)
    found.config()
    found.require_model()
    listening = _listen(host, port)  # before loading the model: a busy port fails at once
    if not (api_key or insecure or _is_loopback(listening)):
        listening.close()
        raise ConfigError(
            f"{host} is reachable from other machines: pass --api-key KEY (or set "
            "CONVNET_API_KEY), or --insecure to serve everyone without a key."
        )
    reserved = None  # the check above covers gRPC: it listens on the same host
    if grpc_port is not None:
        try:
            reserved, grpc_port = _reserve_grpc_port(host, grpc_port, workers)
        except ConfigError:
            listening.close()
            raise
    from convnet.serving.server import run_server

    port = listening.getsockname()[1]  # the port chosen, for --port 0
    processes = f" in {workers} processes" if workers > 1 else ""
    key = " (API key required)" if api_key else ""
    url = f"http://{host}:{port}/"
    grpc_address = None if grpc_port is None else _grpc_address(host, grpc_port)
    grpc = f" and gRPC at {grpc_address}" if grpc_address else ""
    print(f"convnet: serving {run} with {engine}{processes} at {url}{grpc}{key}", flush=True)
    factory = functools.partial(
        _serving_app,
        str(run),
        engine,
        body_timeout=body_timeout,
        api_key=api_key,
        grpc_address=grpc_address,
    )
    try:
        run_server(
            factory,
            listening,
            workers,
            header_timeout=header_timeout,
            max_connections=max_connections,
        )
    finally:
        if reserved is not None:
            reserved.close()


def _serving_app(
    run: str,
    engine: str,
    *,
    body_timeout: float,
    api_key: str | None,
    grpc_address: str | None = None,
):
    """The app of `serve`, made in the serving process (each worker's own, for --workers)."""
    if engine == "onnx":
        framework.load(EXPORT_BACKEND)
    else:
        framework.load_for_run(RunFolder(run).config().backend)
    from convnet.serving import create_app
    from convnet.serving.payloads import Limits

    return create_app(
        run,
        engine=engine,
        limits=Limits(body_timeout=body_timeout),
        api_key=api_key,
        grpc_address=grpc_address,
    )


def _is_loopback(listening: socket.socket) -> bool:
    """Whether the socket listens on a loopback address only (127.0.0.0/8, ::1)."""
    return ipaddress.ip_address(listening.getsockname()[0]).is_loopback


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on `host`:`port`.

    Raises:
        ConfigError: the address cannot be listened on (a port in use, an unknown host).
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as error:
        # create_server appends the address to strerror; getaddrinfo's errors have their own.
        gai = isinstance(error, socket.gaierror)
        reason = error.strerror if gai or not error.errno else os.strerror(error.errno)
        raise ConfigError(
            f"cannot listen on {host}:{port} ({reason}); pass another --port or --host."
        ) from None


def _reserve_grpc_port(host: str, port: int, workers: int) -> tuple[socket.socket | None, int]:
    """A socket bound, not listening, to `host`:`port` with SO_REUSEPORT, to hold while serving
    (None where there is no SO_REUSEPORT to share a port), and the port (chosen, for port 0).

    Each worker's gRPC server binds the same port beside it (gRPC sets SO_REUSEPORT on Linux) and
    the kernel shares the connections out among the listening ones; this one, never listening,
    gets none. It makes --grpc-port 0 one port for every worker, and a busy port fail at once,
    before any model loads: the port is first bound without SO_REUSEPORT, which any socket
    already on it refuses, another server's SO_REUSEPORT one too (it would share the port with
    this server's workers, each getting part of the other's calls).

    Raises:
        ConfigError: the port is not 0 to 65535, is in use, or `workers` > 1 where the
            processes cannot share it (not Linux).
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"the gRPC port must be 0 to 65535; received {port!r}.")
    shared = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")
    if workers > 1 and not shared:
        raise ConfigError("--grpc-port with --workers above 1 needs Linux (SO_REUSEPORT).")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            probe.bind((host, port))
            port = probe.getsockname()[1]
        if not shared:
            return None, port
        reserved = socket.socket(family, socket.SOCK_STREAM)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind((host, port))
        return reserved, port
    except OSError as error:
        gai = isinstance(error, socket.gaierror)
        reason = error.strerror if gai or not error.errno else os.strerror(error.errno)
        raise ConfigError(
            f"cannot listen for gRPC on {host}:{port} ({reason}); pass another --grpc-port."
        ) from None


def _grpc_address(host: str, port: int) -> str:
    """gRPC's "HOST:PORT", an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def export(
    run: str | Path,
    format: str = "onnx",
    out: str | Path | None = None,
    quantize: str = "none",
    tta: bool = True,
) -> Path:
    """Writes a run's model as ONNX, a SavedModel or LiteRT (see
    `convnet.exporter.export_model`), on the TensorFlow backend whatever backend trained the run.
    """
    found = RunFolder(run)  # a run with a valid config and a model, before Keras is imported
    found.config()
    found.require_model()
    if quantize != "none" and format != "litert":  # before the framework: a refusal is at once
        raise ConfigError(f"--quantize {quantize} is for --format litert; received {format}.")
    framework.load(EXPORT_BACKEND)
    from convnet.exporter import export_model

    return export_model(run, format, out, quantize=quantize, tta=tta)
