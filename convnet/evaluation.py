"""Predictions and test-set metrics: test-time augmentation, top classes, the report's metrics."""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from convnet.data.dataset import Dataset
from convnet.interrupts import Deferred
from convnet.machine import trim_heap
from convnet.models.recipe import Recipe
from convnet.progress import bar

# The uint8 views given to the model in one call: 16 MiB, 21,400 images of 28x28 in one view. A
# call costs about 20 ms of its own (docs/benchmarks.md), and a bigger one holds more at once: at
# 64 MiB a streamed `fast` run's test pass peaked 280 MB higher (bench.scale_stages, 8 GB).
VIEWS_PER_CALL_BYTES = 16 * 2**20
LOSS_ROWS = 2**16  # rows `TestTally.of` adds at a time: what `add` computes on the side is small


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

    def averages(
        self,
        forward: Callable[[np.ndarray], np.ndarray],
        x: np.ndarray,
        chunk_bytes: int = VIEWS_PER_CALL_BYTES,
        done: Callable[[int], object] | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """The mean of `forward` (uint8 images -> probabilities) over the views of `x`, a call
        at a time: (the position of the call's first image, their mean probabilities).

        The views of as many images as fit in `chunk_bytes` go through `forward` in one call: a
        server request of one image is one model call, not 18, and a test set of 10,000 28x28
        images one `predict`, not ten: each call of Keras' `predict` has a cost of its own
        before any image (docs/benchmarks.md, bench.peer). `done` is called with the number of
        images of each call when it returns. An empty `x` still gives one (0, K) call.
        """
        image_bytes = max(int(np.prod(x.shape[1:])), 1) * self.count
        chunk = max(chunk_bytes // image_bytes, 1)
        for start in range(0, max(len(x), 1), chunk):
            images = x[start : start + chunk]
            views = list(self.views(images))
            probabilities = forward(views[0] if len(views) == 1 else np.concatenate(views))
            shape = (len(views), len(images), probabilities.shape[-1])
            yield start, probabilities.reshape(shape).mean(axis=0)
            if done:
                done(len(images))

    def average(self, forward: Callable[[np.ndarray], np.ndarray], x: np.ndarray, **settings):
        """The mean of `forward` over the views of `x`, all at once (`averages` has the
        `settings`)."""
        return _joined(self.averages(forward, x, **settings), len(x))


def _joined(chunks: Iterator[tuple[int, np.ndarray]], count: int) -> np.ndarray:
    """One (count, K) array of the (first row, rows) chunks, filled in place: a list of chunks
    joined at the end would hold them twice."""
    joined = None
    for start, chunk in chunks:
        if joined is None:
            joined = np.empty((count, chunk.shape[-1]), chunk.dtype)
        joined[start : start + len(chunk)] = chunk
    return joined


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
    return _joined(predicted(model, x, batch_size, tta, verbose), len(x))


def predicted(
    model,
    x: np.ndarray,
    batch_size: int = 1024,
    tta: TestTimeAugmentation | None = None,
    verbose: int | str = 0,
) -> Iterator[tuple[int, np.ndarray]]:
    """`predict_proba` a model call at a time (`TestTimeAugmentation.averages`): the position
    of each call's first image, and its images' probabilities."""
    tta = tta or TestTimeAugmentation()
    # A Ctrl-C or SIGTERM waits for each of the framework's calls to return.
    forward = Deferred()(functools.partial(model.predict, batch_size=batch_size, verbose=0))
    description = f"test-time views ({tta.count} per image)"
    shown_if = verbose if tta.count > 1 else 0
    with retracing_unlogged(), bar(len(x), description, shown_if, unit="image") as shown:
        yield from tta.averages(forward, x, done=shown.update)


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
        {"test_loss", "test_accuracy", "test_balanced_accuracy", "test_examples", "test_data"}.
    """
    return predicted_tally(model, data, batch_size, tta).metrics() | {"test_data": data.source}


def predicted_tally(
    model,
    data: Dataset,
    batch_size: int = 1024,
    tta: TestTimeAugmentation | None = None,
    verbose: int | str = 0,
) -> TestTally:
    """The tally of `model`'s predictions on `data` (`predicted`, a model call at a time):
    nothing the size of the test set is held, so 2 million streamed test images take no more
    memory than 100,000. With several views and `verbose` 1, a progress bar counts the images
    done."""
    tally = TestTally(data.num_classes)
    for start, probabilities in predicted(model, data.x, batch_size, tta, verbose):
        tally.add(data.y[start : start + len(probabilities)], probabilities)
        trim_heap()
    return tally


def cross_entropy_sum(truth_probabilities: np.ndarray) -> float:
    """The summed log loss of predictions giving their true classes `truth_probabilities`,
    clipped to the float type's epsilon (a sure mistake costs -log(eps), not infinity): what
    scikit-learn's `log_loss` sums (tests/test_evaluation.py), without its 1.2 s import."""
    eps = np.finfo(truth_probabilities.dtype).eps
    return float(-np.log(np.clip(truth_probabilities.astype(np.float64), eps, 1 - eps)).sum())


class TestTally:
    """What the test metrics and the report take from a model's predictions, added a chunk at
    a time: the confusion counts, the summed log loss, the calibration bins' sums and the most
    confident mistakes so far. The figures are those of all the predictions at once.

    Args:
        num_classes: K, the probabilities' columns.
        bins: equal-width confidence bins for calibration.
        top_k: the confident mistakes kept.
    """

    __test__ = False  # not a pytest class

    def __init__(self, num_classes: int, bins: int = 10, top_k: int = 16):
        self.num_classes, self.top_k = num_classes, top_k
        self.matrix = np.zeros((num_classes, num_classes), np.int64)
        self.loss_sum = 0.0
        self.edges = np.linspace(0.0, 1.0, bins + 1)
        self.bin_counts = np.zeros(bins, np.int64)
        self.bin_confidence = np.zeros(bins)  # summed
        self.bin_correct = np.zeros(bins, np.int64)
        self._mistakes = np.zeros(0, _MISTAKE)  # the most confident so far, first first

    @classmethod
    def of(cls, y_true: np.ndarray, probabilities: np.ndarray, **settings) -> TestTally:
        """The tally of predictions all at hand: `probabilities` (N, K) of labels `y_true`."""
        tally = cls(probabilities.shape[1], **settings)
        for start in range(0, len(y_true), LOSS_ROWS):
            rows = slice(start, start + LOSS_ROWS)
            tally.add(y_true[rows], probabilities[rows])
        return tally

    @property
    def count(self) -> int:
        """The predictions added so far."""
        return int(self.bin_counts.sum())

    def add(self, y_true: np.ndarray, probabilities: np.ndarray) -> None:
        """Counts the next predictions: `probabilities` (n, K) of the integer labels `y_true`,
        the examples after those added so far."""
        if not len(y_true):
            return
        first, y_true = self.count, np.asarray(y_true, np.int64)
        y_pred = probabilities.argmax(axis=1)
        np.add.at(self.matrix, (y_true, y_pred), 1)
        rows = np.arange(len(y_true))
        self.loss_sum += cross_entropy_sum(probabilities[rows, y_true])
        confidence = probabilities[rows, y_pred]
        bins = len(self.bin_counts)
        which = np.clip(np.searchsorted(self.edges, confidence, side="left") - 1, 0, bins - 1)
        self.bin_counts += np.bincount(which, minlength=bins)
        self.bin_confidence += np.bincount(which, confidence, minlength=bins)
        self.bin_correct += np.bincount(which[y_pred == y_true], minlength=bins)
        wrong = np.flatnonzero(y_pred != y_true)
        found = np.zeros(len(wrong), _MISTAKE)
        found["index"], found["true"] = first + wrong, y_true[wrong]
        found["predicted"] = y_pred[wrong]
        found["probability"] = confidence[wrong]
        found["loss"] = -np.log(np.clip(probabilities[wrong, y_true[wrong]], 1e-12, 1.0))
        # Most probable prediction first, ties by the higher loss, then by the earlier example
        # (lexsort is stable, and the earlier mistakes come first).
        mistakes = np.concatenate([self._mistakes, found])
        order = np.lexsort((-mistakes["loss"], -mistakes["probability"]))
        self._mistakes = mistakes[order[: self.top_k]]

    def metrics(self) -> dict:
        """{"test_loss", "test_accuracy", "test_balanced_accuracy", "test_examples"}: the mean
        cross-entropy, and the balanced accuracy as scikit-learn's `balanced_accuracy_score`
        (the mean recall of the classes the labels hold)."""
        count, support = self.count, self.matrix.sum(axis=1)
        recall = _share(np.diag(self.matrix), support)[support > 0]
        return {
            "test_loss": self.loss_sum / max(count, 1),
            "test_accuracy": float(np.trace(self.matrix) / max(count, 1)),
            "test_balanced_accuracy": float(recall.mean()) if len(recall) else 0.0,
            "test_examples": count,
        }

    def per_class(self, class_names: list[str]) -> list[dict]:
        """Precision, recall, F1 and support of each class, then the macro and weighted
        averages, as scikit-learn's `classification_report` with `zero_division=0`: a class
        never predicted has precision 0.

        Returns:
            One dict per row: {"class", "precision", "recall", "f1", "support"}; the last two
            rows are "macro avg" and "weighted avg".
        """
        hits = np.diag(self.matrix)
        support, predicted = self.matrix.sum(axis=1), self.matrix.sum(axis=0)
        f1 = _share(2 * hits, support + predicted)
        scores = _share(hits, predicted), _share(hits, support), f1
        rows = [_report_row(*values) for values in zip(class_names, *scores, support, strict=True)]
        weights = _share(support, np.full(len(support), support.sum()))
        rows.append(_report_row("macro avg", *(s.mean() for s in scores), self.count))
        rows.append(_report_row("weighted avg", *(s @ weights for s in scores), self.count))
        return rows

    def calibration(self) -> dict:
        """Reliability bins of the top-class confidence, and the expected calibration error.

        ECE is the average, weighted by bin size, of |accuracy - mean confidence| over the
        equal-width confidence bins (Guo et al., 2017). Bins are closed on the right: (a, b].

        Returns:
            {"ece", "edges" (bins + 1 floats), "confidence", "accuracy", "count"}: one value
            per bin; empty bins have confidence and accuracy None.
        """
        filled = self.bin_counts > 0
        confidence = _share(self.bin_confidence, self.bin_counts)
        accuracy = _share(self.bin_correct, self.bin_counts)
        gaps = self.bin_counts * np.abs(accuracy - confidence)
        return {
            "ece": float(gaps.sum() / max(self.count, 1)),
            "edges": self.edges.tolist(),
            "confidence": np.where(filled, confidence, None).tolist(),
            "accuracy": np.where(filled, accuracy, None).tolist(),
            "count": self.bin_counts.tolist(),
        }

    def top_losses(self) -> list[dict]:
        """The most confident mistakes, up to `top_k`: the most probable prediction first, ties
        by the higher loss.

        Returns:
            [{"index", "true", "predicted", "probability", "loss"}]: class indices, the
            probability given to the predicted class, and the cross-entropy -log p(true class).
        """
        names = _MISTAKE.names
        return [
            {name: value.item() for name, value in zip(names, row, strict=True)}
            for row in self._mistakes
        ]

    def interpretation(self, class_names: list[str]) -> dict:
        """Every metric the report shows.

        Returns:
            {"confusion_matrix", "per_class", "most_confused", "top_losses", "calibration"}.
        """
        return {
            "confusion_matrix": self.matrix.tolist(),
            "per_class": self.per_class(class_names),
            "most_confused": most_confused(self.matrix, class_names),
            "top_losses": self.top_losses(),
            "calibration": self.calibration(),
        }


# A confident mistake, as `TestTally` keeps it.
_MISTAKE = np.dtype(
    [("index", np.int64), ("true", np.int64), ("predicted", np.int64),
     ("probability", np.float64), ("loss", np.float64)]
)  # fmt: skip


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """part / whole as floats, 0 where whole is 0."""
    return np.divide(part, whole, out=np.zeros(len(part)), where=whole > 0)


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its total (recall on the diagonal); rows of zeros stay zero."""
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)


def _report_row(name: str, precision, recall, f1, support) -> dict:
    values = name, float(precision), float(recall), float(f1), int(support)
    return dict(zip(("class", "precision", "recall", "f1", "support"), values, strict=True))


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
