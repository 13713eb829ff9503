"""The under-training warning: a recipe that makes fewer optimizer steps on the data than its
preset needs to learn says so on stderr and in the report, with the fix."""

from __future__ import annotations

import dataclasses
import math
import warnings

import keras
import numpy as np
import pytest
from conftest import make_images, run_main
from sklearn.datasets import load_digits

import convnet
from convnet.errors import UnderTrainingWarning, on_the_command_line
from convnet.models import registry
from convnet.models.registry import Preset, fit_steps, get_preset, under_training

DIGITS = 1437  # scikit-learn's 1,797 digits less the 20% (360) held out to test on


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    """All of scikit-learn's 8x8 digits (values 0-16) in one NPZ, as a user brings them."""
    digits = load_digits()
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez(path, x=digits.images.astype(np.int64), y=digits.target)
    return path


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "optimizer steps" in line]


@pytest.mark.trains
def test_seed_on_the_digits_warns_on_stderr_and_in_the_report(tmp_path, digits_npz, capsys):
    needed = get_preset("seed").min_steps
    result = run_main(
        capsys, "train", "--train", digits_npz, "--preset", "seed", "--out", tmp_path / "r"
    )
    assert result.returncode == 0, result.stderr
    # 1,437 less seed's 30% validation split is 1,005: 2 batches of 512 an epoch, 15 epochs.
    said = (
        "convnet: warning: preset 'seed' makes 30 optimizer steps on this data (1,005 training "
        "examples after the validation split: 2 batches of 512 an epoch, 15 epochs) and needs "
        f"about {needed} to learn: expect an under-trained model. {needed} steps take --epochs "
        f"{math.ceil(needed / 2)} here"
    )
    (line,) = warnings_of(result.stderr)  # once
    assert line.startswith(said), line
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Under-trained: preset &#x27;seed&#x27; makes 30 optimizer steps" in page
    assert f"--epochs {math.ceil(needed / 2)}" in page


@pytest.mark.trains
def test_fast_with_the_epochs_it_needs_on_the_digits_says_nothing(tmp_path, digits_npz, capsys):
    """fast's own 5 epochs make 30 steps here, fewer than it needs (docs/training.md): with the
    epochs the warning asks for, neither stderr nor the report says a word."""
    needed = get_preset("fast").min_steps
    per_epoch, _ = fit_steps(DIGITS, get_preset("fast").recipe)
    assert under_training("fast", get_preset("fast").recipe, DIGITS)  # its own recipe: too few
    epochs = math.ceil(needed / per_epoch)
    out = tmp_path / "r"
    result = run_main(
        capsys, "train", "--train", digits_npz, "--preset", "fast", "--epochs", epochs, "--out", out
    )
    assert result.returncode == 0, result.stderr
    assert warnings_of(result.stderr) == []
    assert "Under-trained" not in (out / "report.html").read_text()
    assert "under_training" not in convnet.load(out).metrics


class CountSteps(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


@pytest.mark.trains
def test_the_steps_counted_are_the_steps_fit_makes_after_the_limit_and_the_split(tmp_path):
    """333 of 500 examples (`limit`), less 25% (84) for validation: 249, 8 batches of 32 an
    epoch. Ignoring the limit would count 12 an epoch, ignoring the split 11."""
    x = make_images(500, side=8)
    counter = CountSteps()
    with pytest.warns(UnderTrainingWarning, match=r"makes 16 optimizer steps on this data \(249 "):
        convnet.train(
            train=(x.x, x.y),
            test=(x.x[:50], x.y[:50]),
            limit=333,
            val_split=0.25,
            batch_size=32,
            epochs=2,
            out=str(tmp_path / "r"),
            verbose=0,
            callbacks=[counter],
        )
    assert counter.steps == 16
    recipe = dataclasses.replace(get_preset("seed").recipe, val_split=0.25, batch_size=32)
    assert fit_steps(333, recipe, 2) == (8, 16)


def test_the_fix_names_the_presets_whose_own_recipe_is_enough_here():
    seed = get_preset("seed")
    message = under_training("seed", seed.recipe, DIGITS)
    enough = [
        name
        for name in ("fast", "best")
        if fit_steps(DIGITS, get_preset(name).recipe)[1] >= get_preset(name).min_steps
    ]
    if enough:  # in Python's terms here; a command's in flags
        said = " or ".join(f"preset={name!r}" for name in enough)
        assert f"; or {said}, whose own recipe makes enough" in message
        with on_the_command_line():
            said = " or ".join(f"--preset {name}" for name in enough)
            assert f"; or {said}, whose" in under_training("seed", seed.recipe, DIGITS)
    else:
        assert "preset=" not in message
    assert under_training("seed", seed.recipe, 60_000) == ""  # Fashion-MNIST's size: enough


def test_a_time_budget_that_ends_training_early_asks_for_a_longer_budget():
    """best trained 2 of its 24 epochs on 1,437 images: 12 steps; the budget that would hold
    its steps at that pace is said, not more epochs."""
    best = get_preset("best")
    steps = 2 * fit_steps(DIGITS, best.recipe)[0]
    message = under_training("best", best.recipe, DIGITS, epochs=2)
    budget = math.ceil(best.recipe.time_budget * best.min_steps / steps / 10) * 10
    assert f"makes {steps} optimizer steps" in message
    assert f"held it to 2 of 24 epochs; time_budget={budget} would give it about" in message
    assert "epochs=" not in message


def test_presets_without_a_figure_never_warn(monkeypatch):
    recipe = get_preset("seed").recipe
    assert under_training("no-such-preset", recipe, 10) == ""  # a run read back without it
    unmeasured = Preset("no-figure", "convnet.models.builders:seed", "no min_steps", recipe)
    monkeypatch.setitem(registry._PRESETS, "no-figure", unmeasured)
    assert under_training("no-figure", recipe, 10) == ""


def test_a_budget_cut_short_warns_at_the_end_and_a_short_recipe_only_at_the_start():
    """10,000 images give best's 24 epochs enough steps, so the start said nothing: when the
    budget holds 2 epochs, the end says it. A recipe short from the start is not said twice."""
    from types import SimpleNamespace

    from convnet.training.trainer import _steps_note

    def session(examples: int):
        return SimpleNamespace(
            config=SimpleNamespace(preset="best"),
            recipe=get_preset("best").recipe,
            data=SimpleNamespace(record=SimpleNamespace(examples=examples)),
            context=SimpleNamespace(is_chief=True),
        )

    assert under_training("best", get_preset("best").recipe, 10_000) == ""
    with pytest.warns(UnderTrainingWarning, match="held it to 2 of 24 epochs; time_budget="):
        note = _steps_note(session(10_000), 2)
    assert note["under_training"].startswith("preset 'best' makes 72 optimizer steps")
    assert _steps_note(session(10_000), 24) == {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said when training began, so not again
        note = _steps_note(session(300), 2)
    assert "under_training" in note
