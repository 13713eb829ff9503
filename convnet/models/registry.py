"""Presets found by name: an architecture and the training recipe that goes with it."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

from convnet.errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    """How a preset trains by default; any field can be overridden by the config.

    Attributes:
        epochs: passes over the training data.
        batch_size: examples per step.
        optimizer: a Keras optimizer name ("rmsprop", "adam", "adamw", "sgd").
        learning_rate: peak learning rate; None keeps the optimizer's default.
        schedule: "constant", or "cosine" (linear warm-up, then cosine decay to 0, per step).
        warmup_epochs: epochs of linear warm-up, for "cosine".
        weight_decay: decoupled weight decay for "adamw".
        label_smoothing: in [0, 1), for categorical cross-entropy.
        val_split: share of the training data held out for validation.
        restore_best: keep the weights of the epoch with the lowest validation loss.
        flip_tta: average predictions over the image and its horizontal mirror.
    """

    epochs: int = 15
    batch_size: int = 512
    optimizer: str = "rmsprop"
    learning_rate: float | None = None
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    val_split: float = 0.3
    restore_best: bool = False
    flip_tta: bool = False


@dataclass(frozen=True)
class Preset:
    name: str
    build: Callable  # (input_shape, num_classes) -> keras.Model
    description: str
    recipe: Recipe = field(default_factory=Recipe)


_PRESETS: dict[str, Preset] = {}


def register_preset(name: str, description: str, **recipe) -> Callable:
    """Decorator: registers a model builder under `name` with its training recipe."""

    def decorator(build: Callable) -> Callable:
        if name in _PRESETS:
            raise ValueError(f"Preset {name!r} is already registered.")
        _PRESETS[name] = Preset(name, build, description, Recipe(**recipe))
        return build

    return decorator


def _ensure_loaded() -> None:
    from convnet.models import presets  # noqa: F401  (registers the built-in presets)


def get_preset(name: str) -> Preset:
    """The preset called `name`.

    Raises:
        ConfigError: no such preset; the message lists the known ones.
    """
    _ensure_loaded()
    if name not in _PRESETS:
        raise ConfigError(f"Unknown preset {name!r}. Known presets: {', '.join(sorted(_PRESETS))}.")
    return _PRESETS[name]


def list_presets(pattern: str = "*") -> list[str]:
    """Names of the registered presets matching a shell-style pattern, sorted."""
    _ensure_loaded()
    return sorted(n for n in _PRESETS if fnmatch.fnmatch(n, pattern))


def create_model(name: str, input_shape=(28, 28, 1), num_classes: int = 10):
    """Builds the named preset's model for raw uint8 images of `input_shape`."""
    return get_preset(name).build(tuple(input_shape), num_classes)
