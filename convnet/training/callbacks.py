"""Callbacks convnet adds to Keras' own."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import keras

from convnet.errors import RunError
from convnet.runs import write_atomic


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` and `elapsed_seconds` (since training began) to each epoch's logs.

    `elapsed_seconds` is wall-clock time, so it counts the work between epochs (backups,
    logging) too. Place it before `CSVLogger` so the history file records the times.

    Args:
        elapsed: seconds already spent, when a run resumes.
    """

    def __init__(self, elapsed: float = 0.0):
        super().__init__()
        self.initial_elapsed = elapsed

    def on_train_begin(self, logs=None):
        self._train_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        if logs is not None:
            logs["epoch_seconds"] = now - self._start
            logs["elapsed_seconds"] = self.initial_elapsed + now - self._train_start


BACKUP_DIR = "backup"
_STATE_FILE = "state.json"


class EpochBackup(keras.callbacks.Callback):
    """Saves the weights and optimizer state after every epoch, so training can resume there.

    Like Keras' `BackupAndRestore`, but a kill at any moment leaves a usable backup: each epoch
    writes `epoch-N.weights.h5` to a temporary name and renames it, then points `state.json` at
    it (also renamed into place), then deletes the older file. Place it after `CSVLogger`:
    `restore_backup` drops history rows of epochs the backup does not hold.

    Args:
        backup_dir: the folder the backup lives in (a run's `backup/`).
    """

    def __init__(self, backup_dir: str | Path):
        super().__init__()
        self.backup_dir = Path(backup_dir)

    def on_epoch_end(self, epoch, logs=None):
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1}.weights.h5"
        tmp = self.backup_dir / f".tmp-{name}"
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, self.backup_dir / name)
        write_atomic(
            self.backup_dir / _STATE_FILE, json.dumps({"epoch": epoch + 1, "weights": name})
        )
        for old in self.backup_dir.glob("*.weights.h5"):
            if old.name != name:
                old.unlink()


def restore_backup(model: keras.Model, backup_dir: str | Path) -> int:
    """Loads the last backed-up epoch into a compiled `model`.

    Returns:
        The number of epochs completed: the `initial_epoch` to continue from (0 without a backup).

    Raises:
        RunError: the backup exists but cannot be read.
    """
    state_path = Path(backup_dir) / _STATE_FILE
    if not state_path.is_file():
        return 0
    try:
        state = json.loads(state_path.read_text())
        model.optimizer.build(model.trainable_variables)
        model.load_weights(Path(backup_dir) / state["weights"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunError(f"{backup_dir}: cannot restore the backup ({error}).") from None
    return int(state["epoch"])


def trim_history(path: str | Path, epochs: int) -> float:
    """Keeps the rows of a CSVLogger file for epochs before `epochs`, dropping later or torn ones.

    Returns:
        The `elapsed_seconds` of the last kept row (0.0 if none), to continue the clock from.
    """
    path = Path(path)
    lines = path.read_text().splitlines(keepends=True) if path.is_file() else []
    if not lines or not lines[0].endswith("\n"):
        path.unlink(missing_ok=True)  # no complete header: CSVLogger writes a fresh one
        return 0.0
    fields = next(csv.reader([lines[0]]))
    kept, elapsed = [lines[0]], 0.0
    for line in lines[1:]:
        row = dict(zip(fields, next(csv.reader([line]), []), strict=False))
        epoch = row.get("epoch", "")
        if not line.endswith("\n") or len(row) != len(fields) or not epoch.isdigit():
            break  # a row torn by a kill mid-write
        if int(epoch) >= epochs:
            break
        kept.append(line)
        elapsed = float(row.get("elapsed_seconds") or 0.0)
    write_atomic(path, "".join(kept))
    return elapsed
