"""How a preset trains: the `Recipe` schema and its checks. No framework import."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from convnet.errors import ConfigError

SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
# Keras' optimizers that build from their name alone (`keras.optimizers.get`), in lower case.
# Listed rather than asked of Keras, so a recipe is checked without importing it; a test checks
# that Keras builds each one.
OPTIMIZERS = (
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "ftrl",
    "lion",
    "nadam",
    "rmsprop",
    "sgd",
)


def _setting(default, help: str):
    """A recipe field with its one line of help, unit included: what `convnet train --help`
    shows beside each preset's default, and the one place that says what the field means."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Recipe:
    """How a preset trains by default; any field can be overridden by the config.

    Each field's meaning and unit is its `help` (`Recipe.help(name)`); docs/training.md says
    when to change it.
    """

    epochs: int = _setting(15, "passes over the training data; with a time budget, the most")
    batch_size: int = _setting(512, "examples per optimizer step")
    optimizer: str = _setting("rmsprop", "a Keras optimizer, by name")
    learning_rate: float | None = _setting(
        None, "peak learning rate (auto: the optimizer's default)"
    )
    schedule: str = _setting(
        "constant", "learning rate over training: constant, or cosine (warm-up, then decay to 0)"
    )
    warmup_epochs: float = _setting(0.0, "epochs of linear warm-up, for the cosine schedule")
    weight_decay: float = _setting(0.0, "decoupled weight decay, for adamw")
    label_smoothing: float = _setting(0.0, "label smoothing of the cross-entropy, in [0, 1)")
    val_split: float = _setting(0.3, "share of the training data held out for validation")
    restore_best: bool = _setting(
        False, "keep the weights of the epoch with the lowest validation loss"
    )
    patience: int = _setting(
        0, "epochs without a better validation loss before stopping (0: never stop early)"
    )
    translate: float | None = _setting(
        0.0, "random shifts in training, in pixels each way (auto: a tenth of the side)"
    )
    flip: bool | None = _setting(
        False,
        "random mirrors in training and a mirrored test-time view (auto: for mirror-symmetric "
        "data such as Fashion-MNIST, never for digits or letters)",
    )
    rotate: float = _setting(0.0, "random rotations in training, in degrees each way")
    zoom: float = _setting(0.0, "random zoom in training, as a fraction of the image")
    width: float = _setting(1.0, "a factor on every convolution's filters (fast and best)")
    dropout: float | None = _setting(
        None, "dropout rate before the head (auto: the preset's own; fast and best)"
    )
    shift_tta: int = _setting(
        0, "test-time views shifted by up to this many pixels each way, averaged (0: none)"
    )
    calibrate: bool = _setting(
        False, "fit a softmax temperature on the validation split after training"
    )
    time_budget: float = _setting(
        0.0, "seconds of training to fit the run into, as many epochs as fit (0: none)"
    )
    precision: str = _setting(
        "float32", "float32, mixed_bfloat16, mixed_float16, or auto (what the CPU computes fast)"
    )

    @staticmethod
    def help(name: str) -> str:
        """A field's one line of help."""
        return next(f.metadata["help"] for f in fields(Recipe) if f.name == name)

    def __post_init__(self):
        """Refuses values training would fail on later, so no run folder is begun for them.

        Raises:
            ConfigError: naming the setting, what was expected and what was received.
        """
        checks = [
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("optimizer", self.optimizer.lower() in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
            ("learning_rate", self.learning_rate is None or self.learning_rate > 0, "> 0"),
            ("schedule", self.schedule in SCHEDULES, " or ".join(map(repr, SCHEDULES))),
            ("warmup_epochs", self.warmup_epochs >= 0, ">= 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("val_split", 0 <= self.val_split < 1, "in [0, 1)"),
            ("patience", self.patience >= 0, "an integer >= 0 (epochs; 0 for none)"),
            ("translate", self.translate is None or self.translate >= 0, ">= 0 (pixels)"),
            ("rotate", 0 <= self.rotate <= 180, "in [0, 180] (degrees)"),
            ("zoom", 0 <= self.zoom < 1, "in [0, 1) (a fraction of the image)"),
            ("width", 0 < self.width <= 8, "in (0, 8] (a factor on the filters)"),
            ("dropout", self.dropout is None or 0 <= self.dropout < 1, "in [0, 1)"),
            ("shift_tta", self.shift_tta >= 0, "an integer >= 0 (pixels)"),
            ("time_budget", self.time_budget >= 0, ">= 0 seconds (0 for none)"),
            ("precision", self.precision in PRECISIONS, " or ".join(map(repr, PRECISIONS))),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{name} must be {expected}. Received: {getattr(self, name)!r}.")

    def augment(self) -> Augment:
        """The training augmentation, `translate` and `flip` resolved (`resolve_augment`)."""
        if self.translate is None or self.flip is None:
            raise ValueError("resolve the recipe's translate and flip first (resolve_augment)")
        return Augment(self.translate, self.flip, self.rotate, self.zoom)


RECIPE_FIELDS = frozenset(f.name for f in fields(Recipe))
AUGMENT_FIELDS = ("translate", "flip", "rotate", "zoom")


@dataclass(frozen=True)
class Augment:
    """Random changes to each training image, inside the model: active in `fit`, a no-op in
    predict, serve and export. See `Recipe` for each field."""

    translate: float = 0.0
    flip: bool = False
    rotate: float = 0.0
    zoom: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.translate or self.flip or self.rotate or self.zoom)


def resolve_augment(
    recipe: Recipe, image_shape: tuple[int, ...], mirror_symmetric: bool
) -> dict[str, float | bool]:
    """The values of the recipe's "None" augmentation settings for this data: `translate` a
    tenth of the image's shorter side, `flip` whether the classes are mirror-symmetric. Returns
    the settings to override, none if the recipe sets both."""
    resolved = {}
    if recipe.translate is None:
        resolved["translate"] = round(0.1 * min(image_shape[:2]), 3)
    if recipe.flip is None:
        resolved["flip"] = mirror_symmetric
    return resolved
