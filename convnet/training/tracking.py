"""Recording a run where people already look: TensorBoard's event files and an MLflow run,
which holds the trained model as an MLflow model (`convnet.mlflow_model`), registered if asked.

The trackers record a run without changing it, so their settings are not in its config.yaml.
Both are optional (`pip install 'convnet[track]'`) and imported only when asked for.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import importlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import yaml

from convnet.config import TrainConfig
from convnet.errors import ConfigError
from convnet.run_folders import default_run_dir
from convnet.runs import Run
from convnet.trackers import not_installed
from convnet.training import logged_model

# A local database in the working directory, as `mlflow ui --backend-store-uri` reads it;
# MLflow 3 refuses its old folder store (./mlruns) unless told otherwise.
DEFAULT_MLFLOW_URI = "sqlite:///mlruns.db"
TENSORBOARD_DIR = "tensorboard"  # RUN/tensorboard, when no folder is given
# The run folder's absolute path: how a resumed run finds its MLflow run again.
RUN_TAG = "convnet.run"
ARTIFACTS = ("report.html", "config.yaml", "model.keras", "metrics.json", "manifest.json")


def with_run_folder(
    config: TrainConfig, tensorboard: str | None, mlflow: str | None
) -> TrainConfig:
    """`config` with its run folder named now, when a tracker is asked for: TensorBoard's
    folder and the MLflow run are named after it before the trainer makes it (and config.yaml
    records that `out`)."""
    if config.out or (tensorboard is None and mlflow is None):
        return config
    return dataclasses.replace(config, out=str(default_run_dir(config.preset)))


def tracked(
    run_dir: str | Path | None,
    train: Callable[[list], object],
    tensorboard: str | None = None,
    mlflow: str | None = None,
    resume: bool = False,
    register: str | None = None,
    log_model: bool = True,
):
    """Runs `train(callbacks)` with the trackers' callbacks, then finishes the MLflow run.

    Args:
        run_dir: the run folder `train` writes (or resumes); None without trackers.
        train: trains with the callbacks given; returns a TrainResult.
        tensorboard: see `tracking_callbacks`.
        mlflow: see `tracking_callbacks`.
        resume: see `tracking_callbacks`.
        register: see `log_finished_run`; only with `mlflow`.
        log_model: see `log_finished_run`.

    Returns:
        What `train` returns.

    Raises:
        ConfigError: a tracker is not installed, MLflow cannot be reached, or `register` is a
            name the registry refuses; before `train`. After it, as `log_finished_run`.
    """
    if tensorboard is None and mlflow is None:
        return train([])
    callbacks = tracking_callbacks(run_dir, tensorboard, mlflow, resume)
    if mlflow is None:
        return train(callbacks)
    if register is not None:
        _check_register_name(mlflow, register)
    with _ending(run_dir, mlflow):
        result = train(callbacks)
        if result.is_chief:
            log_finished_run(run_dir, mlflow, register, log_model)
    return result


def tracking_callbacks(
    run_dir: str | Path,
    tensorboard: str | None = None,
    mlflow: str | None = None,
    resume: bool = False,
) -> list[keras.callbacks.Callback]:
    """The Keras callbacks that record a run as it trains.

    Args:
        run_dir: the run folder; it names TensorBoard's subfolder and the MLflow run.
        tensorboard: a folder for TensorBoard's logs, which get a subfolder named after the run
            (several runs compare there); "" for RUN/tensorboard; None (the default) for none.
        mlflow: an MLflow tracking URI; "" for `DEFAULT_MLFLOW_URI`; None (the default) for none.
        resume: the run continues an interrupted one, and its unfinished MLflow run with it.

    Returns:
        A TensorBoard callback and an MLflow one, as asked for.

    Raises:
        ConfigError: a tracker is not installed, or MLflow cannot be reached.
    """
    run_dir = Path(run_dir)
    callbacks = []
    if tensorboard is not None:
        _require("tensorboard")  # tf.summary writes nothing without it
        folder = Path(tensorboard) / run_dir.name if tensorboard else run_dir / TENSORBOARD_DIR
        callbacks.append(ChiefTensorBoard(str(folder)))
    if mlflow is not None:
        callbacks.append(MlflowLogger(run_dir, mlflow, resume))
    return callbacks


class ChiefTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard, written by process 0 alone: the others log to a scratch folder, as
    they write their run folder to one (`distributed.Context.out`)."""

    def set_model(self, model):
        if not _is_chief():  # known by now: `fit` begins after distributed setup
            self.log_dir = tempfile.mkdtemp(prefix="convnet-tensorboard-")
            atexit.register(shutil.rmtree, self.log_dir, ignore_errors=True)
        super().set_model(model)


class MlflowLogger(keras.callbacks.Callback):
    """Logs a run to MLflow as it trains: config.yaml's settings as parameters when it begins,
    each epoch's Keras logs as metrics (step = epoch). `log_finished_run` ends it.

    Args:
        run_dir: the run folder, which names the MLflow run.
        uri: the tracking URI; "" for `DEFAULT_MLFLOW_URI`.
        resume: continue the run folder's unfinished MLflow run, if there is one.

    Process 0 alone logs.
    """

    def __init__(self, run_dir: str | Path, uri: str = "", resume: bool = False):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.client, self.experiment = _connect(uri)  # a bad URI fails here, before training
        self.resume = resume
        self.run_id = None

    def on_train_begin(self, logs=None):
        self.run_id = None
        if _is_chief():
            self.run_id = _open_run(self.client, self.experiment, self.run_dir, self.resume)

    def on_epoch_end(self, epoch, logs=None):
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, epoch) for k, v in _numbers(logs or {}).items()]
        self.client.log_batch(self.run_id, metrics=metrics)


def log_finished_run(
    run_dir: str | Path, mlflow: str = "", register: str | None = None, log_model: bool = True
) -> None:
    """Logs a complete run's test metrics (metrics.json), files and model to its MLflow run,
    and marks that run finished.

    Args:
        run_dir: a complete run folder. Its unfinished MLflow run (an `MlflowLogger`'s) is
            continued; without one, a new MLflow run is made, with no per-epoch metrics.
        mlflow: the tracking URI; "" for `DEFAULT_MLFLOW_URI`.
        register: a name to register the model under in MLflow's model registry (a new
            version of it); None (the default) registers nothing.
        log_model: log the model as an MLflow model (`logged_model.log_model`). Defaults to
            True; a tune trial's run skips it (a second or two each, for models nobody deploys).

    Raises:
        ConfigError: MLflow is not installed or cannot be reached, or refused the model.
        ExportError: the model could not be exported to ONNX. RunError: not a run folder.
    """
    run = Run(run_dir)
    client, experiment = _connect(mlflow)
    run_id = _open_run(client, experiment, run.path, resume=True)
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in _numbers(run.read_json("metrics.json")).items()]
    client.log_batch(run_id, metrics=metrics)
    for name in ARTIFACTS:
        if (run.path / name).is_file():
            client.log_artifact(run_id, str(run.path / name))
    try:
        if log_model:
            logged_model.log_model(client, run_id, run, register)
    except (MlflowException, OSError) as error:
        raise ConfigError(
            f"cannot log the model to MLflow at {mlflow or DEFAULT_MLFLOW_URI}: "
            f"{_first_line(error)}"
        ) from None
    client.set_terminated(run_id, "FINISHED")
    # Where to find it again (`runs:/ID/model`); not the URI, which may hold a password.
    logged = {"run_id": run_id, "experiment_id": experiment}
    run.write_json("manifest.json", run.read_json("manifest.json") | {"mlflow": logged})


def _check_register_name(uri: str, name: str) -> None:
    """Refuses a name that the model registry at `uri` would not register, by asking for it.

    Raises:
        ConfigError: naming the registry's reason.
    """
    client, _ = _connect(uri)
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            where = uri or DEFAULT_MLFLOW_URI
            message = f"cannot register the model as {name!r} in MLflow at {where}"
            raise ConfigError(f"{message}: {_first_line(error)}") from None


@contextlib.contextmanager
def _ending(run_dir: Path, uri: str) -> Iterator[None]:
    """Marks the block's MLflow run KILLED on Ctrl-C and FAILED on an error, then re-raises."""
    try:
        yield
    except BaseException as error:
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        with contextlib.suppress(Exception):  # the training's error is the one to report
            client, experiment = _connect(uri)
            found = _find_run(client, experiment, Path(run_dir))
            if found and found.info.status == "RUNNING":
                client.set_terminated(found.info.run_id, status)
        raise


def _connect(uri: str):
    """(an MlflowClient for `uri` or the default, the experiment to log to).

    The experiment is $MLFLOW_EXPERIMENT_NAME's, as MLflow's own logging picks it, made if new;
    else MLflow's Default.
    """
    mlflow = _require("mlflow")
    uri = uri or DEFAULT_MLFLOW_URI
    # A new SQLite store logs its tables' creation at INFO, to the terminal or the notebook.
    store = logging.getLogger("mlflow.store.db.utils")
    level = store.level
    store.setLevel(max(level, logging.WARNING))
    try:
        client = mlflow.tracking.MlflowClient(uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
        if not name:
            return client, client.get_experiment("0").experiment_id
        found = client.get_experiment_by_name(name)
        return client, found.experiment_id if found else client.create_experiment(name)
    except mlflow.exceptions.MlflowException as error:
        raise ConfigError(f"cannot log to MLflow at {uri}: {_first_line(error)}") from None
    finally:
        store.setLevel(level)


def _first_line(error: Exception) -> str:
    """An MLflow error's first line: its reason, without the stack MLflow may append."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _open_run(client, experiment: str, run_dir: Path, resume: bool) -> str:
    """The id of the run folder's unfinished MLflow run (when `resume`), or of a new one named
    after the folder, its parameters logged."""
    found = _find_run(client, experiment, run_dir) if resume else None
    if found and found.info.status != "FINISHED":
        client.update_run(found.info.run_id, status="RUNNING")
        return found.info.run_id
    from mlflow.entities import Param
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

    tags = {RUN_TAG: str(run_dir.absolute())}
    run_id = client.create_run(experiment, run_name=run_dir.name, tags=tags).info.run_id
    settings = _flat(yaml.safe_load((run_dir / "config.yaml").read_text()))
    params = [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in settings.items()]
    for start in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=params[start : start + MAX_PARAMS_TAGS_PER_BATCH])
    return run_id


def _find_run(client, experiment: str, run_dir: Path):
    """The newest MLflow run of the run folder, or None."""
    path = str(run_dir.absolute())
    quote = '"' if "'" in path else "'"
    found = client.search_runs(
        [experiment],
        f"tags.`{RUN_TAG}` = {quote}{path}{quote}",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return found[0] if found else None


def _flat(settings: dict, prefix: str = "") -> dict:
    """Nested settings as one level: {"augment": {"flip": True}} -> {"augment.flip": True}."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _numbers(values: dict) -> dict[str, float]:
    """The numeric entries of Keras logs or metrics.json, as floats (not flags, lists or text)."""
    numbers = {}
    for key, value in values.items():
        if not isinstance(value, bool | str):
            with contextlib.suppress(TypeError, ValueError):  # None, lists, dicts
                numbers[key] = float(value)
    return numbers


def _is_chief() -> bool:
    """Whether this process writes the run: process 0 of a multi-process JAX job, the only kind
    (`distributed.setup`). Asked once `fit` begins, after JAX's processes have joined."""
    if keras.backend.backend() != "jax":
        return True
    import jax

    return jax.process_index() == 0


def _require(module: str):
    """Imports an optional tracker's module (one of `trackers.TRACKERS`).

    Raises:
        ConfigError: it is not installed; the message names the extra that installs it.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise not_installed(module) from None
