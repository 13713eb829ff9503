"""Presets found by name: an architecture and the training recipe that goes with it."""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from convnet.errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    """How a preset trains by default; any field can be overridden by the config.

    Attributes:
        epochs: passes over the training data; with a time budget, the most it may make.
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
        shift_tta: also average over copies shifted by up to this many pixels each way (see
            `convnet.evaluation.TestTimeAugmentation`); 0 for none.
        calibrate: after training, fit a temperature on the validation split that makes the
            probabilities (averaged over the test-time views) match accuracy, and fold it into
            the softmax layer (`convnet.training.calibration`). Like restore_best, it is
            skipped when val_split is 0.
        time_budget: seconds of training (validation included) to fit the run into, or 0 for
            none. As many epochs as fit, at most `epochs`, and the cosine schedule ends with
            them (`convnet.training.callbacks.TimeBudget`).
        precision: "float32"; "mixed_bfloat16" (bfloat16 compute on float32 weights, fast on
            CPUs with AMX or AVX-512 BF16); or "auto", which is mixed_bfloat16 on such CPUs with
            the TensorFlow backend and float32 elsewhere. The saved model is float32 either way.
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
    shift_tta: int = 0
    calibrate: bool = False
    time_budget: float = 0.0
    precision: str = "float32"

    def __post_init__(self):
        """Refuses values training would fail on later, so no run folder is begun for them.

        Raises:
            ConfigError: naming the setting, what was expected and what was received.
        """
        checks = [
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("optimizer", _is_optimizer(self.optimizer), "a Keras optimizer name, e.g. adamw"),
            ("learning_rate", self.learning_rate is None or self.learning_rate > 0, "> 0"),
            ("schedule", self.schedule in SCHEDULES, " or ".join(map(repr, SCHEDULES))),
            ("warmup_epochs", self.warmup_epochs >= 0, ">= 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("val_split", 0 <= self.val_split < 1, "in [0, 1)"),
            ("shift_tta", self.shift_tta >= 0, "an integer >= 0 (pixels)"),
            ("time_budget", self.time_budget >= 0, ">= 0 seconds (0 for none)"),
            ("precision", self.precision in PRECISIONS, " or ".join(map(repr, PRECISIONS))),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{name} must be {expected}. Received: {getattr(self, name)!r}.")


SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def _is_optimizer(name: str) -> bool:
    """Whether `keras.optimizers.get(name)` would find an optimizer. It is not called: making an
    optimizer makes a variable, which would start JAX before its processes join."""
    return name in _optimizer_names()


@functools.cache
def _optimizer_names() -> frozenset[str]:
    import keras

    classes = [
        c
        for c in vars(keras.optimizers).values()
        if isinstance(c, type) and issubclass(c, keras.optimizers.Optimizer)
    ]
    return frozenset({c.__name__ for c in classes} | {c.__name__.lower() for c in classes})


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


def resolve_precision(precision: str, cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """`precision`, with "auto" made mixed_bfloat16 where oneDNN computes it natively.

    Natively means AMX or AVX-512 BF16 among the CPU's flags, with the TensorFlow backend; the
    JAX backend's CPU kernels are not known to gain from it, so "auto" is float32 there.
    """
    import keras

    if precision != "auto":
        return precision
    if keras.backend.backend() != "tensorflow":
        return "float32"
    try:
        flags = set(Path(cpuinfo).read_text().split())
    except OSError:
        flags = set()
    return "mixed_bfloat16" if flags & {"amx_bf16", "avx512_bf16"} else "float32"


def create_model(
    name: str, input_shape=(28, 28, 1), num_classes: int = 10, precision: str = "float32"
):
    """Builds the named preset's model for raw uint8 images of `input_shape`.

    Raises:
        ConfigError: unknown preset or precision.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
    import keras

    build = get_preset(name).build
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(resolve_precision(precision))
    try:
        return build(tuple(input_shape), num_classes)
    finally:
        keras.config.set_dtype_policy(previous)


def portable_model(model):
    """`model` as it is saved: float32 compute and Keras' own layers, with the same weights.

    Mixed-precision weights are float32 already; only the compute dtype changes, so the saved
    model predicts, serves and exports in float32 like every other preset. convnet's
    FusedBatchNormalization becomes Keras' BatchNormalization (the same config and variables;
    only training differs), so `keras.saving.load_model` reads the file without convnet.
    """
    import keras

    from convnet.models.layers import FusedBatchNormalization

    def plain_float32(layer):
        kind = type(layer)
        if isinstance(layer, FusedBatchNormalization):
            kind = keras.layers.BatchNormalization
        return kind.from_config(layer.get_config() | {"dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=plain_float32)
    copy.set_weights(model.get_weights())
    return copy
