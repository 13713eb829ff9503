"""Real `convnet train` processes killed mid-epoch, interrupted with Ctrl-C, and resumed."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CONVNET, make_images, run_cli, wait_until, write_npz

EPOCHS = 5
# 420 training images in batches of 8: ~53 steps, about a second an epoch, so a kill soon after
# an epoch ends lands inside the next one.
TRAIN_FLAGS = ["--epochs", str(EPOCHS), "--batch-size", "8"]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [CONVNET, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def epochs_logged(run: Path) -> list[int]:
    path = run / "history.csv"
    if not path.is_file():
        return []
    lines = path.read_text().splitlines(keepends=True)
    complete = [line for line in lines[1:] if line.endswith("\n")]
    return [int(row["epoch"]) for row in csv.DictReader(lines[:1] + complete)]


def wait_for_epochs(process: subprocess.Popen, run: Path, count: int, timeout: float = 240):
    """Waits until `count` epochs are in history.csv, then a little more: mid-epoch."""
    wait_until(lambda: len(epochs_logged(run)) >= count, process, f"{count} epochs", timeout)
    time.sleep(0.2)


def wait_for_backup(process: subprocess.Popen, run: Path, epochs: int, timeout: float = 240):
    """Waits until the backup holds `epochs` epochs, then a little more: mid-epoch. An epoch's
    history row is written before its backup, and on a slow machine a kill 0.2 s after the row
    landed between the two (a run resumed from the epoch before, which is fine)."""

    def saved() -> int:
        try:
            return json.loads((run / "backup" / "state.json").read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            return 0

    wait_until(lambda: saved() >= epochs, process, f"a backup of {epochs} epochs", timeout)
    time.sleep(0.2)


def backed_up_rows(run: Path) -> list[dict]:
    """The history rows of the epochs the run's backup holds: a resume keeps them as they are."""
    saved = json.loads((run / "backup" / "state.json").read_text())["epoch"]
    assert saved >= 1
    rows = list(csv.DictReader((run / "history.csv").open()))
    return [row for row in rows if int(row["epoch"]) < saved]


def history(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "history.csv").open()))


def kill(process: subprocess.Popen, sig: int = signal.SIGKILL) -> tuple[int, str]:
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    return process.returncode, err


@pytest.mark.trains
def test_killed_twice_mid_epoch_then_resumed_to_a_full_history(tmp_path, tiny_npz):
    run = tmp_path / "run"
    first = start("train", "--train", tiny_npz, *TRAIN_FLAGS, "--restore-best", "--out", run)
    wait_for_backup(first, run, 1)
    assert kill(first)[0] == -signal.SIGKILL
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"
    assert not (run / "model.keras").exists()
    kept_first = backed_up_rows(run)

    second = start("train", "--resume", run)
    wait_for_backup(second, run, len(kept_first) + 1)
    assert kill(second)[0] == -signal.SIGKILL
    kept_second = backed_up_rows(run)
    assert kept_second[: len(kept_first)] == kept_first  # continued, not started again
    assert len(kept_second) > len(kept_first)

    result = run_cli("train", "--resume", run, "--json", env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["run"] == str(run)
    assert epochs_logged(run) == list(range(EPOCHS))  # no gap, no duplicate
    assert history(run)[: len(kept_second)] == kept_second
    elapsed = [float(r["elapsed_seconds"]) for r in history(run)]
    assert elapsed == sorted(elapsed)  # the clock continued across resumes
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["resumes"]) == 2
    assert (run / "model.keras").is_file() and (run / "metrics.json").is_file()
    assert not (run / "backup").exists()
    losses = [float(r["val_loss"]) for r in history(run)]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_epoch"] == 1 + losses.index(min(losses))  # over all three processes


needs_jax = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="the jax extra is missing"
)


# With JAX, Keras runs batch-end callbacks on a thread pool: before StopOnInterrupt, Ctrl-C hung
# the process or was lost in 3 of 21 tries.
@pytest.mark.parametrize("backend", ["tensorflow", pytest.param("jax", marks=needs_jax)])
@pytest.mark.trains
def test_ctrl_c_stops_cleanly_with_how_to_resume(tmp_path, tiny_npz, backend):
    run = tmp_path / "run"
    process = start("train", "--backend", backend, "--train", tiny_npz, *TRAIN_FLAGS, "--out", run)
    wait_for_epochs(process, run, 1)
    code, err = kill(process, signal.SIGINT)
    assert code == 130
    assert err.strip().splitlines()[-1] == (
        f"convnet: interrupted; resume with: convnet train --resume {run}"
    )
    assert "Traceback" not in err
    assert json.loads((run / "manifest.json").read_text())["status"] == "interrupted"

    listed = run_cli("runs", tmp_path, "--json")
    assert [r["status"] for r in json.loads(listed.stdout)] == ["interrupted"]
    refused = run_cli("train", "--resume", run, "--epochs", "9")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"convnet: error: --resume continues {run} with its own config.yaml; drop the other "
        "settings (received: epochs)."
    )


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory) -> Path:
    """300 training and 100 test images: `best`'s epoch (10% held out to validate) in batches
    of 8 is 34 steps, a second or so: a kill soon after the first lands inside the second."""
    path = tmp_path_factory.mktemp("data") / "bars.npz"
    return write_npz(path, make_images(300, seed=1), make_images(100, seed=2))


@pytest.mark.parametrize("backend", ["tensorflow", pytest.param("jax", marks=needs_jax)])
@pytest.mark.trains
def test_a_resumed_run_trains_as_an_uninterrupted_one(tmp_path, small_npz, backend):
    """Augmentation, dropout and the shuffle draw after a resume what they would have drawn.
    Its first epoch trained in a process of its own, so this is also the proof that two
    `--deterministic` runs of one seed give the same history and metrics."""
    flags = ["--preset", "best", "--epochs", "2", "--batch-size", "8", "--deterministic"]
    flags += ["--backend", backend]
    whole = run_cli("train", "--train", small_npz, *flags, "--out", tmp_path / "whole", "--json")
    assert whole.returncode == 0, whole.stderr
    run = tmp_path / "resumed"
    process = start("train", "--train", small_npz, *flags, "--out", run)
    wait_for_backup(process, run, 1)
    assert kill(process)[0] == -signal.SIGKILL
    # Resumed from the first epoch's backup, not started afresh (which would match too).
    assert json.loads((run / "backup" / "state.json").read_text())["epoch"] == 1
    resumed = run_cli("train", "--resume", run, "--json")
    assert resumed.returncode == 0, resumed.stderr
    # Keras warned on JAX, cloning the model to save it and fitting the temperature.
    assert "Warning" not in whole.stderr + resumed.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["topology"]["backend"] == backend

    def without_times(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in rows]

    assert without_times(history(run)) == without_times(history(tmp_path / "whole"))
    scores = [json.loads(r.stdout) for r in (whole, resumed)]
    assert scores[0]["test_loss"] == scores[1]["test_loss"]
    assert scores[0]["test_accuracy"] == scores[1]["test_accuracy"]
    assert "deterministic: true" in (run / "config.yaml").read_text()
