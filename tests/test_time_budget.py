"""Training to a time budget: the plan, the schedule that ends with it, and the stop."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest
from conftest import Clock
from keras import ops

from convnet.training.callbacks import TimeBudget

STEPS = 4  # batches per epoch
WARMUP = 2 * STEPS  # `best`'s 2 epochs of warm-up


class Pace(keras.callbacks.Callback):
    """Makes every epoch (or every batch) take `seconds` on the clock."""

    def __init__(self, clock: Clock, seconds: float, per_batch: bool = False):
        super().__init__()
        self.clock, self.seconds, self.per_batch = clock, seconds, per_batch

    def on_train_batch_end(self, batch, logs=None):
        if self.per_batch:
            self.clock.now += self.seconds

    def on_epoch_end(self, epoch, logs=None):
        if not self.per_batch:
            self.clock.now += self.seconds


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


def fit(model, callbacks, max_epochs: int, steps: int = STEPS, initial_epoch: int = 0):
    x, y = np.ones((steps * 4, 1), np.float32), np.zeros((steps * 4, 1), np.float32)
    return model.fit(
        x,
        y,
        batch_size=4,
        epochs=max_epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        verbose=0,
    )


@pytest.mark.trains
def test_training_stops_with_the_plan_and_the_schedule_ends_with_it(clock):
    rate = schedule(40)
    model = unit_gradient_model(rate)
    budget = TimeBudget(2.1, 40, STEPS, rate)
    history = fit(model, [Pace(clock, 0.25), budget], 40)

    plans = history.history["planned_epochs"]
    trained = len(plans)
    fit_in_budget = int(2.1 // 0.25)
    # No plan before the pace of an epoch that did not compile; then as many epochs as fit.
    assert plans == [40] + [fit_in_budget] * (fit_in_budget - 1)
    assert clock.now <= 2.1
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


@pytest.mark.trains
def test_a_machine_that_slows_down_gets_a_shorter_plan(clock):
    class Slowing(Pace):
        def on_epoch_end(self, epoch, logs=None):
            self.clock.now += 0.25 if epoch < 4 else 0.5

    rate = schedule(40)
    model = unit_gradient_model(rate)
    history = fit(model, [Slowing(clock, 0), TimeBudget(4.1, 40, STEPS, rate)], 40)
    plans = history.history["planned_epochs"]
    assert plans[1] == 2 + int((4.1 - 0.5) // 0.25)  # planned at the first pace
    assert all(a >= b for a, b in zip(plans[1:], plans[2:], strict=False))  # only shortened
    assert plans[-1] == len(plans) < plans[1]
    assert clock.now <= 4.1


@pytest.mark.trains
def test_a_machine_too_slow_for_the_cap_plans_in_its_first_epoch(clock):
    steps, warmup = 40, 2 * 40  # 2 epochs of warm-up in a cap of 24, as `best` has
    rate = keras.optimizers.schedules.CosineDecay(
        0.0, 24 * steps - warmup, warmup_target=0.1, warmup_steps=warmup
    )
    model = unit_gradient_model(rate)
    budget = TimeBudget(100.0, 24, steps, rate)
    history = fit(model, [Pace(clock, 1.0, per_batch=True), budget], 24, steps=steps)

    # 40 s an epoch: after the 11th step (11 s), 29 s more end the first epoch, and 60 s of
    # the budget are left, which fit one more. The warm-up shrinks with the plan, 24 -> 2.
    assert history.history["planned_epochs"] == [2, 2]
    assert (rate.warmup_steps, rate.decay_steps) == (6, 2 * steps - 6)
    original = keras.optimizers.schedules.CosineDecay(
        0.0, 24 * steps - warmup, warmup_target=0.1, warmup_steps=warmup
    )
    expected = sum(float(original(s)) for s in range(11)) + sum(
        float(rate(s)) for s in range(11, 2 * steps)
    )
    assert -float(model.get_weights()[0][0, 0]) == pytest.approx(expected, rel=1e-4)
    assert float(rate(2 * steps - 1)) < 1e-3  # the schedule ends within the budget


@pytest.mark.trains
def test_a_machine_fast_enough_for_the_cap_plans_after_its_second_epoch(clock):
    rate = schedule(24)
    model = unit_gradient_model(rate)
    budget = TimeBudget(1000.0, 24, 40, rate)
    history = fit(model, [Pace(clock, 1.0, per_batch=True), budget], 24, steps=40)
    assert history.history["planned_epochs"] == [24] * 24
    assert rate.warmup_steps == WARMUP


@pytest.mark.trains
def test_an_epoch_that_runs_past_the_budget_stops_at_the_next_batch(clock):
    model = unit_gradient_model(0.1)
    pace = Pace(clock, 0.25, per_batch=True)
    history = fit(model, [pace, TimeBudget(0.9, 5, 20)], 5, steps=20)
    assert len(history.epoch) == 1
    assert int(model.optimizer.iterations) == 4  # the first batch to end past 0.9 s


@pytest.mark.trains
def test_a_resumed_run_continues_the_plan_it_had(clock):
    rate = schedule(40)
    model = unit_gradient_model(rate)
    budget = TimeBudget(60.0, 40, STEPS, rate, elapsed=10.0, planned=7)
    # Resumed after 3 epochs, at a pace that would fit 40 in what is left: the plan stays 7.
    history = fit(model, [Pace(clock, 0.25), budget], 40, initial_epoch=3)
    assert rate.decay_steps == 7 * STEPS - WARMUP
    assert history.epoch == [3, 4, 5, 6]
    assert history.history["planned_epochs"] == [7] * 4
    assert budget._spent() == 10.0 + 4 * 0.25


@pytest.mark.trains
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
    assert metrics["epochs"] == len(rows) == int(rows[-1]["planned_epochs"]) < 200
    assert f"{metrics['epochs']} of 200 in 6 s" in (result.run / "report.html").read_text()
    # Within the budget, as recorded: past it by at most one epoch at the slowest pace seen
    # (a plan made at a faster pace, or the batch at which a long epoch stops).
    elapsed = [float(row["elapsed_seconds"]) for row in rows]
    pace = max(later - earlier for earlier, later in zip(elapsed, elapsed[1:], strict=False))
    assert elapsed[-1] <= metrics["fit_seconds"] <= 6.0 + pace


def test_a_negative_budget_is_refused_before_any_run_is_written(tmp_path, tiny_npz):
    import convnet
    from convnet.errors import ConfigError

    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="time_budget must be >= 0 seconds"):
        convnet.train(train=str(tiny_npz), time_budget=-5.0, out=str(out), verbose=0)
    assert not out.exists()


def test_a_budget_is_refused_for_several_processes():
    from convnet.errors import ConfigError
    from convnet.models.recipe import Recipe
    from convnet.training.distributed import Context

    Context("jax").check_recipe(Recipe(time_budget=60.0))
    Context("jax", num_processes=2).check_recipe(Recipe())
    with pytest.raises(ConfigError, match="time_budget works in one process"):
        Context("jax", num_processes=2).check_recipe(Recipe(time_budget=60.0))
