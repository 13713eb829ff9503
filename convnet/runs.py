"""Run folders: everything one training wrote, read back by evaluate, predict, report and serve.

A run folder holds `config.yaml`, `model.keras`, `history.csv`, `metrics.json`, `manifest.json`,
`plots/` and `report.html`. Files are written atomically: a reader never sees half a file.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from convnet.config import TrainConfig, make_config, read_settings
from convnet.errors import ConvnetError, RunError
from convnet.files import write_atomic, write_yaml

if TYPE_CHECKING:  # the readers import NumPy and polars; `convnet runs` needs neither
    from convnet.data.dataset import Dataset

MODEL_FILE = "model.keras"
RUNS_ROOT = "runs"  # where a run goes without --out: RUNS_ROOT/PRESET-YYYYmmdd-HHMMSS
MIN_FREE_BYTES = 100 * 2**20  # a run writes a few MB; refuse to start on a nearly full disk


def new_run_dir(
    out: str | Path | None,
    preset: str,
    root: str | Path = RUNS_ROOT,
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
    check_new_run_dir(path, min_free=min_free)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = write_atomic(path / ".write-test", b"ok")
        probe.unlink()
    except OSError as error:
        raise RunError(f"{path}: cannot write the run folder ({error.strerror}).") from None
    return path


def check_new_run_dir(
    out: str | Path | None, root: str | Path = RUNS_ROOT, min_free: int = MIN_FREE_BYTES
) -> None:
    """Refuses, without creating anything, a run folder `out` that is a file, a folder that is
    not empty, one that cannot be made or written, or one on a nearly full disk; without `out`,
    a `root` for time-stamped folders that cannot be written or is on a nearly full disk.
    `new_run_dir` checks again as it makes the folder.

    Raises:
        RunError: saying which.
    """
    path = Path(out or root)
    if path.exists() and not path.is_dir():
        raise RunError(f"{path}: a file, not a folder; choose another --out.")
    if out and path.exists() and any(path.iterdir()):
        raise RunError(f"{path}: already exists and is not empty; choose another --out.")
    existing = next(p for p in [path, *path.absolute().parents] if p.exists())
    if not existing.is_dir():
        reason = os.strerror(errno.ENOTDIR)
        raise RunError(f"{path}: cannot write the run folder ({reason}).")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(f"{path}: cannot write the run folder ({os.strerror(errno.EACCES)}).")
    check_free_space(existing, min_free, name=path)


def check_free_space(
    path: str | Path, min_free: int = MIN_FREE_BYTES, name: str | Path | None = None
) -> None:
    """Raises RunError, naming `name` (default `path`), when the disk holding `path` has less
    than `min_free` bytes free."""
    free = shutil.disk_usage(path).free
    if free < min_free:
        raise RunError(
            f"{name or path}: only {free / 2**20:.0f} MB free on its disk; a run needs at least "
            f"{min_free / 2**20:.0f} MB. Free some space or choose another --out."
        )


def process_record() -> dict:
    """This process, as a run's manifest records who trains it."""
    return {"pid": os.getpid(), "hostname": platform.node()}


class Run:
    """A run folder on disk."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "config.yaml").is_file():
            raise RunError(f"{self.path}: not a run folder; expected config.yaml in it.")

    @classmethod
    def begin(cls, path: str | Path, config: TrainConfig) -> Run:
        """Writes `config` as the run's config.yaml (data paths made absolute, so the run reads
        back from any directory) and returns the run."""
        settings = config.resolved()
        for key in ("train", "test", "data_dir"):
            if settings[key]:
                settings[key] = os.path.abspath(settings[key])
        write_yaml(Path(path) / "config.yaml", settings)
        return cls(path)

    def check_resumable(self) -> None:
        """Refuses to resume a run that is complete or still training, or whose disk is full.

        Raises:
            RunError: saying which, and what to do.
        """
        manifest = self.read_json("manifest.json")
        if not manifest:  # killed before the manifest was written: it begins again
            return
        status = self.status()
        if status == "complete":
            raise RunError(f"{self.path}: the run is complete; there is nothing to resume.")
        if status == "running":
            pid = manifest.get("process", {}).get("pid")
            raise RunError(f"{self.path}: still being trained by process {pid}; stop it first.")
        check_free_space(self.path)

    def check_same_data(self, train: Dataset) -> None:
        """Refuses training data other than what the run began with (by SHA-256).

        Raises:
            RunError: the data changed; start a new run instead.
        """
        manifest = self.read_json("manifest.json")
        recorded = manifest.get("data", {}).get("train", {}).get("sha256")
        if recorded and recorded != train.checksum():
            raise RunError(
                f"{self.path}: the training data ({train.source}) changed since the run began; "
                "start a new run instead."
            )

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    def require_model(self) -> Path:
        """The run's model file.

        Raises:
            RunError: the run has none yet.
        """
        if not self.model_file.is_file():
            raise RunError(f"{self.path}: no {MODEL_FILE}; the run has not finished training.")
        return self.model_file

    def config(self) -> TrainConfig:
        """The settings the run was trained with, as `train` took them.

        Raises:
            RunError: config.yaml is not a valid config, naming what is wrong with it.
        """
        path = self.path / "config.yaml"
        try:
            settings = read_settings(path)
            if not settings:
                raise RunError(f"{path}: empty; expected the settings of a run.")
            return make_config(settings, str(path))
        except RunError:
            raise
        except ConvnetError as error:
            raise RunError(str(error)) from None

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
        from convnet.data import load_config_data  # the readers: NumPy and polars

        config = self.config()
        if test:
            config = dataclasses.replace(config, test=test, test_split=None)
        return load_config_data(config)[:2]

    def load_test(self, test: str | None = None):
        """The run's test set, or `test` fitted to the run's classes.

        `test` needs only the run's manifest, not its training data, which may be elsewhere.
        """
        from convnet.data import load_test  # the readers: NumPy and polars

        data = self.read_json("manifest.json").get("data", {})
        if test is None or "class_names" not in data:
            return self.load_data(test)[1]
        config = self.config()
        return load_test(
            test,
            tuple(data["image_shape"]),
            tuple(data["class_names"]),
            config.format,
            config.label_column,
            config.class_names,
            config.pixel_range,
        )

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
            "preset": manifest.get("preset") or self.config().preset,
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


def list_runs(root: str | Path = RUNS_ROOT) -> list[dict]:
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
