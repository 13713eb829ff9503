"""A run's report (`RUN/report.html` and `RUN/plots/`): its curves, scores and mistakes."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from convnet.data.dataset import Dataset
from convnet.evaluation import TestTally, TestTimeAugmentation, predicted_tally
from convnet.files import write_atomic
from convnet.models.factory import load_model
from convnet.models.recipe import Recipe
from convnet.reports import html, plots
from convnet.runs import Run


def write_report(
    run: str | Path,
    model=None,
    samples: Dataset | None = None,
    test: Dataset | None = None,
    tally: TestTally | None = None,
) -> Path:
    """Writes a run's plots into `RUN/plots/` and its self-contained `RUN/report.html`.

    The per-class metrics, confusion matrix and calibration error are also merged into the
    run's `metrics.json`.

    Args:
        run: the run folder.
        model: the trained model; read from the run when None.
        samples: the training examples the sample grid shows (`training_samples`); read as
            the run's config says when None.
        test: the test data; read as the run's config says when None.
        tally: the tally of the model's predictions on `test`, if already made.

    Returns:
        The path of `report.html`.

    Raises:
        RunError: the run folder is incomplete. DataError: its data cannot be read.
    """
    started = time.perf_counter()
    run = Run(run)
    config = run.config()
    if model is None:
        model = load_model(run.model_file)
    if samples is None or test is None:
        train, test = run.load_data()
        samples = training_samples(train)
    if tally is None:
        tally = predicted_tally(model, test, tta=TestTimeAugmentation.of(config.recipe()))
    found = tally.interpretation(list(test.class_names))
    figures = _draw(run.path / "plots", found, samples, test)
    summary = {
        "test_macro_f1": found["per_class"][-2]["f1"],
        "test_ece": found["calibration"]["ece"],
    }
    metrics = run.read_json("metrics.json") | summary
    metrics |= {k: found[k] for k in ("per_class", "confusion_matrix", "most_confused")}
    run.write_json("metrics.json", metrics)
    sections = _report_sections(run, found, figures, metrics, time.perf_counter() - started)
    manifest = run.read_json("manifest.json")
    subtitle = (
        f"preset {config.preset} · {len(test)} test examples from {test.source} · "
        f"started {manifest.get('started', 'unknown')}"
    )
    # Above the headline numbers: an under-trained model's accuracy says little of the preset.
    cards = _cards(metrics, config.recipe())
    if metrics.get("under_training"):
        cards = html.warning(f"Under-trained: {metrics['under_training']}") + cards
    page = html.page(f"Run report: {run.path.name}", subtitle, sections, cards)
    return write_atomic(run.path / "report.html", page)


def training_samples(train: Dataset) -> Dataset:
    """The training examples that the report's sample grid shows (`plots.sample_picks`), read
    into memory: a run keeps these, not its training set, until the report is written."""
    picked = train.take(plots.sample_picks(train.y, train.num_classes))
    return dataclasses.replace(picked, x=np.asarray(picked.x))


def _draw(folder: Path, found: dict, samples: Dataset, test: Dataset) -> dict[str, Path | None]:
    """Every plot of the report, written into `folder`."""
    names = list(test.class_names)
    matrix = np.asarray(found["confusion_matrix"])
    history = folder.parent / "history.csv"
    metrics = Run(folder.parent).read_json("metrics.json")
    return {
        "curves": plots.learning_curves(
            plots.read_history(history),
            folder / "learning_curves.png",
            metrics.get("best_epoch"),
            "stopped_early_at" in metrics,
        )
        if history.is_file()
        else None,
        "counts": plots.confusion_matrix_plot(matrix, names, folder / "confusion_matrix.png"),
        "normalised": plots.confusion_matrix_plot(
            matrix, names, folder / "confusion_matrix_normalised.png", normalise=True
        ),
        "losses": plots.top_losses_gallery(
            test.x, found["top_losses"], names, folder / "top_losses.png"
        ),
        "reliability": plots.reliability_diagram(found["calibration"], folder / "reliability.png"),
        "samples": plots.sample_grid(
            samples.x, samples.y, list(samples.class_names), folder / "samples.png"
        ),
    }


def _cards(metrics: dict, recipe: Recipe) -> str:
    def number(key: str, digits: int = 4) -> str:
        return f"{metrics[key]:.{digits}f}" if key in metrics else "n/a"

    return html.cards(
        [
            ("Test accuracy", number("test_accuracy")),
            ("Balanced accuracy", number("test_balanced_accuracy")),
            ("Test loss", number("test_loss")),
            ("Macro F1", number("test_macro_f1")),
            ("Calibration error (ECE)", number("test_ece")),
            ("Epochs", _epochs(metrics, recipe)),
            ("Training time", f"{number('fit_seconds', 1)} s"),
        ]
    )


def _epochs(metrics: dict, recipe: Recipe) -> str:
    """Epochs trained; with a time budget, also the cap and the budget."""
    trained = metrics.get("epochs", recipe.epochs)  # older runs: the recipe's
    if "stopped_early_at" in metrics:
        return (
            f"{trained} of {recipe.epochs}: stopped early (patience {recipe.patience}), "
            f"kept epoch {metrics.get('best_epoch')}"
        )
    if recipe.time_budget:
        return f"{trained} of {recipe.epochs} in {recipe.time_budget:.0f} s"
    return str(trained)


def _report_sections(
    run: Run, found: dict, figures: dict, metrics: dict, report_seconds: float
) -> list[tuple[str, str, str]]:
    """(id, heading, HTML) of each section of a run's report."""
    curves = (
        html.image(figures["curves"], "Accuracy and loss per epoch")
        if figures["curves"]
        else '<p class="note">No history.csv in this run.</p>'
    )
    losses = (
        html.image(figures["losses"], "The most confident mistakes")
        if figures["losses"]
        else '<p class="note">No mistakes on the test set.</p>'
    )
    return [
        ("curves", "Learning curves", curves),
        (
            "confusion",
            "Confusion matrix",
            '<p class="note">Rows are the true classes, columns the predictions. The second '
            "matrix divides each row by its total, so its diagonal is each class's recall.</p>"
            '<div class="figures">'
            + html.image(figures["counts"], "Confusion matrix, counts")
            + html.image(figures["normalised"], "Confusion matrix, row-normalised")
            + "</div>",
        ),
        ("per-class", "Per-class metrics", _per_class_tables(found)),
        (
            "top-losses",
            "Top losses",
            '<p class="note">The test images the model got wrong while most sure of itself, '
            "most confident first. Each shows the true class, the prediction and the probability "
            "the model gave the prediction.</p>" + losses,
        ),
        (
            "calibration",
            "Calibration",
            '<p class="note">How far confidence matches accuracy. Bars below the diagonal mean '
            "over-confidence. The expected calibration error (ECE) is the mean gap, weighted by "
            f"how many predictions fall in each bin: {found['calibration']['ece']:.4f}."
            f"{_temperature_note(metrics)}</p>"
            + html.image(figures["reliability"], "Reliability diagram"),
        ),
        ("samples", "Training data", html.image(figures["samples"], "Training examples per class")),
        ("run", "Run details", _run_details(run, metrics, report_seconds)),
    ]


def _temperature_note(metrics: dict) -> str:
    if "temperature" not in metrics:
        return ""
    return (
        " After training, the softmax layer's logits were divided by a temperature of "
        f"{metrics['temperature']:.3f}, fitted on the validation split (temperature scaling)."
    )


def _per_class_tables(found: dict) -> str:
    rows = [
        [
            row["class"],
            row["precision"],
            row["recall"],
            html.bar(row["f1"], f"{row['f1']:.4f}"),
            row["support"],
        ]
        for row in found["per_class"]
    ]
    scores = html.table(
        ["Class", "Precision", "Recall", "F1", "Support"], rows, {1, 2, 3, 4}, summary_rows=2
    )
    pairs = [
        [pair["true"], pair["predicted"], pair["count"], f"{pair['share']:.1%}"]
        for pair in found["most_confused"]
    ]
    confused = (
        html.table(["True class", "Predicted as", "Count", "Share of class"], pairs, {2, 3})
        if pairs
        else '<p class="note">No class was ever mistaken for another.</p>'
    )
    return (
        f'<div class="columns"><div><h3>Precision, recall and F1</h3>{scores}</div>'
        f"<div><h3>Most-confused pairs</h3>{confused}</div></div>"
    )


def _run_details(run: Run, metrics: dict, report_seconds: float) -> str:
    history = run.path / "history.csv"
    epochs = plots.read_history(history).get("epoch_seconds", []) if history.is_file() else []
    timings = {
        "Training (fit), s": metrics.get("fit_seconds"),
        "Whole run (data, fit, evaluation), s": metrics.get("wall_seconds"),
        "Epochs": len(epochs) or None,
        "First epoch (includes graph tracing), s": epochs[0] if epochs else None,
        "Mean of later epochs, s": float(np.mean(epochs[1:])) if len(epochs) > 1 else None,
        "This report, s": report_seconds,
    }
    rows = [[k, f"{v:.2f}" if isinstance(v, float) else v] for k, v in timings.items() if v]
    manifest = run.read_json("manifest.json")
    timing_table = html.table(["Timing", "Value"], rows, {1})
    return (
        f'<div class="columns"><div><h3>Timings</h3>{timing_table}</div>'
        f"<div><h3>Config</h3>{html.key_values(run.config().resolved())}</div></div>"
        f"<h3>Manifest</h3><details open><summary>manifest.json</summary>"
        f"{html.json_block(manifest)}</details>"
    )
