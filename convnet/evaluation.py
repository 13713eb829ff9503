"""Test-set metrics from one pass of predictions."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, log_loss

from convnet.data.dataset import Dataset


def predict_proba(
    model, x: np.ndarray, batch_size: int = 1024, flip_tta: bool = False
) -> np.ndarray:
    """Class probabilities for uint8 images, optionally averaged with their horizontal mirrors."""
    probabilities = model.predict(x, batch_size=batch_size, verbose=0)
    if flip_tta:
        probabilities = (
            probabilities + model.predict(x[:, :, ::-1], batch_size=batch_size, verbose=0)
        ) / 2
    return probabilities


def evaluate(model, data: Dataset, batch_size: int = 1024, flip_tta: bool = False) -> dict:
    """Test loss (categorical cross-entropy) and accuracy of `model` on `data`.

    Returns:
        {"test_loss", "test_accuracy", "test_examples", "test_data"}.
    """
    probabilities = predict_proba(model, data.x, batch_size, flip_tta)
    return {
        "test_loss": float(log_loss(data.y, probabilities, labels=range(data.num_classes))),
        "test_accuracy": float(accuracy_score(data.y, probabilities.argmax(axis=1))),
        "test_examples": len(data),
        "test_data": data.source,
    }
