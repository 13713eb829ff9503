"""The flags commands share: one per config and recipe setting, grouped as `train --help` shows
them (each recipe setting's help gives every preset's default), and --json, --no-tta, the
trackers' and ports'.
"""

from __future__ import annotations

import argparse

from convnet.config import RECIPE_CHOICES, config_fields, field_type
from convnet.models.recipe import RECIPE_FIELDS
from convnet.models.registry import get_preset, list_presets

# How `train --help` groups its flags; every other setting belongs to the recipe.
FLAG_GROUPS = {
    "data": (
        "train",
        "test",
        "format",
        "label_column",
        "class_names",
        "data_dir",
        "limit",
        "val_split",
        "stratify",
        "test_split",
        "pixel_range",
        "stream",
        "class_weight",
    ),
    "augmentation in training (`flip` also mirrors among the test-time views)": (
        "translate",
        "flip",
        "rotate",
        "zoom",
    ),
    "devices and processes (docs/distributed.md)": (
        "backend",
        "devices",
        "num_processes",
        "process_id",
        "coordinator",
        "join_timeout",
    ),
    "output": ("out",),
}


METAVARS = {int: "N", float: "X"}  # --epochs N, --learning-rate X


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per config and recipe field but `skip`, kebab-case, in groups; only flags given
    apply."""
    parser.add_argument("--config", help="YAML file of settings (flags override it)")
    groups = {name: parser.add_argument_group(name) for name in FLAG_GROUPS}
    recipe = parser.add_argument_group("model and recipe (a recipe's default is the preset's)")
    for field in config_fields():
        if field.name in skip:
            continue
        group = next((groups[g] for g, names in FLAG_GROUPS.items() if field.name in names), recipe)
        kind = field_type(field.name)
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "")
        if field.name in RECIPE_FIELDS:
            help_text += f" ({_preset_defaults(field.name)})"
        choices = field.metadata.get("choices") or RECIPE_CHOICES.get(field.name)
        if kind is bool:
            group.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            group.add_argument(
                flag,
                type=str.lower if choices else kind,  # --optimizer AdamW, as YAML allows
                default=argparse.SUPPRESS,
                help=help_text,
                choices=choices,
                metavar="{" + ",".join(choices) + "}"
                if choices
                else METAVARS.get(kind, field.name.upper()),
            )


def _preset_defaults(name: str) -> str:
    """Each preset's default for a recipe field, "seed 15, fast 5, best 24", or "default 1" when
    they share it: a field only some presets' models take (`--width`) is not shown as the
    others' too."""
    presets = sorted(list_presets(), key=lambda p: (p != "seed", p != "fast", p))  # as in docs

    def shown(value) -> str:
        if value is None:
            return "auto"
        if isinstance(value, bool):
            return "on" if value else "off"
        return f"{value:g}" if isinstance(value, float) else str(value)

    defaults = {p: shown(getattr(get_preset(p).recipe, name)) for p in presets}
    if len(set(defaults.values())) == 1:
        return f"default {defaults[presets[0]]}"
    return ", ".join(f"{p} {value}" for p, value in defaults.items())


UNSAFE_HELP = "load a model that carries Python code (Lambda layers); only for trusted files"


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def add_no_tta_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-tta",
        dest="tta",
        action="store_false",
        help="one model pass per image: ignore the run's test-time views (flip, shift_tta)",
    )


def add_tracking_flags(parser: argparse.ArgumentParser, what: str):
    """--tensorboard and --mlflow, in a group that it returns."""
    tracking = parser.add_argument_group("tracking (not part of the run's config)")
    tracking.add_argument(
        "--tensorboard",
        nargs="?",
        const="",
        metavar="DIR",
        help=f"write TensorBoard logs of {what}: to DIR/RUN-NAME, or without DIR to "
        "RUN/tensorboard",
    )
    tracking.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        metavar="URI",
        help=f"log {what} to MLflow at URI (default: sqlite:///mlruns.db, a database file in "
        "the current directory); needs pip install 'convnet[track]'",
    )
    return tracking


def port(text: str) -> int:
    """A TCP port number, 0 to 65535 (0: any free port)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number; expected 0 to 65535")
    return int(text)
