"""A run's backup while it trains, in its `backup/` folder: every epoch's weights and random state
(`EpochBackup`) and the best epoch's weights (`BestWeights`), each written so that a kill at any
moment leaves a usable file; read back to resume (`restore_backup`, `trim_history`) or to end on
the best epoch (`load_best`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import keras
import numpy as np

from convnet.errors import RunError
from convnet.files import write_atomic

BACKUP_DIR = "backup"
_STATE_FILE = "state.json"
_BEST_FILE = "best.json"


class EpochBackup(keras.callbacks.Callback):
    """Saves the weights and optimizer state after every epoch, so training can resume there.

    Like Keras' `BackupAndRestore`, but a kill at any moment leaves a usable backup (see
    `_save_weights`). Place it after `CSVLogger`: `restore_backup` drops history rows of epochs
    the backup does not hold.

    Args:
        backup_dir: the folder the backup lives in (a run's `backup/`).
    """

    def __init__(self, backup_dir: str | Path):
        super().__init__()
        self.backup_dir = Path(backup_dir)

    def on_epoch_end(self, epoch, logs=None):
        generators = [keras.ops.convert_to_numpy(v).tolist() for v in _random_states(self.model)]
        state = {"epoch": epoch + 1, "random_states": generators}
        _save_weights(self.model, self.backup_dir, _STATE_FILE, "epoch", state)


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the lowest validation loss in the backup folder.

    Keras' `EarlyStopping(restore_best_weights=True)` holds them in memory, so a run resumed
    after its best epoch would forget it; here they and their loss survive in `backup/` (see
    `_save_weights`), and `load_best` puts them into the model once training is over.

    Args:
        backup_dir: the folder the backup lives in (a run's `backup/`).
    """

    def __init__(self, backup_dir: str | Path):
        super().__init__()
        self.backup_dir = Path(backup_dir)

    def on_train_begin(self, logs=None):
        state = _read_state(self.backup_dir / _BEST_FILE)
        self.best = float(state["val_loss"]) if state else math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get("val_loss")
        if value is None or not value < self.best:  # also skips NaN
            return
        self.best = float(value)
        _save_weights(
            self.model, self.backup_dir, _BEST_FILE, "best", {"epoch": epoch + 1, "val_loss": value}
        )


class _WeightsFile(io.BytesIO):
    """An in-memory `.weights.h5` (Keras checks the name's ending; h5py writes into memory).

    h5py writing to a full disk leaves HDF5 handles that crash the process at exit; written
    here, the bytes reach the disk through `write_atomic`, whose failure is a plain OSError.
    """

    def __str__(self) -> str:
        return "backup.weights.h5"


def _save_weights(model: keras.Model, backup_dir: Path, state_file: str, kind: str, state: dict):
    """Writes `KIND-EPOCH.weights.h5` atomically, then points `state_file` at it (also written
    atomically), then deletes older files of its kind: a kill at any moment leaves the state
    file pointing at a complete file."""
    backup_dir.mkdir(parents=True, exist_ok=True)
    name = f"{kind}-{state['epoch']}.weights.h5"
    buffer = _WeightsFile()
    model.save_weights(buffer)
    write_atomic(backup_dir / name, buffer.getvalue())
    write_atomic(backup_dir / state_file, json.dumps(state | {"weights": name}))
    for old in backup_dir.glob(f"{kind}-*.weights.h5"):
        if old.name != name:
            old.unlink()


def _read_state(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RunError(f"{path}: cannot read the backup ({error}).") from None


def _random_states(model: keras.Model) -> list:
    """The states of the model's random number generators (augmentation, dropout), in order.

    Keras' weight files leave them out. A resumed run that restores them draws the same
    augmentations and dropout masks as an uninterrupted run would.
    """
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _load_weights(model: keras.Model, backup_dir: Path, state_file: str) -> dict | None:
    """Loads the weights `state_file` points at into a compiled `model`; returns the state
    (with their `epoch`), or None when there is no such state file."""
    state = _read_state(backup_dir / state_file)
    if state is None:
        return None
    try:
        model.optimizer.build(model.trainable_variables)
        model.load_weights(backup_dir / state["weights"])
        state["epoch"] = int(state["epoch"])
        return state
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunError(f"{backup_dir}: cannot restore the backup ({error}).") from None


def restore_backup(model: keras.Model, backup_dir: str | Path) -> int:
    """Loads the last backed-up epoch into a compiled `model`.

    Returns:
        The number of epochs completed: the `initial_epoch` to continue from (0 without a backup).

    Raises:
        RunError: the backup exists but cannot be read.
    """
    state = _load_weights(model, Path(backup_dir), _STATE_FILE)
    if state is None:
        return 0
    generators = _random_states(model)
    saved = state.get("random_states", [])
    if len(saved) == len(generators):  # a backup from before they were kept has none
        for variable, value in zip(generators, saved, strict=True):
            variable.assign(np.asarray(value, dtype=variable.dtype))
    return state["epoch"]


def load_best(model: keras.Model, backup_dir: str | Path) -> int | None:
    """Loads the weights `BestWeights` kept into a compiled `model`.

    Returns:
        Their epoch (from 1), or None if no epoch had a validation loss.

    Raises:
        RunError: the backup exists but cannot be read.
    """
    state = _load_weights(model, Path(backup_dir), _BEST_FILE)
    return state and state["epoch"]


def trim_history(path: str | Path, epochs: int) -> dict[str, str]:
    """Keeps the rows of a CSVLogger file for epochs before `epochs`, dropping later or torn ones.

    Returns:
        The last kept row, field by field ({} if none): a resumed run continues its clock
        (`elapsed_seconds`) and time budget plan (`planned_epochs`) from it.
    """
    path = Path(path)
    lines = path.read_text().splitlines(keepends=True) if path.is_file() else []
    if not lines or not lines[0].endswith("\n"):
        path.unlink(missing_ok=True)  # no complete header: CSVLogger writes a fresh one
        return {}
    fields = next(csv.reader([lines[0]]))
    kept, last = [lines[0]], {}
    for line in lines[1:]:
        row = dict(zip(fields, next(csv.reader([line]), []), strict=False))
        epoch = row.get("epoch", "")
        if (
            not line.endswith("\n")
            or len(row) != len(fields)
            or not (epoch.isascii() and epoch.isdigit())
        ):
            break  # a row torn by a kill mid-write
        if int(epoch) >= epochs:
            break
        kept.append(line)
        last = row
    write_atomic(path, "".join(kept))
    return last
