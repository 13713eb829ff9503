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
            ("optimizer", self.optimizer.lower() in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
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
