"""Temperature scaling: the fit, the folding into the softmax layer, and the training run."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import make_images
from scipy.special import log_softmax, softmax

from convnet.data.dataset import Dataset
from convnet.errors import ConfigError
from convnet.evaluation import TestTimeAugmentation
from convnet.models import registry
from convnet.models.recipe import Recipe
from convnet.models.registry import Preset
from convnet.training.calibration import calibrate, fit_temperature

ABC = ("a", "b", "c")


def draw_labels(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One class drawn from each row of `probabilities`."""
    cumulative = probabilities.cumsum(axis=1)
    return (rng.random((len(probabilities), 1)) > cumulative).sum(axis=1)


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_fit_finds_the_temperature_that_drew_the_labels(true_temperature):
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, (20000, 5))
    y = draw_labels(softmax(logits / true_temperature, axis=1), rng)
    fitted = fit_temperature(log_softmax(logits, axis=1)[None], y)
    assert fitted == pytest.approx(true_temperature, rel=0.08)


def test_views_are_tempered_before_they_are_averaged():
    rng = np.random.default_rng(1)
    views = log_softmax(rng.normal(0.0, 4.0, (2, 2000, 3)), axis=-1)
    y = draw_labels(softmax(views / 2.0, axis=-1).mean(axis=0), rng)
    fitted = fit_temperature(views, y)

    def loss(t):  # the mean over views of the tempered probabilities, by hand
        mean = softmax(views / t, axis=-1).mean(axis=0)
        return -np.log(mean[np.arange(2000), y]).mean()

    assert loss(fitted) < min(loss(fitted * 0.9), loss(fitted * 1.1), loss(1.0))


def tiny_model(activation: str = "softmax") -> keras.Model:
    inputs = keras.Input((4, 4, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    outputs = keras.layers.Dense(3, activation=activation, kernel_initializer="random_normal")(x)
    model = keras.Model(inputs, outputs)
    head = model.layers[-1]
    head.kernel.assign(head.kernel * 20)  # sure of itself, and the labels are random
    return model


def test_calibrate_divides_the_logits_of_the_saved_layer():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (300, 4, 4, 1), np.uint8)
    data = Dataset(x, rng.integers(0, 3, 300), ABC, "random")
    model = tiny_model()
    before = model.predict(data.x, verbose=0)

    temperature = calibrate(model, data, TestTimeAugmentation(flip=True))

    after = model.predict(data.x, verbose=0)
    assert temperature > 1  # over-confident on random labels: the probabilities soften
    expected = softmax(np.log(before.astype(np.float64)) / temperature, axis=1)
    np.testing.assert_allclose(after, expected, atol=1e-5)
    assert (after.argmax(axis=1) == before.argmax(axis=1)).all()
    rows = np.arange(len(data.y))
    assert -np.log(after[rows, data.y]).mean() < -np.log(before[rows, data.y]).mean()


def test_calibrate_needs_a_softmax_layer_at_the_end():
    data = Dataset(np.zeros((8, 4, 4, 1), np.uint8), np.arange(8) % 3, ABC, "zeros")
    with pytest.raises(ConfigError, match="ends in Dense"):
        calibrate(tiny_model(activation="linear"), data, TestTimeAugmentation())


def test_a_calibrated_run_records_its_temperature_and_predicts_with_it(tmp_path, trained_run):
    """The session's run trained again from its config.yaml, with `calibrate`: the same network
    (training is seeded), its softmax layer divided by the recorded temperature."""
    import convnet

    plain = convnet.load(trained_run)
    run = convnet.train(
        str(trained_run / "config.yaml"), calibrate=True, out=str(tmp_path / "run"), verbose=0
    )
    temperature = run.metrics["temperature"]
    assert 0.05 < temperature < 20 and abs(np.log(temperature)) > 0.1
    *features, kernel, bias = run.model.get_weights()
    *plain_features, plain_kernel, plain_bias = plain.model.get_weights()
    for a, b in zip(features, plain_features, strict=True):
        np.testing.assert_array_equal(a, b, err_msg="the run did not train as trained_run did")
    np.testing.assert_allclose(kernel, plain_kernel / temperature, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias, plain_bias / temperature, rtol=1e-5, atol=1e-6)

    test = make_images(200, seed=2)  # the test split of `tiny_npz`
    before, after = plain.predict(test.x), run.predict(test.x)
    tempered = softmax(np.log(before.astype(np.float64)) / temperature, axis=1)
    np.testing.assert_allclose(after, tempered, atol=1e-5)
    assert np.abs(after - before).max() > 1e-3  # the temperature changed the probabilities
    report = (run.run / "report.html").read_text()
    assert f"temperature of {temperature:.3f}" in report
    assert convnet.evaluate(run.run)["test_loss"] == pytest.approx(run.metrics["test_loss"])


def logits_head(input_shape, num_classes):
    inputs = keras.Input(input_shape, dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


def test_calibrating_a_model_without_softmax_fails_before_any_run_is_written(
    tmp_path, tiny_npz, monkeypatch
):
    import convnet

    preset = Preset("logits-head", logits_head, "ends in a linear layer", Recipe(val_split=0.2))
    monkeypatch.setitem(registry._PRESETS, preset.name, preset)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="calibrate needs"):
        convnet.train(preset="logits-head", train=str(tiny_npz), calibrate=True, out=str(out))
    assert not out.exists()
