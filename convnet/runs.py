"""Run folders: everything one training wrote, read back by evaluate, predict, report and serve.

A run folder holds `config.yaml`, `model.keras`, `history.csv`, `metrics.json`, `manifest.json`,
`plots/` and `report.html`. Files are written atomically: a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import yaml

from convnet.errors import RunError

MODEL_FILE = "model.keras"
MIN_FREE_BYTES = 100 * 2**20  # a run writes a few MB; refuse to start on a nearly full disk
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


def new_run_dir(
    out: str | Path | None,
    preset: str,
    root: str | Path = "runs",
    min_free: int = MIN_FREE_BYTES,
) -> Path:
    """Creates an empty, writable run folder: `out`, or `root/PRESET-YYYYmmdd-HHMMSS`.

    Args:
        out: the folder to create, or None for a time-stamped one under `root`.
        preset: the preset's name, for the default folder name.
        root: where default folders go.
        min_free: bytes that must be free on the folder's disk.

    Raises:
        RunError: the folder exists and is not empty, cannot be written, or its disk is full.
    """
    path = Path(out) if out else Path(root) / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if path.exists() and not path.is_dir():
        raise RunError(f"{path}: a file, not a folder; choose another --out.")
    if path.exists() and any(path.iterdir()):
        raise RunError(f"{path}: already exists and is not empty; choose another --out.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = write_atomic(path / ".write-test", b"ok")
        probe.unlink()
    except OSError as error:
        raise RunError(f"{path}: cannot write the run folder ({error.strerror}).") from None
    try:
        check_free_space(path, min_free)
    except RunError:
        path.rmdir()
        raise
    return path


def check_free_space(path: str | Path, min_free: int = MIN_FREE_BYTES) -> None:
    """Raises RunError when the disk holding `path` has less than `min_free` bytes free."""
    free = shutil.disk_usage(path).free
    if free < min_free:
        raise RunError(
            f"{path}: only {free / 2**20:.0f} MB free on its disk; a run needs at least "
            f"{min_free / 2**20:.0f} MB. Free some space or choose another --out."
        )


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

    def load_data(self, test: str | None = None):
        """The run's (training, test) Datasets, as its config names them.

        Args:
            test: another test set to use instead of the run's own.
        """
        from convnet.data import load_train_test

        config = self.config()
        keys = ("format", "label_column", "class_names", "data_dir")
        return load_train_test(config["train"], test or config["test"], *(config[k] for k in keys))

    def load_test(self, test: str | None = None):
        """The run's test set, or `test` fitted to the run's classes.

        `test` needs only the run's manifest, not its training data, which may be elsewhere.
        """
        from convnet.data import load_test

        data = self.read_json("manifest.json").get("data", {})
        if test is None or "class_names" not in data:
            return self.load_data(test)[1]
        config = self.config()
        return load_test(
            test,
            tuple(data["image_shape"]),
            tuple(data["class_names"]),
            config["format"],
            config["label_column"],
            config["class_names"],
        )

    def load_model(self, safe_mode: bool = True):
        """The trained Keras model.

        Args:
            safe_mode: refuse models that carry code (Lambda layers); see Keras `load_model`.

        Raises:
            RunError: the run has no model yet, or the model cannot be loaded safely.
        """
        import keras

        import convnet.models.layers  # noqa: F401  (for models saved before they were plain Keras)

        path = self.path / MODEL_FILE
        if not path.is_file():
            raise RunError(f"{self.path}: no {MODEL_FILE}; the run has not finished training.")
        try:
            return keras.saving.load_model(path, safe_mode=safe_mode)
        except ValueError as error:
            if safe_mode and "safe_mode" in str(error):
                raise RunError(
                    f"{path}: the model carries Python code (a Lambda layer), which could do "
                    "anything when loaded; refused. `evaluate` and `predict` take --unsafe, only "
                    "for files you trust; `serve` and `export` never load such a model."
                ) from None
            raise RunError(f"{path}: cannot load the model ({error}).") from None
        except (OSError, zipfile.BadZipFile, KeyError) as error:
            raise RunError(f"{path}: cannot load the model ({error}).") from None

    def status(self) -> str:
        """ "complete", "running", "interrupted" or "failed" (from the manifest).

        A run still marked "running" whose process is gone on this machine (killed) counts as
        "interrupted"; `convnet train --resume` continues either.
        """
        manifest = self.read_json("manifest.json")
        status = manifest.get("status", "incomplete")
        process = manifest.get("process", {})
        if (
            status == "running"
            and process.get("hostname") == platform.node()
            and not _alive(process.get("pid"))
        ):
            return "interrupted"
        return status

    def summary(self) -> dict:
        """One line of `convnet runs`: name, status, preset, test accuracy, start date."""
        manifest = self.read_json("manifest.json")
        return {
            "run": str(self.path),
            "status": self.status(),
            "preset": manifest.get("preset") or self.config().get("preset"),
            "test_accuracy": self.read_json("metrics.json").get("test_accuracy"),
            "started": manifest.get("started"),
        }


def _alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_runs(root: str | Path = "runs") -> list[dict]:
    """Summaries of the run folders directly under `root`, oldest first; `root` itself when it
    is a run folder.

    Raises:
        RunError: `root` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise RunError(f"{root}: no such folder of runs.")
    folders = [root] if (root / "config.yaml").is_file() else sorted(root.iterdir())
    runs = [Run(p).summary() for p in folders if (p / "config.yaml").is_file()]
    return sorted(runs, key=lambda r: (r["started"] or "", r["run"]))


def write_yaml(path: str | Path, data: dict) -> Path:
    return write_atomic(path, yaml.safe_dump(data, sort_keys=False))
