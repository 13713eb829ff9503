"""`convnet train --mlflow`'s MLflow model: loaded in a fresh process by MLflow alone, registered
by name, served by `mlflow models serve`, logged once across a resume; and the refusals."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import CLASS_NAMES, run_cli, wait_until

mlflow = pytest.importorskip("mlflow", reason="pip install -e '.[track]'")

from mlflow.entities import LoggedModelStatus  # noqa: E402

import convnet  # noqa: E402
from convnet.errors import ConfigError  # noqa: E402
from convnet.training import logged_model  # noqa: E402

BIN = Path(sys.executable).parent
# What a user's fresh process does: MLflow loads the model and predicts, nothing of convnet's.
LOAD = """
import json, sys
import mlflow, numpy as np

by_run, by_name, npz = sys.argv[1:]
x = np.load(npz)["x_test"][..., np.newaxis]
model = mlflow.pyfunc.load_model(by_run)
probabilities = model.predict(x)
print(json.dumps({
    "dtype": str(probabilities.dtype),
    "probabilities": probabilities.tolist(),
    "registered": mlflow.pyfunc.load_model(by_name).predict(x).tolist(),
    "inputs": model.metadata.get_input_schema().to_dict(),
    "outputs": model.metadata.get_output_schema().to_dict(),
    "metadata": model.metadata.metadata,
    "loaded": sorted({m.split(".")[0] for m in sys.modules}
                     & {"tensorflow", "keras", "jax", "torch", "convnet"}),
}))
"""


def bars_test(npz: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(npz)
    return data["x_test"][..., np.newaxis], data["y_test"]


@pytest.fixture(scope="module")
def logged(tmp_path_factory, tiny_npz) -> SimpleNamespace:
    """A run trained by the CLI with `--mlflow` and `--mlflow-register bars`, mirrored for
    test-time views (2: the images and their mirrors), and what MLflow recorded of it."""
    where = tmp_path_factory.mktemp("logged")  # MLflow keeps artifacts in ./mlruns
    # Not MLflow's default name, mlflow.db: a step that ignored the URI would miss the store.
    uri = f"sqlite:///{where / 'tracking.db'}"
    args = ["train", "--train", tiny_npz, "--epochs", "1", "--batch-size", "64", "--flip"]
    result = run_cli(*args, "--out", where / "run", "--json", "--mlflow", uri,
                     "--mlflow-register", "bars", cwd=where)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not (where / "mlflow.db").exists()
    client = mlflow.tracking.MlflowClient(uri)
    [found] = client.search_runs(["0"], "attributes.run_name = 'run'")
    return SimpleNamespace(run=where / "run", uri=uri, client=client, id=found.info.run_id)


@pytest.fixture(scope="module")
def loaded(logged, tiny_npz) -> dict:
    """What the LOAD script prints for the logged run's model and its registered version."""
    done = subprocess.run(
        [sys.executable, "-c", LOAD, f"runs:/{logged.id}/model", "models:/bars/1", tiny_npz],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": logged.uri},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.trains
def test_the_model_loads_in_a_fresh_process_and_scores_like_the_run(logged, loaded, tiny_npz):
    x, y = bars_test(tiny_npz)
    probabilities = np.array(loaded["probabilities"])
    metrics = json.loads((logged.run / "metrics.json").read_text())
    assert loaded["dtype"] == "float32" and probabilities.shape == (len(x), len(CLASS_NAMES))
    assert np.mean(probabilities.argmax(1) == y) == metrics["test_accuracy"]
    expected = convnet.load(logged.run).predict(x)  # Keras, the run's 2 views averaged
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    # MLflow ran the model on ONNX Runtime alone.
    assert loaded["loaded"] == []


@pytest.mark.trains
def test_the_model_records_its_signature_classes_views_and_example(
    logged, loaded, tiny_npz, monkeypatch
):
    [pixels] = loaded["inputs"]
    assert pixels == {"type": "tensor", "tensor-spec": {"dtype": "uint8", "shape": [-1, 28, 28, 1]}}
    [probabilities] = loaded["outputs"]
    assert probabilities["tensor-spec"] == {"dtype": "float32", "shape": [-1, len(CLASS_NAMES)]}
    assert loaded["metadata"] == {"class_names": list(CLASS_NAMES), "tta_views": 2}
    # MLflow finds a run's logged model through $MLFLOW_TRACKING_URI, whatever URI it is given.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged.uri)
    path = mlflow.artifacts.download_artifacts(f"runs:/{logged.id}/model")
    example = mlflow.models.Model.load(path).load_input_example(path)
    x, _ = bars_test(tiny_npz)
    assert example.dtype == np.uint8
    np.testing.assert_array_equal(example, x[: logged_model.EXAMPLES])


@pytest.mark.trains
def test_predict_takes_batches_of_any_size(logged, monkeypatch):
    from convnet import mlflow_model

    assert mlflow.models.model.__mlflow_model__ is None  # importing it set no model
    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged.uri)
    path = Path(mlflow.artifacts.download_artifacts(f"runs:/{logged.id}/model"))
    model = mlflow_model.OnnxClassifier()
    model.load_context(SimpleNamespace(artifacts={"onnx": str(path / "artifacts/model.onnx")}))
    x = np.random.default_rng(0).integers(0, 256, (70, 28, 28, 1), dtype=np.uint8)
    whole = model.predict(None, x)
    monkeypatch.setattr(mlflow_model, "BATCH", 32)  # 3 calls: 32, 32 and 6 images
    np.testing.assert_allclose(model.predict(None, x), whole, atol=1e-6)
    assert whole.dtype == np.float32 and whole.shape == (70, len(CLASS_NAMES))
    assert model.predict(None, x[:0]).shape == (0, len(CLASS_NAMES))


@pytest.mark.trains
def test_the_registered_version_is_the_run_s_model(logged, loaded):
    version = logged.client.get_model_version("bars", "1")
    [model] = logged.client.search_logged_models(["0"], filter_string="name = 'model'")
    assert version.run_id == model.source_run_id == logged.id
    assert version.source == model.artifact_location
    assert model.status == LoggedModelStatus.READY
    assert loaded["registered"] == loaded["probabilities"]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.trains
def test_mlflow_models_serve_answers_invocations(logged, tiny_npz, free_tcp_port):
    url = f"http://127.0.0.1:{free_tcp_port}"
    # MLflow starts `uvicorn` by name: the venv's bin on PATH, as in an activated venv.
    env = {**os.environ, "MLFLOW_TRACKING_URI": logged.uri}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    command = [str(BIN / "mlflow"), "models", "serve", "-m", f"runs:/{logged.id}/model"]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(free_tcp_port)]
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=logged.run.parent,
        start_new_session=True,  # its own process group: the server is uvicorn, its child
    )
    try:
        wait_until(lambda: answers(f"{url}/ping"), server, "an answer to /ping", timeout=120)
        x, _ = bars_test(tiny_npz)
        request = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps({"inputs": x[:5].tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            predictions = np.array(json.loads(response.read())["predictions"])
    finally:
        with contextlib.suppress(ProcessLookupError):  # ended already
            os.killpg(server.pid, signal.SIGTERM)
        server.communicate(timeout=30)
    np.testing.assert_allclose(predictions, convnet.load(logged.run).predict(x[:5]), atol=1e-5)


@pytest.mark.trains
def test_a_run_resumed_with_mlflow_logs_its_model_once(tmp_path, tiny_npz, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow keeps artifacts in ./mlruns
    uri = f"sqlite:///{tmp_path / 'tracking.db'}"
    run = tmp_path / "run"

    import keras

    class Interrupt(keras.callbacks.Callback):
        """Ctrl-C as the first epoch ends, after convnet's callbacks backed it up."""

        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convnet.train(train=str(tiny_npz), epochs=2, batch_size=64, out=str(run), verbose=0,
                      mlflow=uri, callbacks=[Interrupt()])  # fmt: skip
    client = mlflow.tracking.MlflowClient(uri)
    [stopped] = client.search_runs(["0"])
    assert stopped.info.status == "KILLED" and client.search_logged_models(["0"]) == []
    convnet.train(resume=str(run), verbose=0, mlflow=uri, mlflow_register="resumed")
    [found] = client.search_runs(["0"])  # the same MLflow run, continued
    assert found.info.run_id == stopped.info.run_id and found.info.status == "FINISHED"
    [model] = client.search_logged_models(["0"])
    assert model.name == "model" and model.source_run_id == found.info.run_id
    assert client.get_model_version("resumed", "1").source == model.artifact_location
    assert not (tmp_path / "mlflow.db").exists()


def test_a_register_name_without_mlflow_is_one_line_at_once(tmp_path, tiny_npz):
    out = tmp_path / "run"
    result = run_cli("train", "--train", tiny_npz, "--out", out, "--mlflow-register", "bars")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "convnet: error: --mlflow-register registers the model that --mlflow logs; add --mlflow "
        "too (received --mlflow-register bars alone)."
    ]
    assert not out.exists()
    python = r"add mlflow=\.\.\. too \(received mlflow_register='bars' alone\)\.$"
    with pytest.raises(ConfigError, match=python):
        convnet.train(train=str(tiny_npz), out=str(out), epochs=1, mlflow_register="bars")


def test_a_name_the_registry_refuses_is_refused_before_training(tmp_path, tiny_npz):
    out = tmp_path / "run"
    uri = f"sqlite:///{tmp_path / 'tracking.db'}"
    refused = f"cannot register the model as 'a/b' in MLflow at {uri}: Invalid model name 'a/b'. "
    with pytest.raises(ConfigError, match=re.escape(refused + "Names cannot contain '/' or ':'.")):
        convnet.train(train=str(tiny_npz), out=str(out), epochs=1, mlflow=uri,
                      mlflow_register="a/b")  # fmt: skip
    assert not out.exists()


@pytest.mark.trains
def test_a_run_of_another_backend_is_exported_on_tensorflow(logged, tmp_path, monkeypatch):
    """On JAX or torch, the export runs as `convnet export` in a TensorFlow process."""
    onnxruntime = pytest.importorskip("onnxruntime")
    from convnet.exporter import averaged_views

    with monkeypatch.context() as patched:
        patched.setattr(logged_model.keras.backend, "backend", lambda: "jax")
        patched.setattr(logged_model, "export_model", None)  # not in this process
        out = logged_model._onnx_export(logged.run, tmp_path / "model.onnx")
    assert averaged_views(out) == 2
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.zeros((3, 28, 28, 1), np.uint8)
    x[:, 8:12] = 220
    [probabilities] = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(probabilities, convnet.load(logged.run).predict(x), atol=1e-5)
