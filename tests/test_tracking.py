"""`convnet train --tensorboard --mlflow`: what the trackers recorded, read back with their own
readers, and the one-line refusal when a tracker is not installed."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

mlflow = pytest.importorskip("mlflow", reason="pip install -e '.[track]'")
pytest.importorskip("tensorboard", reason="pip install -e '.[track]'")

from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from tensorboard.util.tensor_util import make_ndarray  # noqa: E402

INSTALL = "pip install 'convnet[track]'"


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_npz) -> tuple[Path, str, str]:
    """(a run trained by the CLI with both trackers into a time-stamped folder, the MLflow
    URI it logged to, the MLflow run's ID the command printed). Run in a folder of its own:
    MLflow keeps artifacts in ./mlruns."""
    where = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{where / 'mlruns.db'}"
    args = ["train", "--train", tiny_npz, "--epochs", "2", "--json"]
    result = run_cli(*args, "--tensorboard", "--mlflow", uri, cwd=where)
    assert result.returncode == 0, result.stderr
    assert "Creating initial MLflow database tables" not in result.stderr  # MLflow's INFO
    printed = json.loads(result.stdout)
    return where / printed["run"], uri, printed["mlflow_run_id"]


def history(run: Path) -> dict[str, list[float]]:
    with open(run / "history.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    return {key: [float(row[key]) for row in rows] for key in rows[0]}


@pytest.mark.trains
def test_mlflow_holds_the_run(tracked):
    run, uri, printed = tracked
    client = mlflow.tracking.MlflowClient(uri)
    [found] = client.search_runs(["0"], f"attributes.run_name = '{run.name}'")
    assert found.info.status == "FINISHED"
    # The command said which MLflow run it logged, and the run folder records it.
    assert printed == found.info.run_id
    recorded = json.loads((run / "manifest.json").read_text())["mlflow"]
    assert recorded == {"run_id": found.info.run_id, "experiment_id": "0"}
    assert run.parent.name == "runs" and run.name.startswith("seed-")
    epochs = client.get_metric_history(found.info.run_id, "val_accuracy")
    assert [m.step for m in epochs] == [0, 1]
    assert [m.value for m in epochs] == pytest.approx(history(run)["val_accuracy"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert found.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert found.data.params["preset"] == "seed"
    assert found.data.params["epochs"] == "2"
    assert found.data.params["augment.flip"] == "False"  # nested settings, flattened
    files = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"report.html", "model.keras", "config.yaml"} <= files


@pytest.mark.trains
def test_tensorboard_holds_each_epoch(tracked):
    run, *_ = tracked
    expected = history(run)
    for split, prefix in (("train", ""), ("validation", "val_")):
        events = EventAccumulator(str(run / "tensorboard" / split), size_guidance={"tensors": 0})
        events.Reload()
        for metric in ("loss", "accuracy"):
            written = events.Tensors(f"epoch_{metric}")
            assert [e.step for e in written] == [0, 1]
            values = [float(make_ndarray(e.tensor_proto)) for e in written]
            assert values == pytest.approx(expected[prefix + metric], rel=1e-6)


def test_a_tensorboard_folder_gets_a_subfolder_per_run(tmp_path):
    from convnet.training.tracking import tracking_callbacks

    [callback] = tracking_callbacks(tmp_path / "runs" / "seed-1", tensorboard=str(tmp_path / "tb"))
    assert Path(callback.log_dir) == tmp_path / "tb" / "seed-1"
    [callback] = tracking_callbacks(tmp_path / "runs" / "seed-1", tensorboard="")
    assert Path(callback.log_dir) == tmp_path / "runs" / "seed-1" / "tensorboard"


# Runs the CLI with the module `argv[1]` not installed; prints what it had imported of the data
# readers and the frameworks.
BLOCKED = "import sys; sys.modules[sys.argv[1]] = None; from convnet.cli import main; "
BLOCKED += "code = main(sys.argv[2:]); heavy = {'numpy', 'polars', 'keras', 'tensorflow'}; "
BLOCKED += "print(sorted(heavy & set(sys.modules))); sys.exit(code)"


@pytest.mark.parametrize("command", ["train", "tune"])
@pytest.mark.parametrize("tracker", ["mlflow", "tensorboard"])
def test_a_tracker_not_installed_is_one_line_before_training(command, tracker, tmp_path, tiny_npz):
    out = tmp_path / "run"
    args = [command, "--train", tiny_npz, "--epochs", "1", "--out", out, f"--{tracker}"]
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED, tracker, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=os.environ,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"convnet: error: --{tracker} needs {tracker}, which is not installed; "
        f"{INSTALL} installs it."
    ]
    assert not out.exists() and not (tmp_path / "mlruns.db").exists()
    assert result.stdout == "[]\n"  # said at once: no data read, no framework loaded
