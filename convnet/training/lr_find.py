"""The learning-rate range test (Smith, 2015; fastai's `lr_find`).

The learning rate grows exponentially from `min_lr` to `max_lr`, one step per batch, on a fresh
model; the test stops early once the smoothed loss diverges. A good rate lies where the loss
still falls fast, well before its minimum.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from convnet.config import TrainConfig, check_lr_range
from convnet.data.dataset import Dataset
from convnet.models.factory import model_for_recipe
from convnet.training.feed import one_hot
from convnet.training.keras_recipe import compile_for_training, seed_everything

SMOOTHING = 0.98  # weight of the past in the loss's exponential moving average
# Stop once the smoothed loss exceeds this multiple of its minimum. fastai uses 4, but Keras clips
# probabilities, so a diverged cross-entropy can plateau near 3x its best (seen on Fashion-MNIST).
DIVERGED = 2.5


def lr_range_test(
    config: TrainConfig,
    train_set: Dataset,
    steps: int = 200,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
) -> dict:
    """Trains a fresh model of `config.preset` with an exponentially increasing learning rate.

    Args:
        config: the preset and recipe (optimizer, batch size, weight decay, label smoothing,
            precision), seed and `deterministic` to test; its `TRAINING_ONLY` settings are
            ignored.
        train_set: the examples `train` would fit on (`load_training_data(config).train`).
        steps: batches to run at most (defaults to 200).
        min_lr: the first learning rate (defaults to 1e-7).
        max_lr: the last learning rate (defaults to 10).

    Returns:
        {"learning_rates", "losses" (smoothed), "minimum" (rate of the lowest loss), "steepest"
        (rate of the steepest descent before the minimum), "suggested" (the lower of minimum / 10
        and steepest), "steps" (run), "diverged"}.

    Raises:
        ConfigError: the steps or rates are out of range.
    """
    check_lr_range(steps, min_lr, max_lr)
    recipe = dataclasses.replace(config.recipe(), schedule="constant", learning_rate=min_lr)
    seed_everything(config)
    model = model_for_recipe(config.preset, train_set.image_shape, train_set.num_classes, recipe)
    compile_for_training(model, recipe, min_lr)
    targets = one_hot(train_set)
    batch_size = min(recipe.batch_size, len(train_set))
    rates, losses = [], []
    average, best = 0.0, math.inf
    for step, index in enumerate(_batches(len(train_set), batch_size, steps, config.seed)):
        rate = min_lr * (max_lr / min_lr) ** (step / (steps - 1))
        model.optimizer.learning_rate = rate
        model.reset_metrics()  # Keras reports the epoch's running mean; we want this batch's loss
        loss = float(
            model.train_on_batch(train_set.x[index], targets[index], return_dict=True)["loss"]
        )
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        smoothed = average / (1 - SMOOTHING ** (step + 1))
        if not math.isfinite(smoothed) or smoothed > DIVERGED * best:
            break
        best = min(best, smoothed)
        rates.append(rate)
        losses.append(smoothed)
    return _suggest(rates, losses) | {"steps": len(rates), "diverged": len(rates) < steps}


def _batches(n: int, batch_size: int, steps: int, seed: int):
    """Indices of `steps` full batches, reshuffled on every pass over the `n` examples."""
    rng = np.random.default_rng(seed)
    per_pass = n // batch_size
    for step in range(steps):
        if step % per_pass == 0:
            order = rng.permutation(n)
        start = (step % per_pass) * batch_size
        yield np.sort(order[start : start + batch_size])


def _suggest(rates: list[float], losses: list[float]) -> dict:
    """The rate of the lowest loss, the rate where the loss falls fastest, and a suggestion."""
    result = {"learning_rates": rates, "losses": losses}
    if len(rates) < 3:
        return result | {"minimum": None, "suggested": None, "steepest": None}
    lowest = int(np.argmin(losses))
    slope = np.gradient(np.asarray(losses), np.log(rates))
    steepest = int(np.argmin(slope[: max(lowest, 1) + 1]))
    # A tenth of the minimum is the usual rule, but when the loss never turned up (the minimum
    # sits at the end of the range) it overshoots; the steepest descent then is the safer guess.
    return result | {
        "minimum": rates[lowest],
        "suggested": min(rates[lowest] / 10, rates[steepest]),
        "steepest": rates[steepest],
    }
