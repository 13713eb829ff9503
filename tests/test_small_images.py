"""Data in the shapes people bring it: small images in odd pixel ranges in one file, class
weights and early stopping."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import yaml
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
def test_every_preset_trains_predicts_and_exports_on_8x8_digits(tmp_path, digits_npz, preset):
    import onnxruntime as ort

    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="has no test set: holding out"):
        convnet.train(train=str(digits_npz), preset=preset, epochs=1, out=str(run), verbose=0)
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


def test_class_weights_change_what_is_learnt(tmp_path, digits_npz):
    """On data where one class is rare, balanced weights count its examples more."""
    digits = load_digits()
    keep = (digits.target != 1) | (np.arange(len(digits.target)) % 10 == 0)  # 1s are rare
    path = tmp_path / "imbalanced.npz"
    np.savez(path, x=digits.images[keep], y=digits.target[keep])
    losses = {}
    for weighting in ("none", "balanced"):
        result = convnet.train(
            train=str(path),
            epochs=1,
            seed=3,
            class_weight=weighting,
            out=str(tmp_path / weighting),
            verbose=0,
        )
        history = (result.run / "history.csv").read_text().splitlines()
        header, first = (line.split(",") for line in history[:2])
        losses[weighting] = float(first[header.index("loss")])
    assert losses["none"] != pytest.approx(losses["balanced"], rel=1e-3)


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
