"""Run folders: everything one training wrote, read back by evaluate, predict, report and serve.

A run folder holds `config.yaml`, `model.keras`, `history.csv`, `metrics.json`, `manifest.json`,
`plots/` and `report.html`. Files are written atomically: a reader never sees half a file.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import json
import os
import platform
import time
import zipfile
from pathlib import Path, PurePath, PureWindowsPath
from typing import TYPE_CHECKING

from convnet.config import TrainConfig, make_config, read_settings
from convnet.data.settings import is_dataset_name
from convnet.errors import ConvnetError, RunError
from convnet.files import write_atomic, write_yaml
from convnet.run_folders import RUNS_ROOT, check_free_space

if TYPE_CHECKING:  # the readers import NumPy and polars; `convnet runs` needs neither
    from convnet.data.dataset import DataRecord

MODEL_FILE = "model.keras"
TUNE_PLAN = "tune.json"  # marks a tune folder (`convnet tune`), listed beside run folders
DATA_PATHS = ("train", "test", "data_dir")  # the settings that name files or folders


@dataclasses.dataclass(frozen=True)
class InputReading:
    """How a run's model reads its inputs (`Run.input_reading`).

    Attributes:
        pixel_range: "LOW,HIGH", the range of the training data's values, which arrays given to
            the model are read in too; "0,255" for runs older than the record.
        light_background: whether the training images are dark on light; pictures are
            inverted to match (`convnet.inputs.image_to_input`).
        image_shape: the model's input shape (H, W, C), or None where the manifest does not
            record it (older runs record it only in the model).
        class_names: the names of the model's classes by index, or None for runs older than
            the record.
    """

    pixel_range: str
    light_background: bool = False
    image_shape: tuple[int, ...] | None = None
    class_names: tuple[str, ...] | None = None

    def options(self) -> dict:
        """The keyword arguments of `convnet.inputs.load_inputs` and its kin."""
        return {"light_background": self.light_background, "pixel_range": self.pixel_range}


class Run:
    """A run folder on disk."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "config.yaml").is_file():
            raise RunError(f"{self.path}: not a run folder; expected config.yaml in it.")

    @classmethod
    def begin(cls, path: str | Path, config: TrainConfig) -> Run:
        """Writes `config` as the run's config.yaml and returns the run. Data paths are made
        absolute, so the run reads back from any directory; data the run keeps in its own
        folder (given in Python, `RUN/data/`) is named relative to it, so the run still reads
        it once the folder is moved."""
        settings = config.resolved()
        folder = os.path.abspath(path)
        for key in DATA_PATHS:
            if settings[key] and (key == "data_dir" or not is_dataset_name(settings[key])):
                absolute = os.path.abspath(settings[key])
                inside = os.path.commonpath([folder, absolute]) == folder
                settings[key] = os.path.relpath(absolute, folder) if inside else absolute
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

    def check_same_data(self, train: DataRecord) -> None:
        """Refuses training data other than what the run began with (by SHA-256).

        Raises:
            RunError: the data changed; start a new run instead.
        """
        manifest = self.read_json("manifest.json")
        recorded = manifest.get("data", {}).get("train", {}).get("sha256")
        if recorded and recorded != train.sha256:
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
            for key in DATA_PATHS:  # relative: the data the run keeps (`begin`)
                value = settings.get(key)
                if isinstance(value, str) and not (os.path.isabs(value) or is_dataset_name(value)):
                    settings[key] = str(self.path / value)
            return make_config(settings, str(path))
        except RunError:
            raise
        except ConvnetError as error:
            raise RunError(str(error)) from None

    def read_json(self, name: str) -> dict:
        """The JSON object in the run's file `name`; {} when there is no such file.

        Raises:
            RunError: the file is not a JSON object (damaged, or not written by convnet).
        """
        return read_json_object(self.path / name)

    def write_json(self, name: str, data) -> Path:
        return write_atomic(self.path / name, json.dumps(data, indent=2, default=str) + "\n")

    def input_reading(self) -> InputReading:
        """How the run's model reads its inputs: what `predict`, `serve`, `evaluate --test` and
        `convnet.Run.predict` read files, arrays and pictures as."""
        from convnet.data.pixels import FULL_RANGE  # the data package imports NumPy and polars

        data = self.read_json("manifest.json").get("data", {})
        shape = data.get("image_shape")
        return InputReading(
            pixel_range=self.config().pixel_range or FULL_RANGE,  # older runs: 0-255
            light_background=bool(data.get("background_is_light", False)),
            image_shape=tuple(shape) if shape is not None else None,
            class_names=self.class_names(),
        )

    def class_names(self) -> tuple[str, ...] | None:
        """The names of the model's classes, by index (None for runs older than the record)."""
        names = self.read_json("manifest.json").get("data", {}).get("class_names")
        return tuple(names) if names is not None else None

    def check_outputs(self, count: int) -> None:
        """Refuses a model whose `count` outputs are not the classes the run's record names:
        predictions would be named wrongly, or past the end of the names.

        Raises:
            RunError: naming the manifest, both counts, and what to do.
        """
        names = self.class_names()
        if names is not None and len(names) != count:
            raise RunError(
                f"{self.path / 'manifest.json'}: names {len(names)} classes, but {MODEL_FILE} "
                f"gives {count} outputs; the record does not match the model. Restore the run's "
                "manifest.json, or train the run again."
            )

    def set_status(self, status: str, **extra) -> None:
        """Writes `status` (and `extra`) into the manifest, so that it says what the run is.

        On a full disk, where the atomic write has no room for its copy, the manifest is
        rewritten in place: a few bytes more fit in the blocks it holds already, and a run
        stopped by a full disk must not stay "running" in its own record.

        Raises:
            OSError: neither write could be made.
        """
        manifest = self.read_json("manifest.json") | {"status": status} | extra
        try:
            self.write_json("manifest.json", manifest)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            text = json.dumps(manifest, indent=2, default=str) + "\n"
            with (self.path / "manifest.json").open("r+b") as f:
                f.write(text.encode())
                f.truncate()
                os.fsync(f.fileno())

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

        reading = self.input_reading()
        if test is None or reading.class_names is None or reading.image_shape is None:
            return self.load_data(test)[1]
        config = self.config()
        return load_test(
            test,
            reading.image_shape,
            reading.class_names,
            config.format,
            config.label_column,
            config.class_names,
            # The range recorded, as `load_data` reads the run's own test set: runs older than
            # the record have none, and their test data's range is detected.
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
        config = self.config()  # a config.yaml that does not read is a damaged run
        status = self.status()
        if status == "complete" and not zipfile.is_zipfile(self.model_file):
            raise RunError(f"{self.model_file}: damaged; not a .keras zip archive.")
        return {
            "run": str(self.path),
            "status": status,
            "preset": manifest.get("preset") or config.preset,
            "test_accuracy": self.read_json("metrics.json").get("test_accuracy"),
            "started": manifest.get("started"),
        }


def _tune_summary(path: Path) -> dict:
    """A tune folder's line: trials finished of those planned, the best run's test accuracy.

    Raises:
        RunError: its tune.json is damaged.
    """
    plan = read_json_object(path / TUNE_PLAN)
    trials = path / "trials.csv"
    rows = list(csv.DictReader(trials.read_text().splitlines())) if trials.is_file() else []
    finished = sum(row.get("state") in ("complete", "pruned") for row in rows)
    accuracy = read_json_object(path / "best" / "metrics.json").get("test_accuracy")
    made = time.localtime((path / TUNE_PLAN).stat().st_mtime)
    return {
        "run": str(path),
        "status": f"tune {finished}/{plan.get('trials')}",
        "preset": plan.get("config", {}).get("preset"),
        "test_accuracy": accuracy,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", made),
    }


def read_json_object(path: Path) -> dict:
    """The JSON object in file `path`; {} when there is no such file.

    Raises:
        RunError: the file is not a JSON object (damaged, or not written by convnet).
    """
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, OSError) as error:
        raise RunError(f"{path}: damaged; not readable JSON ({error}).") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(data).__name__}.")
    return data


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
    listed = ("config.yaml", TUNE_PLAN)
    folders = [root] if any((root / f).is_file() for f in listed) else sorted(root.iterdir())
    runs = [_summary(p) for p in folders if any((p / f).is_file() for f in listed)]
    return sorted(runs, key=lambda r: (r["started"] or "", r["run"]))


def _summary(path: Path) -> dict:
    """A run's line in the list; a damaged run is listed as such, not a reason to list none."""
    try:
        return Run(path).summary() if (path / "config.yaml").is_file() else _tune_summary(path)
    except RunError:
        return dict.fromkeys(("preset", "test_accuracy", "started")) | {
            "run": str(path),
            "status": "damaged",
        }


def source_name(source: str | None) -> str | None:
    """A run's data source without its folder ("/data/fm.npz:test" -> "fm.npz:test"), as what a
    run shows to others (the server, the model card) names it: the machine's paths are not theirs
    to read."""
    if not source:
        return source
    # The shorter of the two readings also strips a folder written with backslashes (Windows).
    return min(PurePath(source).name, PureWindowsPath(source).name, key=len)
