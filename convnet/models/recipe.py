"""How a preset trains: the `Recipe` schema and its checks. No framework import."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Recipe:
    """How a preset trains by default; any field can be overridden by the config.

    Attributes:
        epochs: passes over the training data; with a time budget, the most it may make.
        batch_size: examples per step.
        optimizer: a Keras optimizer name, one of `OPTIMIZERS` ("rmsprop", "adamw", ...).
        learning_rate: peak learning rate; None keeps the optimizer's default.
        schedule: "constant", or "cosine" (linear warm-up, then cosine decay to 0, per step).
        warmup_epochs: epochs of linear warm-up, for "cosine".
        weight_decay: decoupled weight decay for "adamw".
        label_smoothing: in [0, 1), for categorical cross-entropy.
        val_split: share of the training data held out for validation.
        restore_best: keep the weights of the epoch with the lowest validation loss.
        patience: stop when the validation loss has not improved for this many epochs, keeping
            the best epoch's weights; 0 never stops early.
        translate: random shifts of up to this many whole pixels each way in training; None
            for a tenth of the image's side.
        flip: random horizontal mirrors in training, and the mirror among the test-time views;
            None mirrors only data known to be mirror-symmetric (Fashion-MNIST's classes):
            a mirrored digit or letter is another character, or none.
        rotate: random rotations of up to this many degrees each way in training.
        zoom: random zoom in or out by up to this fraction in training.
        width: a factor on every convolution's filters (0.5 halves them); for presets whose
            builder takes it (`fast`, `best`), which tuning searches over.
        dropout: the rate of the dropout before the head; None for the preset's own. For
            presets whose builder takes it.
        shift_tta: average predictions over copies shifted by up to this many pixels each way
            (and their mirrors, with `flip`; see `convnet.evaluation.TestTimeAugmentation`);
            0 for none.
        calibrate: after training, fit a temperature on the validation split that makes the
            probabilities (averaged over the test-time views) match accuracy, and fold it into
            the softmax layer (`convnet.training.calibration`). Like restore_best, it is
            skipped when val_split is 0.
        time_budget: seconds of training (validation included) to fit the run into, or 0 for
            none. As many epochs as fit, at most `epochs`, and the cosine schedule ends with
            them (`convnet.training.callbacks.TimeBudget`).
        precision: "float32"; "mixed_bfloat16" (bfloat16 compute on float32 weights);
            "mixed_float16" (float16 compute, with loss scaling); or "auto", which picks what the
            device computes natively (`convnet.models.precision`). The saved model is float32
            either way.
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
    patience: int = 0
    translate: float | None = 0.0
    flip: bool | None = False
    rotate: float = 0.0
    zoom: float = 0.0
    width: float = 1.0
    dropout: float | None = None
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
