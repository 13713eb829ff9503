"""Presets found by name: a description, a training recipe, and the name of the function that
builds the network. The mechanism only; the built-in presets register themselves in
`convnet.models.presets`, which `convnet.models` imports, so that importing any module of the
package finds them. No framework import: listing presets and checking a config need no Keras, and
the builder is looked up only when a model is built (`convnet.models.factory`).

    register_preset("tiny", "A small net.", builder="mypackage.nets:tiny", epochs=3)

or, for a builder already at hand, as a decorator:

    @register_preset("tiny", "A small net.", epochs=3)
    def tiny(input_shape, num_classes): ...
"""

from __future__ import annotations

import fnmatch
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from convnet.errors import ConfigError, DataError, setting
from convnet.models.recipe import Recipe

Builder = Callable  # (input_shape, num_classes) -> keras.Model
# The built-in presets pool 2x2 two or three times, and adapt their padding and head to any size
# from this up (`convnet.models.builders`); below it, their last feature map is a single pixel.
MIN_IMAGE_SIZE = 8


@dataclass(frozen=True)
class Preset:
    """A named network and how it trains.

    Attributes:
        name: what `--preset` says.
        builder: the function that builds the model, or its "module:function" name, imported
            only when a model is built.
        description: one line for `convnet presets`.
        recipe: the training recipe, whose every field a config may override.
        min_size: the smallest image height and width the network takes, in pixels.
        min_steps: the optimizer steps its recipe needs before accuracy stops climbing, on the
            easiest data measured; a run that makes fewer warns that it under-trains
            (`under_training`). None: not measured, never warns.
    """

    name: str
    builder: Builder | str
    description: str
    recipe: Recipe = field(default_factory=Recipe)
    min_size: int = MIN_IMAGE_SIZE
    min_steps: int | None = None

    def build_function(self) -> Builder:
        """The builder itself, imported if it was given by name."""
        if callable(self.builder):
            return self.builder
        module, _, function = self.builder.partition(":")
        return getattr(importlib.import_module(module), function)


_PRESETS: dict[str, Preset] = {}


def register_preset(
    name: str,
    description: str,
    builder: Builder | str | None = None,
    *,
    min_steps: int | None = None,
    **recipe,
) -> Callable[[Builder], Builder] | None:
    """Registers a preset under `name` with its training recipe.

    Args:
        name: the preset's name; registering one twice is an error.
        description: one line for `convnet presets`.
        builder: the function that builds the model, or its "module:function" name. Without it,
            `register_preset` returns a decorator that registers the function it decorates.
        min_steps: the optimizer steps the recipe needs to learn (`Preset.min_steps`); defaults
            to None, which never warns of under-training.
        **recipe: `Recipe` fields: the preset's defaults.

    Raises:
        ValueError: the name is taken. ConfigError: a recipe value is out of range.
    """
    if name in _PRESETS:
        raise ValueError(f"Preset {name!r} is already registered.")
    settings = Recipe(**recipe)
    if builder is not None:
        _PRESETS[name] = Preset(name, builder, description, settings, min_steps=min_steps)
        return None

    def decorator(build: Builder) -> Builder:
        register_preset(name, description, build, min_steps=min_steps, **recipe)
        return build

    return decorator


def get_preset(name: str) -> Preset:
    """The preset called `name`.

    Raises:
        ConfigError: no such preset; the message lists the known ones.
    """
    if name not in _PRESETS:
        raise ConfigError(f"Unknown preset {name!r}. Known presets: {', '.join(sorted(_PRESETS))}.")
    return _PRESETS[name]


def check_image_size(name: str, image_shape: tuple[int, ...], source: str) -> None:
    """Refuses images smaller than preset `name` takes, before any framework is imported.

    Raises:
        DataError: naming `source`, the size found and the smallest accepted.
    """
    smallest = get_preset(name).min_size
    height, width = image_shape[:2]
    if min(height, width) < smallest:
        raise DataError(
            f"{source}: images of {height}x{width} pixels are too small for preset {name!r}; "
            f"the smallest it takes is {smallest}x{smallest}."
        )


def check_model_shape(name: str, input_shape, num_classes: int) -> None:
    """Refuses what no model of preset `name` can be built for: an unknown preset, an input
    shape that is not (H, W, C) images as large as the preset takes, or fewer than two classes.

    Raises:
        ConfigError: naming the preset or the argument, and what was expected.
    """
    get_preset(name)
    shape = tuple(input_shape) if isinstance(input_shape, list | tuple) else None
    whole = shape and len(shape) == 3 and all(_is_count(v) for v in shape)
    if not whole:
        raise ConfigError(
            f"input_shape must be (height, width, channels), each an integer >= 1. "
            f"Received: {input_shape!r}."
        )
    try:
        check_image_size(name, shape, "input_shape")
    except DataError as error:
        raise ConfigError(str(error)) from None
    if not _is_count(num_classes) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer >= 2. Received: {num_classes!r}.")


def _is_count(value) -> bool:
    """Whether `value` is an integer >= 1 (NumPy's included, bool not)."""
    return not isinstance(value, bool) and hasattr(value, "__index__") and value >= 1


def list_presets(pattern: str = "*") -> list[str]:
    """Names of the registered presets matching a shell-style pattern, sorted."""
    return sorted(n for n in _PRESETS if fnmatch.fnmatch(n, pattern))


def fit_steps(examples: int, recipe: Recipe, epochs: int | None = None) -> tuple[int, int]:
    """The optimizer steps `fit` makes in one epoch, and in `epochs` (the recipe's by default).

    Args:
        examples: training examples after `limit`, before the validation split.
        recipe: the run's recipe.
        epochs: the epochs trained; defaults to the recipe's.

    Returns:
        (steps per epoch, steps in all). Each epoch ends with a partial batch
        (`convnet.training.feed`).
    """
    per_epoch = math.ceil(_after_split(examples, recipe) / recipe.batch_size)
    return per_epoch, per_epoch * (recipe.epochs if epochs is None else epochs)


def _after_split(examples: int, recipe: Recipe) -> int:
    """The examples left to train on once the validation split holds out ceil(val_split x
    examples), as scikit-learn's `train_test_split` does (`convnet.data.split`)."""
    return examples - math.ceil(recipe.val_split * examples)


def under_training(name: str, recipe: Recipe, examples: int, epochs: int | None = None) -> str:
    """Says when a run makes fewer optimizer steps than preset `name` needs to learn.

    The figure is the preset's `min_steps`. The fix offered: the `--epochs` that make enough
    steps on this data, and the other presets whose own recipes make enough here; or, when a
    time budget ended training early, the budget that would.

    Args:
        name: the preset.
        recipe: the run's recipe, overrides applied.
        examples: training examples after `limit`, before the validation split.
        epochs: the epochs trained, when a time budget ended training before `recipe.epochs`;
            defaults to the recipe's.

    Returns:
        The warning, or "" when the steps are enough, or the preset declares no `min_steps` or
        is not registered in this process (a run read back without it).
    """
    preset = _PRESETS.get(name)
    if preset is None or preset.min_steps is None:
        return ""
    trained = recipe.epochs if epochs is None else epochs
    per_epoch, steps = fit_steps(examples, recipe, trained)
    needed = preset.min_steps
    if steps >= needed:
        return ""
    said = (
        f"preset {name!r} makes {_count(steps, 'optimizer step')} on this data "
        f"({_after_split(examples, recipe):,} training examples after the validation split: "
        f"{_count(per_epoch, 'batch', 'es')} of {recipe.batch_size} an epoch, "
        f"{_count(trained, 'epoch')}) and needs about {needed} to learn: expect an under-trained "
        "model."
    )
    if trained < recipe.epochs and recipe.time_budget:  # the budget stopped it
        budget = math.ceil(recipe.time_budget * needed / max(steps, 1) / 10) * 10
        return (
            f"{said} The time budget of {recipe.time_budget:g} s held it to {trained} of "
            f"{recipe.epochs} epochs; {setting('time_budget', budget)} would give it about "
            f"{needed} steps on this machine (docs/training.md)."
        )
    fix = f"{needed} steps take {setting('epochs', math.ceil(needed / per_epoch))} here"
    if recipe.time_budget:
        fix += " with a time budget that holds them"
    enough = [
        other.name
        for other in _PRESETS.values()
        if other.name != name
        and other.min_steps is not None
        and fit_steps(examples, other.recipe)[1] >= other.min_steps
    ]
    if enough:
        presets = " or ".join(setting("preset", other) for other in enough)
        fix += f"; or {presets}, whose own recipe makes enough"
    return f"{said} {fix} (docs/training.md)."


def _count(number: int, noun: str, plural: str = "s") -> str:
    return f"{number} {noun}{'' if number == 1 else plural}"
