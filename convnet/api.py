"""The entry points the CLI and the server call. They return results and never exit.

Each reads and checks its input with the core (config, data, run folders) first, then imports
the framework it needs: a refusal of bad input never waits for Keras. `predict` and
`predict_files` are those of `convnet.batch_prediction`, beside the writer of their rows; `serve`
is `convnet.service`'s, and `tune` that of `convnet.tuning.launch`.
"""

from __future__ import annotations

import dataclasses
import io
import os
import time
from pathlib import Path

from convnet import framework, topology
from convnet.backend import EXPORT_BACKEND
from convnet.batch_prediction import predict as predict
from convnet.batch_prediction import predict_files as predict_files
from convnet.config import TrainConfig, check_lr_range, check_not_training_only, with_settings
from convnet.errors import ConfigError, setting
from convnet.export_files import check_quantize
from convnet.models.registry import Preset, check_model_shape, get_preset, list_presets
from convnet.reports.html import HtmlPage
from convnet.run import Run
from convnet.run_folders import RUNS_ROOT, check_new_run_dir, claimed, default_run_dir
from convnet.runs import Run as RunFolder
from convnet.runs import list_runs
from convnet.service import serve as serve
from convnet.trackers import check_installed
from convnet.tuning.launch import tune as tune

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
            The model is logged too, as the MLflow model `model` (docs/tuning.md, tracking).
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
            f"{setting('mlflow_register')} registers the model that {setting('mlflow')} logs; "
            f"add {setting('mlflow')} too (received "
            f"{setting('mlflow_register', mlflow_register)} alone)."
        )
    check_installed(tensorboard, mlflow)
    trackers = {"tensorboard": tensorboard, "mlflow": mlflow}
    if resume:

        def resume_with(extra: list):
            everything = [*callbacks, *extra]
            return _resume(resume, config, settings, command, verbose, started, everything)

        return _tracked_resume(resume, resume_with, trackers, mlflow_register)
    _check_callbacks(callbacks)
    memory = _data_in_hand(settings)
    config = with_settings(config, settings)
    config = _keeping(config, memory) if memory else config
    topology.check(config, framework.planned(config.backend, config.devices))
    check_new_run_dir(config.out)  # before the data is read
    from convnet.data import fitted_to_data, load_training_data, read_given  # NumPy, polars

    data = load_training_data(config, read_given(config, memory), keep=True)
    config = fitted_to_data(config, data)
    # Recorded in config.yaml: evaluate, predict, report and serve use it again.
    config = dataclasses.replace(config, backend=framework.load(config.backend, config.devices))
    from convnet.training import tracking, trainer

    config = tracking.with_run_folder(config, **trackers)
    # Handed over, not held here: the trainer lets the training sets go before the test pass
    # (`trainer.Session.test_set`), and a name in this frame would keep them.
    handed = [data]
    del data

    def train_with(extra: list):
        everything = [*callbacks, *extra]
        return trainer.train(
            config,
            handed.pop(),
            command=command,
            verbose=verbose,
            started=started,
            callbacks=everything,
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


def _data_in_hand(settings: dict) -> dict:
    """The `train=` and `test=` values that are data in hand (a DataFrame, arrays), not paths,
    taken out of `settings`, by argument."""
    in_hand = [
        key
        for key in DATA_ARGUMENTS
        if settings.get(key) is not None and not isinstance(settings[key], str | os.PathLike)
    ]
    return {key: settings.pop(key) for key in in_hand}


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


def _tracked_resume(run_dir, resume_with, trackers: dict, register: str | None):
    """`resume_with` under the trackers asked for. Without any, no framework is loaded before
    the run's data is read, as in a new run."""
    if all(value is None for value in trackers.values()):
        return resume_with([])
    recorded = RunFolder(run_dir).config()  # the trackers import Keras: on the run's backend
    framework.load(recorded.backend, recorded.devices)
    from convnet.training import tracking

    return tracking.tracked(run_dir, resume_with, **trackers, resume=True, register=register)


def _resume(run_dir, config, settings: dict, command, verbose, started: float, callbacks=()):
    if config is not None or settings:
        given = ", ".join(["config"] * (config is not None) + sorted(settings))
        raise ConfigError(
            f"{setting('resume')} continues {run_dir} with its own config.yaml; drop the other "
            f"settings (received: {given})."
        )
    run = RunFolder(run_dir)
    with claimed(run.path):  # held until the run ends, so no other process trains it meanwhile
        run.check_resumable()
        config = run.config()
        from convnet.data import load_training_data  # the readers: NumPy and polars

        data = load_training_data(config, again=True)
        run.check_same_data(data.record)
        framework.load(config.backend, config.devices)
        from convnet.training import trainer

        handed = [data]  # handed over, as in `train`
        del data
        result = trainer.resume(
            run,
            handed.pop(),
            command=command,
            verbose=verbose,
            started=started,
            callbacks=callbacks,
        )
        return Run(result.run, result.is_chief)


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


def create_model(
    preset: str, input_shape=(28, 28, 1), num_classes: int = 10, precision: str = "float32"
):
    """A preset's Keras model for raw uint8 images (see `convnet.models.factory.create_model`)."""
    check_model_shape(preset, input_shape, num_classes)  # before Keras is imported
    framework.load()
    from convnet.models.factory import create_model as build

    return build(preset, input_shape, num_classes, precision)


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
    from convnet.reports.compare import write_compare

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
    check_not_training_only(settings)
    memory = _data_in_hand(settings)
    config = with_settings(config, settings)
    from convnet.data import fitted_to_data, load_training_data, read_given  # NumPy, polars

    data = load_training_data(config, read_given(config, memory))
    config = fitted_to_data(config, data)
    train_set = data.train  # the very examples `train` would fit on
    framework.load(config.backend)
    from convnet.reports.plots import lr_find_plot
    from convnet.training.lr_find import lr_range_test

    result = lr_range_test(config, train_set, steps=steps, min_lr=min_lr, max_lr=max_lr)
    return result | {"plot": lr_find_plot(result, plot)}


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
    check_quantize(format, quantize)  # before the framework: a refusal is at once
    framework.load(EXPORT_BACKEND)
    from convnet.exporter import export_model

    with framework.startup_lines_hidden():  # LiteRT's converter prints its settings in C++
        return export_model(run, format, out, quantize=quantize, tta=tta)
