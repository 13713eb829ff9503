"""A recipe in Keras' terms: its learning rate, optimizer, loss and seeds, shared by training and
the learning-rate range test."""

from __future__ import annotations

import keras

from convnet.backend import not_installed
from convnet.config import TrainConfig
from convnet.models.factory import jit_on_jax
from convnet.models.recipe import Recipe


def learning_rate(recipe: Recipe, steps_per_epoch: int):
    """The recipe's learning rate: a number (None for the optimizer's default), or a schedule
    stepped once per batch."""
    if recipe.schedule == "constant":
        return recipe.learning_rate
    peak = recipe.learning_rate or 1e-3
    warmup = int(recipe.warmup_epochs * steps_per_epoch)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else peak,
        decay_steps=max(recipe.epochs * steps_per_epoch - warmup, 1),
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


def make_optimizer(recipe: Recipe, rate) -> keras.optimizers.Optimizer:
    """The recipe's optimizer, at `rate` (a number, a schedule, or None for its default)."""
    config = {}
    if rate is not None:
        config["learning_rate"] = rate
    if recipe.weight_decay:
        config["weight_decay"] = recipe.weight_decay
    return keras.optimizers.get({"class_name": recipe.optimizer, "config": config})


# What is left of the BatchNorm moving averages' initial values (mean 0, variance 1) by the end
# of training, at most.
BN_FORGOTTEN = 0.01


def fit_batch_norm_momentum(model: keras.Model, total_steps: int) -> None:
    """Lowers each BatchNorm layer's momentum where the run is too short for its moving averages
    to forget their initial values (`BN_FORGOTTEN`): with momentum 0.9, 18 steps leave 15% of
    them, and inference then normalises with statistics the net never trained on: `best` on
    scikit-learn's 1,437 training digits of 8x8, 3 epochs, tested at 0.097 (chance) with
    momentum 0.9, and at 0.897 with it fitted.
    """
    ceiling = BN_FORGOTTEN ** (1 / max(total_steps, 1))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = min(layer.momentum, ceiling)


def compile_for_training(model: keras.Model, recipe: Recipe, rate, metrics=()) -> None:
    """Compiles `model` with the recipe's optimizer at `rate` and its label-smoothed loss (on JAX,
    its steps whole: `jit_on_jax`)."""
    jit_on_jax(model)
    model.compile(
        optimizer=make_optimizer(recipe, rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=list(metrics),
    )


def seed_everything(config: TrainConfig) -> None:
    """Seeds Python, NumPy and the backend; with `deterministic`, also makes its ops repeatable."""
    with not_installed("tensorflow", hidden=keras.backend.backend() != "tensorflow"):
        keras.utils.set_random_seed(config.seed)
    if not config.deterministic:
        return
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif keras.backend.backend() == "torch":
        import torch

        torch.use_deterministic_algorithms(True)
