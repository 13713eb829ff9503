"""A tune's plan, `tune.json` in its folder: everything a worker process needs to run the same
study's trials. No framework and no Optuna: a plan is checked, and refused, at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import filelock

from convnet.config import TrainConfig
from convnet.data.settings import is_dataset_name
from convnet.errors import ConfigError, setting
from convnet.files import write_atomic
from convnet.tuning.space import (
    PRUNERS,
    Param,
    check_objectives,
    load_space,
    space_record,
)

PLAN_FILE = "tune.json"
STORAGE_FILE = "study.db"
HIDDEN = "***"
# Held while a process makes or joins the tune in its folder, and while it replaces `best`. An OS
# lock (flock), released however the process ends.
LOCK_FILE = ".tune.lock"
# What a tune's folder holds before its plan is written: the lock, the SQLite study.
MAKING = (LOCK_FILE, STORAGE_FILE, f"{STORAGE_FILE}-journal", f"{STORAGE_FILE}-wal")


@dataclass
class TunePlan:
    """What to search and how.

    Attributes:
        folder: the tune folder.
        config: the settings every trial starts from (TrainConfig keys, recipe overrides).
        params: the space, as `space_record` gives it; `space()` rebuilds it.
        fixed: recipe settings every trial takes as they are.
        objectives: one or two of `convnet.tuning.space.OBJECTIVES`.
        trials: finished trials (complete or pruned) the study stops at.
        time_budget: seconds each worker searches for at most; None for no limit.
        workers: worker processes on this machine.
        storage: the study's database URL, its password hidden; None for `study.db` here.
        study: the study's name.
        pruner: "median", "hyperband" or "none".
        heartbeat: seconds between a running trial's heartbeats.
        seed: the sampler's seed, taken with each trial's number (`convnet.tuning.sampler`);
            None for a random one.
        tensorboard, mlflow: where each trial's run is also recorded (`convnet train`'s
            --tensorboard and --mlflow); None for nowhere.
        writes_outputs: whether this process writes trials.csv after its trials (not saved).
    """

    folder: Path
    config: dict
    params: dict
    fixed: dict
    objectives: list[str]
    trials: int = 20
    time_budget: float | None = None
    workers: int = 1
    storage: str | None = None
    study: str = "convnet"
    pruner: str = "median"
    heartbeat: int = 30
    seed: int | None = None
    tensorboard: str | None = None
    mlflow: str | None = None
    writes_outputs: bool = field(default=True, compare=False)

    def space(self) -> dict[str, Param]:
        return {
            name: Param(name, choices=tuple(p["choices"]))
            if "choices" in p
            else Param(name, p["low"], p["high"], p["log"])
            for name, p in self.params.items()
        }

    def searches_as(self, other: TunePlan) -> bool:
        """Whether this plan searches the same space of the same settings as `other` (how its
        workers run, and where its study is stored, aside)."""
        same = ("config", "params", "fixed", "objectives", "study", "pruner")
        return all(getattr(self, name) == getattr(other, name) for name in same)

    def storage_url(self, given: str | None = None) -> str:
        """The URL to open: `given`, else the plan's, else the SQLite file in the folder.

        Raises:
            ConfigError: the plan's URL had a password, which tune.json does not keep.
        """
        if given:
            return given
        if self.storage and HIDDEN in self.storage:
            raise ConfigError(
                f"{self.folder / PLAN_FILE}: its storage URL's password is not kept; pass "
                f"{setting('storage')} again."
            )
        return self.storage or f"sqlite:///{(self.folder / STORAGE_FILE).resolve()}"

    def write(self) -> Path:
        record = dataclasses.asdict(self)
        record.pop("writes_outputs")
        record["folder"] = str(self.folder)
        return write_atomic(self.folder / PLAN_FILE, json.dumps(record, indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> TunePlan:
        """The plan in `folder`'s tune.json.

        Raises:
            ConfigError: it is missing or not a plan.
        """
        path = folder / PLAN_FILE
        try:
            record = json.loads(path.read_text())
            record.pop("folder", None)
            return cls(folder=folder, **record)
        except (OSError, ValueError, TypeError) as error:
            raise ConfigError(f"{path}: not a tune plan ({error}).") from None


def config_record(config: TrainConfig) -> dict:
    """The settings of `config` as given (not the recipe filled in, so that what depends on the
    data is decided again), data paths made absolute so workers read them from anywhere."""
    values = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name not in ("overrides", "out")
    }
    for key in ("train", "test", "data_dir"):
        if values[key] and (key == "data_dir" or not is_dataset_name(values[key])):
            values[key] = os.path.abspath(values[key])
    return {k: v for k, v in values.items() if v is not None} | config.overrides


def hide_password(url: str) -> str:
    """`url` with any password replaced by ***, for messages and files."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", rf"\1{HIDDEN}@", url)


def check_numbers(
    trials: int | None, workers: int, time_budget: float | None, heartbeat: int | None
) -> None:
    """Refuses a tune's numbers out of range (None: the default, or a continued tune's own).

    Raises:
        ConfigError: naming the first one, what it must be and what it is.
    """
    checks = [
        ("trials", trials, trials is None or trials >= 1, "an integer >= 1"),
        ("workers", workers, workers >= 1, "an integer >= 1"),
        ("time_budget", time_budget, time_budget is None or time_budget > 0, "> 0 seconds"),
        ("heartbeat", heartbeat, heartbeat is None or heartbeat >= 1, "an integer >= 1 (seconds)"),
    ]
    for name, value, ok, expected in checks:
        if not ok:
            raise ConfigError(f"{name} must be {expected}. Received: {value!r}.")


def check_folder(folder: Path) -> TunePlan | None:
    """The plan of the tune in `folder`, to continue; None for a new tune there.

    Raises:
        ConfigError: `folder` is a file, or a folder holding other things than a tune.
    """
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"{folder}: a file, not a folder; choose another {setting('out')} for the tune."
        )
    if (folder / PLAN_FILE).is_file():
        return TunePlan.read(folder)
    # Another tune started there at the same time may be making it; `convnet.tuning.tune.run`
    # settles, under the folder's lock, which plan holds.
    if folder.exists() and any(p.name not in MAKING for p in folder.iterdir()):
        raise ConfigError(
            f"{folder}: already exists, is not empty and holds no tune; choose another "
            f"{setting('out')} for the tune."
        )
    return None


def new_plan(
    folder: Path,
    config: TrainConfig,
    space: str | Path | None,
    objectives: list[str] | None,
    study: str | None,
    pruner: str | None,
    storage: str | None,
    **running,
) -> TunePlan:
    """The plan of a new tune of `config.preset` (see `convnet.api.tune` for the arguments).

    Raises:
        ConfigError: a bad space file, objective or pruner.
    """
    params, fixed = load_space(config.preset, space)
    for name in set(params) & set(config.overrides):  # given as a flag or in --config: fixed
        del params[name]
    if (pruner or "median") not in PRUNERS:
        raise ConfigError(f"pruner must be {' or '.join(PRUNERS)}. Received: {pruner!r}.")
    return TunePlan(
        folder=folder,
        config=config_record(config),
        params=space_record(params),
        fixed=fixed,
        objectives=check_objectives(list(objectives or ["val_accuracy"])),
        trials=running.pop("trials") or 20,
        heartbeat=running.pop("heartbeat") or 30,
        storage=hide_password(storage) if storage else None,
        study=study or "convnet",
        pruner=pruner or "median",
        seed=config.seed,
        **running,
    )


def continued_plan(earlier: TunePlan, given: dict, storage: str | None, **running) -> TunePlan:
    """An earlier tune's plan, to continue with how it runs changed (trials, workers, ...).

    Raises:
        ConfigError: settings of what it searches were given too.
    """
    changed = sorted(key for key, value in given.items() if value is not None)
    if changed:
        raise ConfigError(
            f"{earlier.folder} is a tune to continue with its own {PLAN_FILE}; drop the other "
            f"settings (received: {', '.join(changed)}), or choose another {setting('out')} "
            "for a new tune."
        )
    trials = running.pop("trials") or earlier.trials
    stored = hide_password(storage) if storage else earlier.storage
    for kept in ("heartbeat", "tensorboard", "mlflow"):  # as before unless given again
        if running[kept] is None:
            running[kept] = getattr(earlier, kept)
    return dataclasses.replace(earlier, trials=trials, storage=stored, **running)


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Holds the tune folder's lock during the block, making the folder if needed; a folder
    made here that holds nothing else when the block fails is removed again."""
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with filelock.FileLock(folder / LOCK_FILE):
            yield
    except BaseException:
        if made and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
            with contextlib.suppress(OSError):
                (folder / LOCK_FILE).unlink()
                folder.rmdir()
        raise
