"""Search spaces for `convnet tune`: which recipe settings a study varies, and over what range.

No framework and no Optuna here, so a bad space file is refused at once. A space maps recipe
fields to a range (`low`, `high`, optionally `log`), a list of `choices`, or a fixed value:

    learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
    batch_size: {choices: [128, 256, 512]}
    epochs: {low: 3, high: 8}
    label_smoothing: 0.1

A space file's entries replace the preset's default ones of the same name and add to the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from convnet.config import field_type, read_settings
from convnet.errors import ConfigError
from convnet.models.recipe import Recipe

# The recipe fields a study may vary: how the net trains and how wide it is, never where the
# data comes from or where the run goes.
TUNABLE = (
    "epochs",
    "batch_size",
    "optimizer",
    "learning_rate",
    "schedule",
    "warmup_epochs",
    "weight_decay",
    "label_smoothing",
    "translate",
    "flip",
    "rotate",
    "zoom",
    "width",
    "dropout",
)

# What a study can optimize -> the direction Optuna optimizes it in.
OBJECTIVES = {
    "val_accuracy": "maximize",
    "val_loss": "minimize",
    "train_seconds": "minimize",
    "parameters": "minimize",
}
PRUNERS = ("median", "hyperband", "none")
CHOICE_TYPES = (bool, int, float, str, type(None))  # what a choice may be
KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}


def check_objectives(names: list[str]) -> list[str]:
    """The objectives, checked.

    Raises:
        ConfigError: an unknown name, a repeated one, or more than two.
    """
    for name in names:
        if name not in OBJECTIVES:
            raise ConfigError(
                f"unknown objective {name!r}; expected one of {', '.join(OBJECTIVES)}."
            )
    if len(set(names)) != len(names) or not 1 <= len(names) <= 2:
        raise ConfigError(f"expected one objective or two different ones. Received: {names}.")
    return names


@dataclass(frozen=True)
class Param:
    """One setting a study varies.

    Attributes:
        name: a recipe field (`TUNABLE`).
        low, high: the range of a number, both included.
        log: draw the number on a log scale (learning rates, weight decay).
        choices: the values to choose among, instead of a range.
    """

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None

    @property
    def kind(self) -> str:
        """ "int", "float" or "choice": how Optuna draws it."""
        if self.choices is not None:
            return "choice"
        return "int" if field_type(self.name) is int else "float"


# Ranges around each preset's own recipe, wide enough to find better and narrow enough for a
# few dozen trials. Presets without width or dropout in their builder (the seed) leave them out.
COMMON = {
    "learning_rate": Param("learning_rate", 1e-4, 1e-2, log=True),
    "batch_size": Param("batch_size", choices=(64, 128, 256, 512)),
    "label_smoothing": Param("label_smoothing", 0.0, 0.2),
    "translate": Param("translate", 0.0, 3.0),
}
DEFAULT_SPACES = {
    "seed": COMMON | {"epochs": Param("epochs", 5, 20)},
    "fast": COMMON
    | {
        "epochs": Param("epochs", 3, 8),
        "weight_decay": Param("weight_decay", 1e-6, 1e-2, log=True),
        "dropout": Param("dropout", 0.0, 0.5),
        "width": Param("width", choices=(0.5, 0.75, 1.0, 1.5)),
    },
    "best": COMMON
    | {
        "epochs": Param("epochs", 8, 24),
        "weight_decay": Param("weight_decay", 1e-5, 1e-2, log=True),
        "dropout": Param("dropout", 0.0, 0.4),
        "width": Param("width", choices=(0.5, 0.75, 1.0)),
    },
}


def default_space(preset: str) -> dict[str, Param]:
    """The preset's default space; a registered preset of the user's gets the seed's."""
    return dict(DEFAULT_SPACES.get(preset, DEFAULT_SPACES["seed"]))


def load_space(preset: str, path: str | Path | None = None) -> tuple[dict[str, Param], dict]:
    """The space to search, and the settings fixed for every trial.

    Args:
        preset: whose default space to start from.
        path: a YAML file whose entries replace or add to the default ones.

    Returns:
        ({name: Param}, {name: fixed value}).

    Raises:
        ConfigError: naming the file and entry: an unknown setting, a range whose low is not
            below its high, a log range not above 0, a choice that is not a plain value,
            fractional bounds of a whole-number setting, or values the recipe refuses.
    """
    space, fixed = default_space(preset), {}
    if path is None:
        return space, fixed
    for name, entry in read_settings(path).items():
        where = f"{path}: {name!r}"
        if name not in TUNABLE:
            raise ConfigError(
                f"{where} is not a setting tuning varies; expected one of {', '.join(TUNABLE)}."
            )
        space.pop(name, None)
        if isinstance(entry, dict):
            space[name] = _param(name, entry, where)
        else:
            fixed[name] = entry
            _check_values(name, [entry], where)
    return space, fixed


def _param(name: str, entry: dict, where: str) -> Param:
    unknown = set(entry) - {"low", "high", "log", "choices"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {sorted(unknown)[0]!r}; expected low and high (and log), "
            "or choices."
        )
    if "choices" in entry:
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices or len(entry) > 1:
            raise ConfigError(
                f"{where}: choices must be a non-empty list, alone. Received: {entry}."
            )
        # Optuna stores a choice as it is, so only a plain value (and the recipe compares
        # numbers with `<`, which a list or a mapping would fail with a TypeError of its own).
        for choice in choices:
            if not isinstance(choice, CHOICE_TYPES):
                raise ConfigError(
                    f"{where}: each choice must be a number, a string, true/false or null. "
                    f"Received: {choice!r}."
                )
        _check_values(name, choices, where)
        return Param(name, choices=tuple(choices))
    low, high, log = entry.get("low"), entry.get("high"), entry.get("log", False)
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high))
    if not numbers or not isinstance(log, bool) or field_type(name) not in (int, float):
        raise ConfigError(
            f"{where}: expected numbers low and high (and log: true or false) for a numeric "
            f"setting. Received: {entry}."
        )
    if not low < high:
        raise ConfigError(f"{where}: low must be below high. Received: low {low}, high {high}.")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range must be above 0. Received: low {low}.")
    if field_type(name) is int:  # rounded, the range searched would not be the file's
        if not all(float(v).is_integer() for v in (low, high)):
            raise ConfigError(
                f"{where}: expected whole numbers low and high. Received: low {low}, high {high}."
            )
        low, high = int(low), int(high)
    _check_values(name, [low, high], where)
    return Param(name, low, high, log)


def _check_values(name: str, values: list, where: str) -> None:
    """Refuses values of the wrong type or that the recipe itself would refuse, before any
    trial is run."""
    kind = field_type(name)
    for value in values:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        fits = {int: isinstance(value, int) and number, float: number}.get(kind)
        if value is not None and not (isinstance(value, kind) if fits is None else fits):
            raise ConfigError(f"{where}: expected {KINDS[kind]}. Received: {value!r}.")
        try:
            Recipe(**{name: value})
        except (ConfigError, TypeError) as error:
            raise ConfigError(f"{where}: {error}") from None


def space_record(space: dict[str, Param]) -> dict:
    """The space as plain data, for tune.json (`TunePlan.space` reads it back)."""
    return {
        p.name: {"choices": list(p.choices)}
        if p.choices is not None
        else {"low": p.low, "high": p.high, "log": p.log}
        for p in space.values()
    }
