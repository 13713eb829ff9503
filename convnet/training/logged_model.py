"""A finished run's model logged to MLflow as an MLflow model: its ONNX export run by ONNX Runtime
(`convnet.mlflow_model`), registered if asked.

    log_model(client, run_id, Run("runs/seed-..."), register="fashion")
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np

from convnet.exporter import ExportError, averaged_views, export_model
from convnet.runs import Run

MODEL = "model"  # the MLflow model's name in its run: runs:/RUN_ID/model
EXAMPLES = 3  # test images kept as the MLflow model's input example
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def log_model(client, run_id: str, run: Run, register: str | None = None) -> str:
    """Logs the run's ONNX export (`convnet export`) as the MLflow model `MODEL` of the MLflow
    run `run_id`, registered as a new version of `register` unless it is None.

    The model is a `convnet.mlflow_model.OnnxClassifier`: uint8 images (N, H, W, C) in, float32
    probabilities (N, K) out, the run's class names and test-time views in its metadata, a few
    test images as its input example. MLflow's own `log_model` logs to the process's tracking
    URI and active experiment: this logs through `client` alone, which a caller's MLflow
    settings neither redirect nor see changed.

    Returns:
        The logged model's id: `models:/ID` loads it, as `runs:/RUN_ID/model` does.

    Raises:
        ExportError: the export failed. MlflowException: MLflow refused the model.
    """
    import mlflow
    from mlflow.entities import LoggedModelOutput

    from convnet import mlflow_model

    example = np.ascontiguousarray(run.load_test().x[:EXAMPLES])
    names = list(run.class_names())
    with tempfile.TemporaryDirectory(prefix="convnet-mlflow-") as scratch, _quiet_mlflow():
        onnx = _onnx_export(run.path, Path(scratch) / "model.onnx")
        found = client.get_run(run_id)  # its parameters go with the model, as MLflow does
        logged = client.create_logged_model(
            found.info.experiment_id, MODEL, run_id, params=found.data.params
        )
        description = mlflow.models.Model(
            artifact_path=logged.artifact_location,
            model_uuid=logged.model_id,
            model_id=logged.model_id,
            run_id=run_id,
            metadata={"class_names": names, "tta_views": averaged_views(onnx)},
        )
        mlflow.pyfunc.save_model(
            Path(scratch) / MODEL,
            # MLflow loads the model by running a copy of this file ("models from code"), so
            # the model needs none of convnet: only what `requirements` names.
            python_model=mlflow_model.__file__,
            artifacts={mlflow_model.ONNX_ARTIFACT: str(onnx)},
            signature=mlflow_model.signature(example.shape[1:], len(names)),
            input_example=example,
            pip_requirements=mlflow_model.requirements(),
            mlflow_model=description,
        )
        client.log_model_artifacts(logged.model_id, str(Path(scratch) / MODEL))
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    client.finalize_logged_model(logged.model_id, "READY")
    if register is not None:
        _register(client, register, logged, run_id)
    return logged.model_id


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow's info lines ("Validating input example ...") and artifact progress bars held back
    while the model is logged, as convnet's own progress is under `--quiet`; both restored after.
    Its warnings still show."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    bar = os.environ.get(PROGRESS_BAR)
    logger.setLevel(max(level, logging.WARNING))
    os.environ[PROGRESS_BAR] = "false"
    try:
        yield
    finally:
        logger.setLevel(level)
        if bar is None:
            os.environ.pop(PROGRESS_BAR, None)
        else:
            os.environ[PROGRESS_BAR] = bar


def _onnx_export(run_dir: Path, out: Path) -> Path:
    """The run's model exported as `convnet export RUN --out OUT` writes it: on TensorFlow
    (`convnet.backend.EXPORT_BACKEND`), in this process if Keras runs on it, else in a process of
    its own, since a process keeps the Keras backend it imported first.

    Raises:
        ExportError: the export failed.
    """
    if keras.backend.backend() == "tensorflow":
        return export_model(run_dir, "onnx", out)
    command = [sys.executable, "-m", "convnet.cli", "export", str(run_dir), "--out", str(out)]
    env = os.environ | {"KERAS_BACKEND": "tensorflow"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise ExportError(reason.removeprefix("convnet: error: "))
    return out


def _register(client, name: str, logged, run_id: str) -> None:
    """Registers the logged model as a new version of `name`, made if new."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    # By its files' location: a local store looks a `models:/ID` source up at the process's
    # tracking URI rather than the client's (MLflow 3.18), where the model is not.
    source = logged.artifact_location
    client.create_model_version(name, source, run_id, model_id=logged.model_id)
