"""Predictions and test-set metrics: test-time augmentation, top classes, the report's metrics."""

from __future__ import annotations

import contextlib
import itertools
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
)

from convnet.data.dataset import Dataset
from convnet.models.recipe import Recipe
from convnet.progress import bar

# The uint8 views given to the model in one call: 64 MiB, 85,000 images of 28x28 in one view.
VIEWS_PER_CALL_BYTES = 64 * 2**20
LOSS_ROWS = 2**16  # test rows whose log loss is computed at a time


@dataclass(frozen=True)
class TestTimeAugmentation:
    """The views of each image whose predicted probabilities are averaged.

    The image itself; its horizontal mirror when `flip`; and when `shift` > 0, copies moved by
    up to `shift` pixels each way (a (2 shift + 1)^2 grid, zero-filled like the training
    translation), each mirrored too when `flip`. With flip and shift 1, that is 18 views.
    """

    __test__ = False  # not a pytest class

    flip: bool = False
    shift: int = 0

    @classmethod
    def of(cls, recipe: Recipe, enabled: bool = True) -> TestTimeAugmentation:
        """The views a recipe (`flip`, `shift_tta`) asks for; the image alone when not
        `enabled`."""
        return cls(bool(recipe.flip), recipe.shift_tta) if enabled else cls()

    @property
    def count(self) -> int:
        """How many views of each image there are: 1 when nothing is augmented."""
        return (2 * self.shift + 1) ** 2 * (2 if self.flip else 1)

    def views(self, x: np.ndarray) -> Iterator[np.ndarray]:
        """Each view of the uint8 batch `x` (N, H, W, C), as a C-contiguous array."""
        offsets = range(-self.shift, self.shift + 1)
        for dy, dx in itertools.product(offsets, offsets):
            view = _shifted(x, dy, dx)
            yield view
            if self.flip:
                yield np.ascontiguousarray(view[:, :, ::-1])

    def average(
        self,
        forward: Callable[[np.ndarray], np.ndarray],
        x: np.ndarray,
        chunk_bytes: int = VIEWS_PER_CALL_BYTES,
        done: Callable[[int], object] | None = None,
    ) -> np.ndarray:
        """The mean of `forward` (uint8 images -> probabilities) over the views of `x`.

        The views of as many images as fit in `chunk_bytes` go through `forward` in one call: a
        server request of one image is one model call, not 18, and a test set of 10,000 28x28
        images one `predict`, not ten: each call of Keras' `predict` has a cost of its own
        before any image (docs/benchmarks.md, bench.peer). `done` is called
        with the number of images of each call when it returns.
        """
        image_bytes = max(int(np.prod(x.shape[1:])), 1) * self.count
        chunk = max(chunk_bytes // image_bytes, 1)
        means = None  # filled in place: a list of chunks joined at the end holds them twice
        for start in range(0, max(len(x), 1), chunk):  # an empty `x` still gets (0, K)
            images = x[start : start + chunk]
            views = list(self.views(images))
            probabilities = forward(views[0] if len(views) == 1 else np.concatenate(views))
            shape = (len(views), len(images), probabilities.shape[-1])
            if means is None:
                means = np.empty((len(x), shape[-1]), probabilities.dtype)
            means[start : start + len(images)] = probabilities.reshape(shape).mean(axis=0)
            if done:  # the images of this call are done
                done(len(images))
        return means


def _shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`x` moved down by `dy` and right by `dx` pixels (negative: up, left), zero-filled."""
    if dy == dx == 0:
        return np.ascontiguousarray(x)
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def predict_proba(
    model,
    x: np.ndarray,
    batch_size: int = 1024,
    tta: TestTimeAugmentation | None = None,
    verbose: int | str = 0,
) -> np.ndarray:
    """Class probabilities for uint8 images, averaged over the `tta` views (none by default).

    With several views and `verbose` 1, a progress bar counts the images done
    (`convnet.progress.bar`): 18 views of a test set take a while.
    """
    tta = tta or TestTimeAugmentation()
    forward = lambda view: model.predict(view, batch_size=batch_size, verbose=0)  # noqa: E731
    with retracing_unlogged():
        if tta.count == 1:
            return tta.average(forward, x)
        description = f"test-time views ({tta.count} per image)"
        with bar(len(x), description, verbose, unit="image") as shown:
            return tta.average(forward, x, done=shown.update)


@contextlib.contextmanager
def retracing_unlogged():
    """Holds back TensorFlow's warning that a function "triggered tf.function retracing" while
    the block runs, and only that one: every model of a session has functions of its own, and
    every batch size a trace, by design, so its advice does not apply. The logger is as it was
    after the block."""
    logger = logging.getLogger("tensorflow")
    logger.addFilter(_not_retracing)
    try:
        yield
    finally:
        logger.removeFilter(_not_retracing)


def _not_retracing(record: logging.LogRecord) -> bool:
    return "triggered tf.function retracing" not in record.getMessage()


def evaluate(
    model, data: Dataset, batch_size: int = 1024, tta: TestTimeAugmentation | None = None
) -> dict:
    """Test loss (categorical cross-entropy) and accuracy of `model` on `data`.

    Returns:
        {"test_loss", "test_accuracy", "test_examples", "test_data"}.
    """
    return test_metrics(data, predict_proba(model, data.x, batch_size, tta))


def test_metrics(data: Dataset, probabilities: np.ndarray) -> dict:
    """Test loss and accuracy from predictions already made on `data`."""
    predicted = probabilities.argmax(axis=1)
    with warnings.catch_warnings():  # a class predicted but absent from `data` is no error
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(data.y, predicted)
    return {
        "test_loss": mean_log_loss(data.y, probabilities, data.num_classes),
        "test_accuracy": float(accuracy_score(data.y, predicted)),
        "test_balanced_accuracy": float(balanced),
        "test_examples": len(data),
        "test_data": data.source,
    }


def mean_log_loss(y_true: np.ndarray, probabilities: np.ndarray, num_classes: int) -> float:
    """scikit-learn's `log_loss`, summed `LOSS_ROWS` rows at a time: it makes float64 one-hot
    labels and copies of the probabilities the size of the test set, 480 MB for the 2 million
    images held out of 10 million doodles."""
    total = 0.0
    for start in range(0, len(y_true), LOSS_ROWS):
        rows = slice(start, start + LOSS_ROWS)
        total += log_loss(
            y_true[rows], probabilities[rows], labels=range(num_classes), normalize=False
        )
    return total / max(len(y_true), 1)


def confusion(y_true: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Counts of (true class, predicted class): row i, column j is true i predicted as j.

    Args:
        y_true: integer labels, shape (N,).
        probabilities: class probabilities, shape (N, num_classes).

    Returns:
        An int array of shape (num_classes, num_classes).
    """
    labels = range(probabilities.shape[1])
    return confusion_matrix(y_true, probabilities.argmax(axis=1), labels=labels)


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its total (recall on the diagonal); rows of zeros stay zero."""
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)


def per_class_report(
    y_true: np.ndarray, probabilities: np.ndarray, class_names: list[str]
) -> list[dict]:
    """Precision, recall, F1 and support of each class, then the macro and weighted averages.

    Classes never predicted get precision 0 (scikit-learn's `zero_division=0`).

    Returns:
        One dict per row: {"class", "precision", "recall", "f1", "support"}; the last two rows
        are "macro avg" and "weighted avg".
    """
    y_pred = probabilities.argmax(axis=1)
    labels = list(range(probabilities.shape[1]))
    rows = []
    for average in (None, "macro", "weighted"):
        precision, recall, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        if average is None:
            rows += [
                _report_row(name, *values)
                for name, *values in zip(class_names, precision, recall, f1, support, strict=True)
            ]
        else:
            rows.append(_report_row(f"{average} avg", precision, recall, f1, len(y_true)))
    return rows


def _report_row(name: str, precision, recall, f1, support) -> dict:
    return {
        "class": name,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "support": int(support),
    }


def most_confused(matrix: np.ndarray, class_names: list[str], k: int = 5) -> list[dict]:
    """The `k` largest off-diagonal cells of a confusion matrix, largest first.

    Returns:
        [{"true", "predicted", "count", "share"}], share being the fraction of the true class's
        examples that went to the predicted class. Pairs with no mistakes are left out.
    """
    shares = row_normalised(matrix)
    off_diagonal = matrix.astype(float)
    np.fill_diagonal(off_diagonal, -1)
    order = np.argsort(-off_diagonal, axis=None, kind="stable")[:k]
    pairs = []
    for i, j in zip(*np.unravel_index(order, matrix.shape), strict=True):
        if off_diagonal[i, j] > 0:
            pairs.append(
                {
                    "true": class_names[i],
                    "predicted": class_names[j],
                    "count": int(matrix[i, j]),
                    "share": float(shares[i, j]),
                }
            )
    return pairs


def top_losses(y_true: np.ndarray, probabilities: np.ndarray, k: int = 16) -> list[dict]:
    """The `k` most confident mistakes: misclassified examples, most probable prediction first.

    Ties in confidence are broken by the higher loss.

    Returns:
        [{"index", "true", "predicted", "probability", "loss"}]: class indices, the probability
        given to the predicted class, and the cross-entropy -log p(true class).
    """
    y_pred = probabilities.argmax(axis=1)
    p_true = probabilities[np.arange(len(y_true)), y_true]
    losses = -np.log(np.clip(p_true, 1e-12, 1.0))
    wrong = np.flatnonzero(y_pred != y_true)
    confidence = probabilities[wrong, y_pred[wrong]]
    worst = wrong[np.lexsort((-losses[wrong], -confidence))][:k]
    return [
        {
            "index": int(i),
            "true": int(y_true[i]),
            "predicted": int(y_pred[i]),
            "probability": float(probabilities[i, y_pred[i]]),
            "loss": float(losses[i]),
        }
        for i in worst
    ]


def calibration(y_true: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> dict:
    """Reliability bins of the top-class confidence, and the expected calibration error.

    ECE is the average, weighted by bin size, of |accuracy - mean confidence| over `bins`
    equal-width confidence bins (Guo et al., 2017). Bins are closed on the right: (a, b].

    Returns:
        {"ece", "edges" (bins + 1 floats), "confidence", "accuracy", "count"}: one value per bin;
        empty bins have confidence and accuracy None.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    result = {"ece": 0.0, "edges": edges.tolist(), "confidence": [], "accuracy": [], "count": []}
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        result["count"].append(count)
        if count == 0:
            result["confidence"].append(None)
            result["accuracy"].append(None)
            continue
        mean_confidence = float(confidence[members].mean())
        accuracy = float(correct[members].mean())
        result["confidence"].append(mean_confidence)
        result["accuracy"].append(accuracy)
        result["ece"] += count / len(y_true) * abs(accuracy - mean_confidence)
    return result


def interpretation(y_true: np.ndarray, probabilities: np.ndarray, class_names: list[str]) -> dict:
    """Every metric the report shows, from one set of test predictions.

    Returns:
        {"confusion_matrix", "per_class", "most_confused", "top_losses", "calibration"}.
    """
    matrix = confusion(y_true, probabilities)
    return {
        "confusion_matrix": matrix.tolist(),
        "per_class": per_class_report(y_true, probabilities, class_names),
        "most_confused": most_confused(matrix, class_names),
        "top_losses": top_losses(y_true, probabilities),
        "calibration": calibration(y_true, probabilities),
    }
