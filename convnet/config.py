"""Training configuration: dataclass defaults, then a YAML file, then explicit flags.

Recipe knobs (epochs, batch_size, ...) are the fields of `convnet.models.Recipe`; a value given
here overrides the preset's own. Unknown keys and wrong types are errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from convnet.backend import BACKENDS
from convnet.data.settings import FORMATS, parse_range
from convnet.errors import ConfigError
from convnet.models.recipe import AUGMENT_FIELDS, OPTIMIZERS, PRECISIONS, SCHEDULES, Recipe
from convnet.models.registry import get_preset

RECIPE_FIELDS = frozenset(f.name for f in dataclasses.fields(Recipe))


@dataclass
class TrainConfig:
    """What to train on, and where to write the run. See `Recipe` for how to train."""

    preset: str = field(default="seed", metadata={"help": "model preset (see `convnet presets`)"})
    train: str | None = field(
        default=None,
        metadata={
            "help": "training data: CSV, NPZ, IDX images file or image folder, or a dataset "
            "name: mnist, kmnist, emnist-letters, quickdraw:CLASS,CLASS (default: fashion-mnist)"
        },
    )
    test: str | None = field(default=None, metadata={"help": "test data, same formats"})
    format: str | None = field(
        default=None,
        metadata={"help": "the data's format (default: from the name)", "choices": FORMATS},
    )
    label_column: str | None = field(
        default=None, metadata={"help": "CSV label column name or index"}
    )
    class_names: str | None = field(
        default=None, metadata={"help": "comma-separated names, or fashion-mnist / mnist"}
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "folder holding the named dataset, or to download it into"},
    )
    limit: int | None = field(default=None, metadata={"help": "train on the first N examples"})
    stratify: bool = field(default=False, metadata={"help": "stratified validation split"})
    test_split: float | None = field(
        default=None,
        metadata={
            "help": "share of a source without a test set held out to test on, stratified "
            "and seeded (default: 0.2)"
        },
    )
    stream: bool | None = field(
        default=None,
        metadata={
            "help": "read the images from disk a batch at a time (--stream: per-class .npy "
            "folders, raw IDX files, uncompressed NPZ) or hold them in memory (--no-stream) "
            "(default: stream such sources over 2 GiB or a quarter of free memory)"
        },
    )
    pixel_range: str | None = field(
        default=None,
        metadata={
            "help": "LOW,HIGH that CSV, NPZ or IDX values span, scaled to 0-255: 0,255, 0,16, "
            "0,1, -1,1 (default: detected)"
        },
    )
    class_weight: str | None = field(
        default=None,
        metadata={
            "help": "weigh each class's examples in the loss: balanced (inverse to its "
            "frequency), none, or a JSON file of {class name: weight} (default: none)"
        },
    )
    seed: int = field(default=42, metadata={"help": "seed for the split, weights and shuffling"})
    deterministic: bool = field(
        default=False,
        metadata={"help": "deterministic ops: the same seed gives the same metrics (slower)"},
    )
    out: str | None = field(
        default=None, metadata={"help": "run folder (default: runs/PRESET-TIME)"}
    )
    # Topology (see convnet/training/distributed.py and docs/distributed.md).
    backend: str | None = field(
        default=None,
        metadata={
            "help": "Keras backend (default: $KERAS_BACKEND, else tensorflow)",
            "choices": BACKENDS,
        },
    )
    devices: int | None = field(
        default=None, metadata={"help": "data-parallel devices per process (default: 1)"}
    )
    num_processes: int | None = field(
        default=None,
        metadata={"help": "processes (hosts) in all, jax only ($CONVNET_NUM_PROCESSES, SLURM)"},
    )
    process_id: int | None = field(
        default=None,
        metadata={"help": "this process's rank, 0 writes the run ($CONVNET_PROCESS_ID)"},
    )
    coordinator: str | None = field(
        default=None, metadata={"help": "HOST:PORT of process 0 ($CONVNET_COORDINATOR)"}
    )
    join_timeout: int = field(
        default=300, metadata={"help": "seconds to wait for every process to join (default: 300)"}
    )
    overrides: dict = field(default_factory=dict, metadata={"cli": False})

    def __post_init__(self):
        if self.test_split is not None and not 0 < self.test_split < 1:
            raise ConfigError(f"test_split must be in (0, 1). Received: {self.test_split}.")
        if self.pixel_range is not None:
            parse_range(self.pixel_range)
        if self.limit is not None and self.limit < 1:
            raise ConfigError(
                f"limit must be a number of examples >= 1 (unset for all). Received: {self.limit}."
            )
        for name, choices in (("format", FORMATS), ("backend", BACKENDS)):
            value = getattr(self, name)
            if value is not None and value not in choices:
                raise ConfigError(
                    f"{name} must be one of {', '.join(choices)}. Received: {value!r}."
                )

    def recipe(self) -> Recipe:
        """The preset's recipe with this config's overrides applied.

        A config that sets every recipe field (a run's config.yaml) needs no preset: the run of
        a preset registered in another process reads back without it.
        """
        if set(self.overrides) >= RECIPE_FIELDS:
            return Recipe(**self.overrides)
        return dataclasses.replace(get_preset(self.preset).recipe, **self.overrides)

    def resolved(self) -> dict:
        """Every setting, the recipe filled in: what a run folder's `config.yaml` holds, the
        augmentation settings in an `augment` section."""
        values = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "overrides"
        }
        recipe = dataclasses.asdict(self.recipe())
        augment = {name: recipe.pop(name) for name in AUGMENT_FIELDS}
        return values | recipe | {"augment": augment}


# Settings only a training run uses: where to write it, how long and at what rates to train,
# what to keep and how to predict, and the distributed topology (not the backend, which
# `lr-find` takes too). `lr-find` runs one fresh model in one process at rates of its own and
# writes no run, so it offers no flags for these; in a config file they are ignored, so a
# training config can be reused as it is.
TRAINING_ONLY = (
    "out",
    "epochs",
    "time_budget",
    "learning_rate",
    "schedule",
    "warmup_epochs",
    "restore_best",
    "patience",
    "class_weight",
    *AUGMENT_FIELDS,
    "shift_tta",
    "calibrate",
    "devices",
    "num_processes",
    "process_id",
    "coordinator",
    "join_timeout",
)


def check_not_training_only(settings: dict) -> None:
    """Refuses settings given to `lr_find` that only a training uses, as `convnet lr-find`
    offers no flags for them (a config file's are ignored).

    Raises:
        ConfigError: naming them.
    """
    unused = sorted(set(settings) & set(TRAINING_ONLY))
    if unused:
        raise ConfigError(
            f"lr_find takes no {', '.join(unused)}: it runs `steps` batches of one fresh model, "
            "at rates of its own, and writes no run."
        )


# The choices of the recipe's enumerated settings, for the CLI's help and argparse's checks.
RECIPE_CHOICES = {"schedule": SCHEDULES, "precision": PRECISIONS, "optimizer": OPTIMIZERS}


def check_lr_range(steps: int, min_lr: float, max_lr: float) -> None:
    """The settings of `lr-find`'s range test.

    Raises:
        ConfigError: unless steps >= 2 and 0 < min_lr < max_lr.
    """
    if steps < 2 or not 0 < min_lr < max_lr:
        raise ConfigError(
            "lr-find needs steps >= 2 and 0 < min_lr < max_lr. "
            f"Received: steps={steps}, min_lr={min_lr}, max_lr={max_lr}."
        )


def config_fields() -> list[dataclasses.Field]:
    """Every settable field, config first, then recipe: the flags the CLI offers."""
    own = [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("cli", True)]
    return own + list(dataclasses.fields(Recipe))


def field_type(name: str) -> type:
    """The type a config or recipe field holds, `None` aside: str, int, float or bool."""
    hint = _hints()[name]
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return next(k for k in kinds if k is not type(None))


def _hints() -> dict[str, typing.Any]:
    return typing.get_type_hints(TrainConfig) | typing.get_type_hints(Recipe)


def _check_type(key: str, value, hint, source: str):
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        if kind is str and isinstance(value, os.PathLike) and isinstance(os.fspath(value), str):
            return os.fspath(value)  # a pathlib.Path in Python, for `out`, `train`, `test`
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
    names = " or ".join(getattr(k, "__name__", str(k)) for k in allowed)
    raise ConfigError(f"{source}: {key!r} must be {names}. Received: {_shown(value)}.")


def _shown(value) -> str:
    """`value` for a message: a setting's own value, but only the type of data (an array, a
    DataFrame), which a message must never print."""
    if isinstance(value, str | int | float | bool | list | dict | None):
        text = repr(value)
        return text if len(text) <= 80 else f"{text[:77]}..."
    return f"a {type(value).__module__.split('.')[0]} {type(value).__name__}"


def make_config(values: dict, source: str = "config") -> TrainConfig:
    """Builds a TrainConfig from flat keys, checking names and types.

    Raises:
        ConfigError: an unknown key (the message lists the known ones), a wrong type, an unknown
            preset or a recipe value out of range.
    """
    hints = _hints()
    own = {f.name for f in dataclasses.fields(TrainConfig)} - {"overrides"}
    config, overrides = {}, {}
    for key, value in _flattened(values, source).items():
        key = key.replace("-", "_")
        if key not in hints or key == "overrides":
            known = sorted(set(hints) - {"overrides"})
            close = difflib.get_close_matches(key, known, n=1)
            meant = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{source}: unknown key {key!r}{meant}. Known keys: {', '.join(known)}."
            )
        value = _check_type(key, value, hints[key], source)
        (config if key in own else overrides)[key] = value
    try:
        result = TrainConfig(**config, overrides=overrides)
        result.recipe()  # fails early on an unknown preset or a value out of range
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    return result


# Keys of earlier versions' config.yaml files, read as the settings that replaced them.
RENAMED_KEYS = {"flip_tta": "flip"}


def _flattened(values: dict, source: str) -> dict:
    """`values` with an `augment:` section's keys (translate, flip, ...) at the top level, as
    the recipe holds them, and renamed keys under their new names.

    Raises:
        ConfigError: `augment` is not a mapping of augmentation settings.
    """
    values = {RENAMED_KEYS.get(k, k): v for k, v in values.items()}
    section = values.pop("augment", None)
    if section is None:
        return values
    if not isinstance(section, dict) or not set(section) <= set(AUGMENT_FIELDS):
        raise ConfigError(
            f"{source}: 'augment' must be a mapping of {', '.join(AUGMENT_FIELDS)}. "
            f"Received: {section!r}."
        )
    return values | section


# How a message names the settings given as keyword arguments in Python (`with_settings`).
PYTHON_SOURCE = "keyword arguments"


def load_config(
    path: str | Path | None = None, flags: dict | None = None, source: str = "flags"
) -> TrainConfig:
    """Defaults, then the YAML file at `path`, then `flags` (only those given explicitly).

    Raises:
        ConfigError: the file is missing or not a mapping, or a key or value is invalid; a
            message about `flags` starts with `source`.
    """
    values = {}
    if path:
        values = read_settings(path)
        make_config(values, str(path))  # names the file in any error
    return make_config(values | (flags or {}), source)


def with_settings(config: TrainConfig | str | Path | None, settings: dict) -> TrainConfig:
    """`config` (an object, a YAML file or None for the defaults) with `settings` applied.

    Raises:
        ConfigError: the file is missing or not a mapping, or a key or value is invalid.
    """
    if not isinstance(config, TrainConfig):
        return load_config(config, settings, PYTHON_SOURCE)
    if not settings:
        return config
    return load_config(None, config.resolved() | settings, PYTHON_SOURCE)


def read_settings(path: str | Path) -> dict:
    """The settings of a YAML config file, keys in snake_case, not yet checked.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, or not a mapping.
    """
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found.") from None
    except OSError as error:  # a folder, no permission
        raise ConfigError(f"{path}: cannot read the config file ({error.strerror}).") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {error.start}); expected a YAML config file."
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML{_yaml_problem(error)}.") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(values).__name__}.")
    return {str(key).replace("-", "_"): value for key, value in values.items()}


def _yaml_problem(error: yaml.YAMLError) -> str:
    """Where and what PyYAML's error is, on one line: " at line 2, column 1: expected ..."."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(error, "problem", None) or " ".join(str(error).split())
    return f"{where}: {problem}"
