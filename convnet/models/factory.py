"""Building a preset's Keras model, and the model as a run saves and loads it."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import warnings
import zipfile
from pathlib import Path

import keras

from convnet.errors import ConfigError, RunError, setting
from convnet.models.layers import FusedBatchNormalization
from convnet.models.precision import resolve_precision
from convnet.models.recipe import Augment, Recipe, resolve_augment
from convnet.models.registry import get_preset

# What a builder is built with when a setting is not its to take.
BUILDER_DEFAULTS = {"augment": Augment(), "width": 1.0, "dropout": None}


def create_model(
    name: str,
    input_shape=(28, 28, 1),
    num_classes: int = 10,
    precision: str = "float32",
    augment: Augment | None = None,
    width: float = 1.0,
    dropout: float | None = None,
) -> keras.Model:
    """Builds the named preset's model for raw uint8 images of `input_shape`.

    Args:
        name: a registered preset.
        input_shape: (H, W, C) of the images. Defaults to Fashion-MNIST's (28, 28, 1).
        num_classes: the number of outputs. Defaults to 10.
        precision: one of `convnet.models.recipe.PRECISIONS`; "auto" picks what the device
            computes natively. Defaults to "float32".
        augment: the training augmentation; None for the preset's own, resolved for images
            of `input_shape` whose classes are not known to be mirror-symmetric.
        width: a factor on the filters. Defaults to 1.
        dropout: the rate of the dropout before the head; None for the preset's own.

    Raises:
        ConfigError: unknown preset or precision, or a setting its builder does not take.
    """
    preset = get_preset(name)
    build = preset.build_function()
    if augment is None:
        recipe = dataclasses.replace(
            preset.recipe, **resolve_augment(preset.recipe, input_shape, mirror_symmetric=False)
        )
        augment = recipe.augment()
    given = {"augment": augment, "width": width, "dropout": dropout}
    takes = inspect.signature(build).parameters
    kwargs = {key: value for key, value in given.items() if key in takes}
    refused = {k: v for k, v in given.items() if k not in takes and v != BUILDER_DEFAULTS[k]}
    if refused:
        raise ConfigError(
            f"preset {name!r} builds its model without {' or '.join(refused)} settings; drop "
            f"them, or give its builder those arguments. Received: {refused}."
        )
    policy = resolve_precision(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return build(tuple(input_shape), num_classes, **kwargs)
    finally:
        keras.config.set_dtype_policy(previous)


def model_for_recipe(name: str, data_shape, num_classes: int, recipe: Recipe) -> keras.Model:
    """The preset's model as `recipe` (resolved for the data) has it built: precision,
    augmentation, width and dropout."""
    return create_model(
        name,
        data_shape,
        num_classes,
        recipe.precision,
        recipe.augment(),
        recipe.width,
        recipe.dropout,
    )


# Keras' augmentation layers that say XLA cannot compile them, for TensorFlow's sake (their TF
# kernels have none); on JAX it can.
JAX_JITTABLE = (
    keras.layers.RandomTranslation,
    keras.layers.RandomRotation,
    keras.layers.RandomZoom,
)


def jit_on_jax(model: keras.Model) -> keras.Model:
    """`model`, its steps compiled whole by XLA on the JAX backend (elsewhere, as it is).

    A model with augmentation layers was run op by op on JAX: fitting, one XLA compilation of the
    learning-rate schedule per weight update; predicting with a `best` model saved or loaded,
    one compilation per operation and shape (142 in a small training's calibration and test
    pass). Its layers now say XLA can compile them, and the model asks for it.
    """
    if keras.backend.backend() != "jax":
        return model
    for layer in model.layers:
        if isinstance(layer, JAX_JITTABLE):
            layer.supports_jit = True
    model.jit_compile = True
    return model


@contextlib.contextmanager
def _rebuilt_quietly():
    """Keras' warning, while a model compiled on JAX is cloned or loaded, hidden.

    Such a model records jit_compile=True; rebuilt, its augmentation layers say XLA cannot
    compile them, and Keras warns, then goes on without XLA until `jit_on_jax` gives it back.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Model doesn't support `jit_compile=True`")
        yield


def portable_model(model: keras.Model) -> keras.Model:
    """`model` as it is saved: float32 compute and Keras' own layers, with the same weights.

    Mixed-precision weights are float32 already; only the compute dtype changes, so the saved
    model predicts, serves and exports in float32 like every other preset. convnet's
    FusedBatchNormalization becomes Keras' BatchNormalization (the same config and variables;
    only training differs), so `keras.saving.load_model` reads the file without convnet.
    """

    def plain_float32(layer):
        kind = type(layer)
        if isinstance(layer, FusedBatchNormalization):
            kind = keras.layers.BatchNormalization
        return kind.from_config(layer.get_config() | {"dtype": "float32"})

    with _rebuilt_quietly():
        copy = keras.models.clone_model(model, clone_function=plain_float32)
    copy.set_weights(model.get_weights())
    return jit_on_jax(copy)


def load_model(path: str | Path, safe_mode: bool = True) -> keras.Model:
    """A saved `.keras` model, such as a run's `model.keras`.

    Args:
        path: the `.keras` file.
        safe_mode: refuse models that carry code (Lambda layers); see Keras `load_model`.

    Raises:
        RunError: the file is missing, or the model cannot be loaded (safely).
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: file not found.")
    if not zipfile.is_zipfile(path):  # Keras would call it "File not found"
        raise RunError(
            f"{path}: damaged; a .keras model is a zip archive and this file of "
            f"{path.stat().st_size:,} bytes is not one. Train the run again or restore the file."
        )
    try:
        with _rebuilt_quietly():
            model = keras.saving.load_model(path, safe_mode=safe_mode)
    except ValueError as error:
        if safe_mode and "safe_mode" in str(error):
            raise RunError(
                f"{path}: the model carries Python code (a Lambda layer), which could do "
                f"anything when loaded; refused. `evaluate` and `predict` take "
                f"{setting('unsafe', True)}, only for files you trust; `serve` and `export` never "
                "load such a model."
            ) from None
        raise _damaged(path, error) from None
    # The file is the user's: whatever Keras fails with while rebuilding it (a truncated
    # member, a config it has no class for, Python code this interpreter cannot run under
    # --unsafe) is one line about the file, not a traceback.
    except Exception as error:  # noqa: BLE001
        raise _damaged(path, error) from None
    return jit_on_jax(model)


def _damaged(path: Path, error: Exception) -> RunError:
    reason = (str(error).strip().splitlines() or [""])[0][:300]
    return RunError(
        f"{path}: damaged or not a model this Keras can rebuild ({type(error).__name__}: {reason})."
    )
