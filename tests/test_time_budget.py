"""Training to a time budget: the plan, the schedule that ends with it, and the stop."""

from __future__ import annotations

import csv
import json
import time

import keras
import numpy as np
import pytest
from keras import ops

from convnet.training.callbacks import TimeBudget

STEPS = 4  # batches per epoch
WARMUP = 2 * STEPS  # `best`'s 2 epochs of warm-up


class Pace(keras.callbacks.Callback):
    """Makes every epoch (or every batch) take at least `seconds` more."""

    def __init__(self, seconds: float, per_batch: bool = False):
        super().__init__()
        self.seconds, self.per_batch = seconds, per_batch

    def on_train_batch_end(self, batch, logs=None):
        if self.per_batch:
            time.sleep(self.seconds)

    def on_epoch_end(self, epoch, logs=None):
        if not self.per_batch:
            time.sleep(self.seconds)


def schedule(epochs: int) -> keras.optimizers.schedules.CosineDecay:
    return keras.optimizers.schedules.CosineDecay(
        0.0, epochs * STEPS - WARMUP, warmup_target=0.1, warmup_steps=WARMUP
    )


def unit_gradient_model(rate) -> keras.Model:
    """One weight whose gradient is always 1: plain SGD moves it by minus each step's rate."""
    inputs = keras.Input((1,))
    outputs = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(rate), loss=lambda y, p: ops.mean(p))
    return model


def fit(model, callbacks, max_epochs: int, steps: int = STEPS):
    x, y = np.ones((steps * 4, 1), np.float32), np.zeros((steps * 4, 1), np.float32)
    return model.fit(x, y, batch_size=4, epochs=max_epochs, callbacks=callbacks, verbose=0)


def test_training_stops_with_the_plan_and_the_schedule_ends_with_it():
    rate = schedule(40)
    model = unit_gradient_model(rate)
    budget = TimeBudget(2.0, 40, STEPS, rate)
    started = time.perf_counter()
    history = fit(model, [Pace(0.15), budget], 40)
    seconds = time.perf_counter() - started

    plans = history.history["planned_epochs"]
    trained = len(plans)
    assert 2 < trained < 40  # the budget, not the cap, ended it
    assert plans[-1] == trained and plans[0] == 40  # no plan before a pace without compiling
    assert all(a >= b for a, b in zip(plans[1:], plans[2:], strict=False))  # only shortened
    assert seconds < 2.0 + 1.0
    # The steps used the schedule in force during their epoch: the cap's, then each plan's.
    # Had the training step kept the cap's schedule, the weight would have moved further.
    in_force = [40, *plans[:-1]]
    expected = sum(
        float(schedule(epochs)(epoch * STEPS + step))
        for epoch, epochs in enumerate(in_force)
        for step in range(STEPS)
    )
    moved = -float(model.get_weights()[0][0, 0])
    assert moved == pytest.approx(expected, rel=1e-4)
    assert moved < sum(float(schedule(40)(step)) for step in range(trained * STEPS))
    assert float(schedule(trained)(trained * STEPS - 1)) < 1e-3  # ends near a rate of 0


def test_an_epoch_that_runs_past_the_budget_stops_at_the_next_batch():
    model = unit_gradient_model(0.1)
    history = fit(model, [Pace(0.1, per_batch=True), TimeBudget(0.35, 5, 20)], 5, steps=20)
    assert len(history.epoch) == 1
    assert 3 <= int(model.optimizer.iterations) < 20


def test_a_resumed_run_continues_the_plan_it_had():
    rate = schedule(40)
    model = unit_gradient_model(rate)
    budget = TimeBudget(60.0, 40, STEPS, rate, elapsed=10.0, planned=7)
    budget.set_model(model)
    budget.on_train_begin()
    assert rate.decay_steps == 7 * STEPS - WARMUP
    assert budget._spent() >= 10.0


def test_a_run_with_a_budget_records_what_it_trained(tmp_path, tiny_npz):
    import convnet

    result = convnet.train(
        train=str(tiny_npz),
        epochs=200,
        time_budget=6.0,
        batch_size=64,
        schedule="cosine",
        warmup_epochs=2.0,
        out=str(tmp_path / "run"),
        verbose=0,
    )
    metrics = json.loads((result.run / "metrics.json").read_text())
    rows = list(csv.DictReader((result.run / "history.csv").open()))
    assert 2 < metrics["epochs"] == len(rows) == int(rows[-1]["planned_epochs"]) < 200
    assert metrics["fit_seconds"] < 6.0 + 3.0
    assert f"{metrics['epochs']} of 200 in 6 s" in (result.run / "report.html").read_text()


def test_a_negative_budget_is_refused_before_any_run_is_written(tmp_path, tiny_npz):
    import convnet
    from convnet.errors import ConfigError

    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="time_budget must be >= 0 seconds"):
        convnet.train(train=str(tiny_npz), time_budget=-5.0, out=str(out), verbose=0)
    assert not out.exists()


def test_a_budget_is_refused_for_several_processes():
    from convnet.errors import ConfigError
    from convnet.models.registry import Recipe
    from convnet.training.distributed import Context
    from convnet.training.trainer import _check_time_budget

    _check_time_budget(Recipe(time_budget=60.0), Context("jax"))
    _check_time_budget(Recipe(), Context("jax", num_processes=2))
    with pytest.raises(ConfigError, match="time_budget works in one process"):
        _check_time_budget(Recipe(time_budget=60.0), Context("jax", num_processes=2))
