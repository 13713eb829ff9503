"""Run folders: everything one training wrote, read back by evaluate, predict, report and serve.

A run folder holds `config.yaml`, `model.keras`, `history.csv`, `metrics.json`, `manifest.json`,
`plots/` and `report.html`. Files are written atomically: a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import yaml

from convnet.errors import RunError

MODEL_FILE = "model.keras"
_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Writes `data` to a temporary file beside `path`, then renames it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def new_run_dir(out: str | Path | None, preset: str, root: str | Path = "runs") -> Path:
    """Creates an empty, writable run folder: `out`, or `root/PRESET-YYYYmmdd-HHMMSS`.

    Raises:
        RunError: the folder exists and is not empty, or cannot be written.
    """
    path = Path(out) if out else Path(root) / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RunError(f"{path}: already exists and is not empty; choose another --out.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = write_atomic(path / ".write-test", b"ok")
        probe.unlink()
    except OSError as error:
        raise RunError(f"{path}: cannot write the run folder ({error.strerror}).") from None
    return path


class Run:
    """A run folder on disk."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "config.yaml").is_file():
            raise RunError(f"{self.path}: not a run folder; expected config.yaml in it.")

    def config(self) -> dict:
        return yaml.safe_load((self.path / "config.yaml").read_text())

    def read_json(self, name: str) -> dict:
        path = self.path / name
        return json.loads(path.read_text()) if path.is_file() else {}

    def write_json(self, name: str, data) -> Path:
        return write_atomic(self.path / name, json.dumps(data, indent=2, default=str) + "\n")

    def load_model(self, safe_mode: bool = True):
        """The trained Keras model.

        Args:
            safe_mode: refuse models that carry code (Lambda layers); see Keras `load_model`.

        Raises:
            RunError: the run has no model yet, or the model cannot be loaded safely.
        """
        import keras

        path = self.path / MODEL_FILE
        if not path.is_file():
            raise RunError(f"{self.path}: no {MODEL_FILE}; the run has not finished training.")
        try:
            return keras.saving.load_model(path, safe_mode=safe_mode)
        except ValueError as error:
            raise RunError(f"{path}: cannot load the model safely ({error}).") from None


def write_yaml(path: str | Path, data: dict) -> Path:
    return write_atomic(path, yaml.safe_dump(data, sort_keys=False))
