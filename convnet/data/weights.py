"""Class weights for the loss (`--class-weight`): balanced, none, or a JSON file of weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from convnet.data.dataset import Dataset
from convnet.errors import DataError

MAX_WEIGHT = 1e6


def class_weights(spec: str | None, data: Dataset) -> dict[int, float] | None:
    """The weight of each class index in the loss, as Keras' `fit(class_weight=...)` takes it.

    Args:
        spec: None or "none" for equal weights; "balanced" for weights inverse to each class's
            frequency in `data` (scikit-learn's `compute_class_weight`: n / (classes * count));
            else a JSON file mapping class names to weights, classes it leaves out weighing 1.
        data: the training examples.

    Raises:
        DataError: the file cannot be read, names a class `data` does not have, or gives a
            weight that is not a number >= 0.
    """
    if spec is None or spec == "none":
        return None
    if spec == "balanced":
        # scikit-learn takes a second or more to import: only a weighting pays for it.
        from sklearn.utils.class_weight import compute_class_weight

        present = np.unique(data.y)
        weights = compute_class_weight("balanced", classes=present, y=data.y)
        return {int(c): float(w) for c, w in zip(present, weights, strict=True)}
    return _weights_file(Path(spec), data.class_names)


def _weights_file(path: Path, class_names: tuple[str, ...]) -> dict[int, float]:
    try:
        given = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(
            f"{path}: file not found; class_weight takes balanced, none, or a JSON file."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a JSON file of class weights ({error}).") from None
    if not isinstance(given, dict):
        raise DataError(f'{path}: expected a JSON object of {{"class name": weight}}.')
    index = {name: i for i, name in enumerate(class_names)}
    weights = dict.fromkeys(range(len(class_names)), 1.0)
    for name, weight in given.items():
        if name not in index:
            raise DataError(
                f"{path}: class {name!r} is not one of the training data's classes "
                f"({', '.join(class_names)})."
            )
        number = isinstance(weight, int | float) and not isinstance(weight, bool)
        # Past 1e6 a weight swamps the loss (1e308 overflows it): no real data asks for that.
        if not number or not 0 <= weight <= MAX_WEIGHT:
            raise DataError(
                f"{path}: the weight of {name!r} must be a number from 0 to {MAX_WEIGHT:g}. "
                f"Received: {weight!r}."
            )
        weights[index[name]] = float(weight)
    if not any(weights.values()):
        raise DataError(f"{path}: every class weighs 0, so nothing would be learned.")
    return weights
