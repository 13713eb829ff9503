"""Data in the shapes people bring it: small images in odd pixel ranges in one file, class
weights and early stopping."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import yaml
from conftest import run_cli
from sklearn.datasets import load_digits

import convnet
from convnet.models import list_presets
from convnet.runs import Run
from convnet.training.callbacks import EarlyStop


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    """scikit-learn's 8x8 digits (values 0-16) as one NPZ with no test split: 400 of them."""
    digits = load_digits()
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez(path, x=digits.images[:400].astype(np.int64), y=digits.target[:400])
    return path


@pytest.mark.parametrize("preset", list_presets())
@pytest.mark.trains
def test_every_preset_trains_predicts_and_exports_on_8x8_digits(tmp_path, digits_npz, preset):
    import onnxruntime as ort

    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="has no test set: holding out"):
        trained = convnet.train(
            train=str(digits_npz), preset=preset, epochs=1, out=str(run), verbose=0
        )
    assert trained.model.input_shape == (None, 8, 8, 1)  # the smallest size, for every preset
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["pixel_range"], config["test_split"]) == ("0,16", 0.2)
    assert Run(run).read_json("metrics.json")["test_examples"] == 80

    raw = load_digits().images[:5].astype(np.int64)  # as the user has them: 0-16
    np.save(tmp_path / "x.npy", raw)
    predictions = convnet.predict(run, [tmp_path / "x.npy"])  # with the run's test-time views
    probabilities = np.array([[t["probability"] for t in p["top"]] for p in predictions])
    assert probabilities.shape == (5, 3) and (probabilities >= 0).all()

    onnx = ort.InferenceSession(str(convnet.export(run, "onnx", tmp_path / "model.onnx")))
    pixels = np.rint(raw * (255 / 16)).astype(np.uint8)[..., np.newaxis]
    exported = onnx.run(None, {onnx.get_inputs()[0].name: pixels})[0]  # averages the same views
    top = [p["top"][0] for p in predictions]
    np.testing.assert_allclose(exported.max(1), [t["probability"] for t in top], atol=1e-5)


def bars(n: int, shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three classes told apart by where a bright band is, in any size and channel count."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 60, (n, *shape), dtype=np.uint8)
    band = shape[0] // 3
    for i, label in enumerate(y):
        x[i, label * band : (label + 1) * band] = 220
    return x, y


@pytest.mark.parametrize(
    "shape", [(16, 16, 1), (28, 28, 1), (32, 32, 3)], ids=["16x16", "28x28", "32x32x3"]
)
@pytest.mark.parametrize("preset", list_presets())
@pytest.mark.trains
def test_every_preset_trains_one_epoch_at_every_size(tmp_path, preset, shape):
    """1 epoch on 48 of 96 images (`limit`), tested on 24: a model of the data's shape. (8x8,
    the smallest, is the digits' size above.)"""
    train, test = bars(96, shape), bars(24, shape, seed=1)
    out = str(tmp_path / "r")
    run = convnet.train(
        train=train, test=test, preset=preset, epochs=1, limit=48, out=out, verbose=0
    )
    assert run.model.input_shape == (None, *shape)
    probabilities = run.predict(test[0])  # through the run's test-time views
    assert probabilities.shape == (24, 3)
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    assert 0 <= run.test_accuracy <= 1 and np.isfinite(run.metrics["test_loss"])


def test_images_below_the_smallest_size_are_refused_in_one_line(tmp_path):
    """7x7 is one pixel under what every built-in preset takes: one line, before any Keras."""
    x, y = bars(30, (7, 7, 1))
    np.savez(tmp_path / "small.npz", x_train=x[..., 0], y_train=y, x_test=x[..., 0], y_test=y)
    result = run_cli("train", "--train", tmp_path / "small.npz", "--preset", "fast")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"convnet: error: {tmp_path / 'small.npz'}:train: images of 7x7 pixels are too small for "
        "preset 'fast'; the smallest it takes is 8x8."
    )


@pytest.mark.trains
def test_class_weights_change_what_is_learnt(tmp_path):
    """Images that say nothing of their class (all black), 1 in 10 of the rare class: the model
    can learn only the classes' prior. Unweighted, it gives the rare class its 10%; balanced
    weights count each rare example 9 times as much as a common one, so it learns even odds."""
    y = np.zeros(400, np.int64)
    y[::10] = 1
    x, test = np.zeros((400, 8, 8, 1), np.uint8), np.zeros((20, 8, 8, 1), np.uint8)
    rare = {}
    for weighting in ("none", "balanced"):
        run = convnet.train(
            train=(x, y),
            test=(test, np.arange(20) % 2),
            class_weight=weighting,
            optimizer="adam",
            learning_rate=0.05,
            batch_size=16,
            epochs=2,
            seed=3,
            out=str(tmp_path / weighting),
            verbose=0,
        )
        rare[weighting] = float(run.predict(test)[:, 1].mean())
    assert rare["none"] == pytest.approx(0.1, abs=0.06)
    assert rare["balanced"] == pytest.approx(0.5, abs=0.1)


@pytest.mark.parametrize(
    ("val_losses", "patience", "stops_after"),
    [
        ([1.0, 0.9, 0.95, 0.96, 0.97], 2, 4),  # best at epoch 2, then two without improving
        ([1.0, 0.9, 0.8, 0.7, 0.6], 2, None),  # improving throughout: never stops
        ([1.0, 1.1, 1.2], 1, 2),
    ],
)
def test_patience_stops_at_the_right_epoch(val_losses, patience, stops_after):
    stop = EarlyStop(patience)
    stop.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    stop.model.stop_training = False
    stop.on_train_begin()
    stopped = None
    for epoch, loss in enumerate(val_losses):
        stop.on_epoch_end(epoch, {"val_loss": loss})
        if stop.model.stop_training:
            stopped = epoch + 1
            break
    assert stopped == stops_after


def test_patience_counts_the_epochs_before_a_resume():
    """A run resumed after epochs 1-2 (best at 1) with patience 2 stops after epoch 3."""
    stop = EarlyStop(2, previous=[0.5, 0.6])
    stop.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    stop.model.stop_training = False
    stop.on_train_begin()
    stop.on_epoch_end(2, {"val_loss": 0.7})
    assert stop.model.stop_training
