"""The report's metrics, pinned on a hand-made example and checked against scikit-learn."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    log_loss,
)

from convnet.evaluation import (
    TestTally,
    TestTimeAugmentation,
    most_confused,
    predict_proba,
    row_normalised,
)
from convnet.serving.engines import Engine

NAMES = ["cat", "dog", "owl"]
# Six predictions worked out by hand: rows 1 (cat -> dog) and 5 (owl -> cat) are wrong.
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
PROBABILITIES = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.1, 0.6, 0.3],
        [0.2, 0.7, 0.1],
        [0.1, 0.9, 0.0],
        [0.05, 0.05, 0.9],
        [0.8, 0.1, 0.1],
    ]
)
TALLY = TestTally.of(Y_TRUE, PROBABILITIES)


def test_confusion_matrix_by_hand():
    matrix = TALLY.matrix
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert row_normalised(matrix)[0].tolist() == [0.5, 0.5, 0.0]


def test_row_normalised_keeps_empty_rows_at_zero():
    assert row_normalised(np.array([[0, 0], [1, 3]])).tolist() == [[0.0, 0.0], [0.25, 0.75]]


def test_per_class_report_by_hand():
    rows = {row["class"]: row for row in TALLY.per_class(NAMES)}
    assert rows["cat"] == pytest.approx(
        {"class": "cat", "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    )
    assert rows["dog"]["precision"] == pytest.approx(2 / 3)
    assert rows["dog"]["recall"] == 1.0
    assert rows["dog"]["f1"] == pytest.approx(0.8)
    assert rows["owl"]["precision"] == 1.0
    assert rows["owl"]["f1"] == pytest.approx(2 / 3)
    assert rows["macro avg"]["f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert rows["macro avg"]["support"] == 6


def test_metrics_match_scikit_learn_on_random_predictions():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 300)
    probabilities = rng.dirichlet(np.ones(5) * 0.5, 300)
    probabilities[:, 4] = 0  # class 4 never predicted: precision must follow zero_division=0
    y_pred = probabilities.argmax(axis=1)
    names = [f"c{i}" for i in range(5)]
    expected = classification_report(
        y_true, y_pred, labels=range(5), target_names=names, output_dict=True, zero_division=0
    )
    tally = TestTally.of(y_true, probabilities)
    for row in tally.per_class(names):
        reference = expected[row["class"]]
        assert row["precision"] == pytest.approx(reference["precision"])
        assert row["recall"] == pytest.approx(reference["recall"])
        assert row["f1"] == pytest.approx(reference["f1-score"])
        assert row["support"] == reference["support"]
    assert (tally.matrix == confusion_matrix(y_true, y_pred)).all()
    metrics = tally.metrics()
    assert metrics["test_accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert metrics["test_loss"] == pytest.approx(log_loss(y_true, probabilities, labels=range(5)))
    assert metrics["test_examples"] == 300


def test_balanced_accuracy_leaves_out_classes_the_labels_lack_as_scikit_learn_does():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, 200)  # classes 3 and 4 only predicted
    probabilities = rng.dirichlet(np.ones(5), 200)
    expected = balanced_accuracy_score(y_true, probabilities.argmax(axis=1))
    found = TestTally.of(y_true, probabilities).metrics()["test_balanced_accuracy"]
    assert found == pytest.approx(expected)
    assert TestTally(5).metrics()["test_examples"] == 0


def test_a_tally_added_a_chunk_at_a_time_gives_the_figures_of_all_at_once():
    # As the test set is predicted a model call at a time; ties in the mistakes' confidence
    # across chunks keep the earlier example first.
    rng = np.random.default_rng(2)
    y_true = rng.integers(0, 4, 1000)
    probabilities = rng.dirichlet(np.ones(4) * 0.3, 1000).astype(np.float32)
    probabilities[[10, 600, 990]] = [0.0, 0.0, 0.0, 1.0]  # three equally sure predictions
    y_true[[10, 600, 990]] = 0
    whole = TestTally.of(y_true, probabilities)
    chunked = TestTally(4)
    for start in (0, 7, 400, 401, 999):
        stop = {0: 7, 7: 400, 400: 401, 401: 999, 999: 1000}[start]
        chunked.add(y_true[start:stop], probabilities[start:stop])
    assert chunked.interpretation(NAMES + ["emu"]) == whole.interpretation(NAMES + ["emu"])
    assert chunked.metrics() == pytest.approx(whole.metrics())
    assert [m["index"] for m in whole.top_losses()[:3]] == [10, 600, 990]
    y_pred = probabilities.argmax(axis=1)
    wrong = y_pred != y_true
    assert whole.top_losses()[0]["probability"] == pytest.approx(probabilities[wrong].max())
    assert len(whole.top_losses()) == 16


def test_most_confused_pairs_largest_first():
    matrix = np.array([[5, 1, 3], [0, 4, 0], [2, 0, 6]])
    pairs = most_confused(matrix, NAMES, k=5)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("cat", "owl", 3),
        ("owl", "cat", 2),
        ("cat", "dog", 1),
    ]
    assert pairs[0]["share"] == pytest.approx(3 / 9)


def test_top_losses_are_the_confident_mistakes():
    losses = TALLY.top_losses()
    assert [(x["index"], x["true"], x["predicted"]) for x in losses] == [(5, 2, 0), (1, 0, 1)]
    assert losses[0]["probability"] == pytest.approx(0.8)
    assert losses[0]["loss"] == pytest.approx(-np.log(0.1))
    assert TestTally.of(Y_TRUE, PROBABILITIES, top_k=1).top_losses()[0]["index"] == 5


def test_calibration_by_hand():
    bins = TestTally.of(Y_TRUE, PROBABILITIES, bins=10).calibration()
    # Bins (0.5, 0.6], (0.6, 0.7], (0.7, 0.8], (0.8, 0.9] hold 1, 2, 1, 2 predictions with
    # accuracies 0, 1, 0, 1: ECE = (0.6 + 2 * 0.3 + 0.8 + 2 * 0.1) / 6 = 11 / 30.
    assert bins["count"] == [0, 0, 0, 0, 0, 1, 2, 1, 2, 0]
    assert bins["accuracy"][5:9] == [0.0, 1.0, 0.0, 1.0]
    assert bins["confidence"][6] == pytest.approx(0.7)
    assert bins["confidence"][0] is None
    assert bins["ece"] == pytest.approx(11 / 30)


def test_calibration_of_certain_correct_predictions_is_perfect():
    probabilities = np.eye(3)[[0, 1, 2, 1]]
    bins = TestTally.of(np.array([0, 1, 2, 1]), probabilities).calibration()
    assert bins["ece"] == 0.0
    assert bins["count"][-1] == 4


def test_interpretation_bundles_everything():
    found = TALLY.interpretation(NAMES)
    assert set(found) == {
        "confusion_matrix",
        "per_class",
        "most_confused",
        "top_losses",
        "calibration",
    }
    assert found["confusion_matrix"][2] == [1, 0, 1]


def test_tta_views_are_the_mirror_and_the_shifted_copies():
    x = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5, 1) + 1
    assert [v.tolist() for v in TestTimeAugmentation().views(x)] == [x.tolist()]
    plain, mirrored = TestTimeAugmentation(flip=True).views(x)
    np.testing.assert_array_equal(mirrored[0, :, :, 0], x[0, :, ::-1, 0])
    views = list(TestTimeAugmentation(flip=True, shift=1).views(x))
    assert len(views) == 18
    assert all(v.flags.c_contiguous and v.shape == x.shape for v in views)
    # The grid runs dy, dx from -1 to 1: view 2 * (3 * (dy + 1) + (dx + 1)), then its mirror.
    down_right = views[2 * (3 * 2 + 2)]
    np.testing.assert_array_equal(down_right[:, 1:, 1:], x[:, :-1, :-1])
    assert not down_right[:, 0].any() and not down_right[:, :, 0].any()  # zero-filled
    up_left, up_left_mirrored = views[0], views[1]
    np.testing.assert_array_equal(up_left[:, :-1, :-1], x[:, 1:, 1:])
    np.testing.assert_array_equal(up_left_mirrored, up_left[:, :, ::-1])


def test_tta_average_is_the_mean_over_views():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 6, 6, 1), dtype=np.uint8)
    weights = rng.random((36, 4))

    def forward(batch):  # a fixed linear "model", so each view gives different scores
        return batch.reshape(len(batch), -1).astype(float) @ weights

    tta = TestTimeAugmentation(flip=True, shift=1)
    expected = np.mean([forward(v) for v in tta.views(x)], axis=0)
    np.testing.assert_allclose(tta.average(forward, x), expected)
    two_images = 2 * x[0].size * tta.count  # the bytes of the views of two images
    np.testing.assert_allclose(tta.average(forward, x, chunk_bytes=two_images), expected)
    # The server's engines average the same way as `predict_proba`.
    np.testing.assert_allclose(Engine(forward, (6, 6, 1), tta).predict(x), expected)


def test_tta_average_calls_the_model_once_for_a_test_set():
    """Each call of Keras' predict has a cost of its own, so a 10,000-image test set goes in
    one call, and in chunks only past 16 MiB of views."""
    calls = []

    def forward(batch):
        calls.append(len(batch))
        return np.ones((len(batch), 10)) / 10

    x = np.zeros((10_000, 28, 28, 1), np.uint8)
    TestTimeAugmentation().average(forward, x)
    done = []  # what a progress bar is told after each call
    TestTimeAugmentation(flip=True, shift=1).average(forward, x, done=done.append)  # 1,188 a call
    assert calls == [10_000] + [1_188 * 18] * 8 + [496 * 18]
    assert done == [1_188] * 8 + [496]


def test_tta_settings_come_from_a_recipe():
    from convnet.models.recipe import Recipe

    assert TestTimeAugmentation.of(Recipe()) == TestTimeAugmentation(False, 0)
    assert TestTimeAugmentation.of(Recipe(flip=True, shift_tta=1)) == (
        TestTimeAugmentation(True, 1)
    )
    assert TestTimeAugmentation.of(Recipe(flip=True), enabled=False).count == 1


def test_predict_proba_over_views_with_and_without_a_progress_bar():
    class Model:  # stands in for Keras: what predict_proba asks of a model
        def predict(self, x, batch_size, verbose):
            return np.tile([0.25, 0.75], (len(x), 1))

    x = np.zeros((5, 8, 8, 1), np.uint8)
    for verbose in (0, 1, 2):
        found = predict_proba(Model(), x, tta=TestTimeAugmentation(flip=True), verbose=verbose)
        assert found.shape == (5, 2) and np.allclose(found[:, 1], 0.75)


def test_only_tensorflows_retracing_warning_is_held_back_and_only_in_the_block(caplog):
    from convnet.evaluation import retracing_unlogged

    logger = logging.getLogger("tensorflow")
    retracing = "5 out of the last 5 calls to <function f> triggered tf.function retracing."
    with retracing_unlogged():
        logger.warning(retracing)
        logger.warning("something else")
    logger.warning(retracing)
    assert [r.getMessage() for r in caplog.records] == ["something else", retracing]
    assert not logger.filters


def test_a_zero_probability_for_the_true_class_costs_minus_log_eps_not_infinity():
    probabilities = np.array([[1.0, 0.0], [0.25, 0.75]], np.float32)
    loss = TestTally.of(np.array([1, 1]), probabilities).metrics()["test_loss"]
    assert loss == pytest.approx((-np.log(np.finfo(np.float32).eps) - np.log(0.75)) / 2)
