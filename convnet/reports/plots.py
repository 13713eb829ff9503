"""Plots of a run, drawn on `matplotlib.figure.Figure` objects of their own: never through pyplot,
so the caller's backend and open figures (a notebook's inline plots) are left as they are."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from convnet.files import write_atomic

# Above this many classes the cells are too small for their numbers to be read.
MAX_ANNOTATED_CLASSES = 20


def read_history(path: str | Path) -> dict[str, list[float]]:
    """Columns of a Keras CSVLogger file, as floats; missing values ("NA") are NaN.

    CSVLogger always adds `val_*` columns, all "NA" when there is no validation set: columns with
    no value at all are left out.
    """
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {
        key: [float("nan") if row[key] in ("NA", "") else float(row[key]) for row in rows]
        for key in (rows[0] if rows else {})
    }
    return {
        key: values for key, values in columns.items() if not all(math.isnan(v) for v in values)
    }


def learning_curves(
    history: dict[str, list[float]],
    path: str | Path,
    best_epoch: int | None = None,
    stopped_early: bool = False,
) -> Path:
    """The seed's two panels: accuracy and loss per epoch, training against validation.

    Args:
        best_epoch: the epoch whose weights the run kept, marked with a line, if not the last.
        stopped_early: whether early stopping ended training, which the line's label says.
    """
    epochs = range(1, len(history["loss"]) + 1)
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric, title in zip(axes, ("accuracy", "loss"), ("Accuracy", "Loss"), strict=True):
        ax.plot(epochs, history[metric], "o-", color="tab:blue", label=f"Training {metric}")
        if f"val_{metric}" in history:
            ax.plot(
                epochs,
                history[f"val_{metric}"],
                "s-",
                color="tab:orange",
                label=f"Validation {metric}",
            )
        if best_epoch and (stopped_early or best_epoch != len(epochs)):
            label = f"Kept: epoch {best_epoch}" + (" (stopped early)" if stopped_early else "")
            ax.axvline(best_epoch, color="tab:green", linestyle="--", label=label)
        ax.set_title(f"Training & validation {metric}", fontsize=13)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def confusion_matrix_plot(
    matrix: np.ndarray, class_names: list[str], path: str | Path, normalise: bool = False
) -> Path:
    """The test-set confusion matrix, true class down, predicted class across.

    Args:
        matrix: counts, shape (num_classes, num_classes).
        class_names: one label per row and column.
        path: where to write the PNG.
        normalise: divide each row by its total, so the diagonal shows each class's recall.
    """
    from convnet.evaluation import row_normalised

    n = len(class_names)
    side = min(max(5.0, 0.5 * n + 2.5), 16.0)  # inches; 5 keeps two small ones side by side
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.subplots()
    values = row_normalised(matrix) if normalise else matrix
    # Drawn here as scikit-learn's ConfusionMatrixDisplay draws it: importing scikit-learn's
    # metrics for it took 0.7 s of the 7.8 s of a 1-epoch training (bench.cli_latency).
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalise else None)
    fig.colorbar(image, ax=ax)
    if n <= MAX_ANNOTATED_CLASSES:
        middle = (image.norm.vmin + image.norm.vmax) / 2
        light, dark = image.cmap(0.0), image.cmap(1.0)  # the text contrasts with its cell
        for (row, column), value in np.ndenumerate(values):
            text = f"{value:.2f}" if normalise else f"{value:d}"
            colour = light if value > middle else dark
            ax.text(column, row, text, ha="center", va="center", color=colour)
    ax.set_xticks(range(n), list(class_names), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), list(class_names))
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    kind = "row-normalised" if normalise else "counts"
    ax.set_title(f"Confusion matrix ({kind})", fontsize=13)
    return save_figure(fig, path)


def reliability_diagram(bins: dict, path: str | Path) -> Path:
    """Accuracy against confidence per bin, over a histogram of how many predictions fell in each.

    Args:
        bins: the result of `convnet.evaluation.calibration`.
        path: where to write the PNG.
    """
    edges = np.asarray(bins["edges"])
    width = np.diff(edges)
    centres = edges[:-1] + width / 2
    accuracy = np.array([np.nan if a is None else a for a in bins["accuracy"]])
    confidence = np.array([np.nan if c is None else c for c in bins["confidence"]])
    fig = Figure(figsize=(6.5, 7), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    top.bar(centres, accuracy, width=width, edgecolor="black", color="tab:blue", label="Accuracy")
    gap_bottom = np.fmin(accuracy, confidence)
    top.bar(
        centres,
        np.abs(confidence - accuracy),
        bottom=gap_bottom,
        width=width,
        color="tab:red",
        alpha=0.35,
        hatch="//",
        edgecolor="tab:red",
        label="Gap to mean confidence",
    )
    top.plot([0, 1], [0, 1], "--", color="gray", label="Perfect calibration")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="Accuracy")
    top.set_title(f"Reliability diagram (ECE = {bins['ece']:.4f})", fontsize=13)
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    counts = bottom.bar(centres, bins["count"], width=width, edgecolor="black", color="tab:gray")
    bottom.bar_label(counts, labels=[str(c) if c else "" for c in bins["count"]], fontsize=9)
    bottom.set(xlabel="Confidence (probability of the predicted class)", ylabel="Predictions")
    bottom.set_ylim(0, max(bins["count"]) * 1.3 + 1)
    bottom.grid(alpha=0.3)
    return save_figure(fig, path)


def _show(ax, image: np.ndarray) -> None:
    """One uint8 HWC image on `ax`, grey for a single channel, without ticks."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def top_losses_gallery(
    images: np.ndarray, losses: list[dict], class_names: list[str], path: str | Path
) -> Path | None:
    """The most confident mistakes, each with its true class, predicted class and probability.

    Args:
        images: the test images, uint8 NHWC; `losses` index into them.
        losses: the result of `convnet.evaluation.top_losses`.
        class_names: names for the class indices in `losses`.
        path: where to write the PNG.

    Returns:
        The PNG's path, or None when there are no mistakes to show.
    """
    if not losses:
        return None
    columns = min(len(losses), 6)
    rows = -(-len(losses) // columns)
    fig = Figure(figsize=(2.1 * columns, 2.5 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(losses) :]:
        ax.axis("off")
    for ax, item in zip(axes.flat, losses, strict=False):
        _show(ax, images[item["index"]])
        ax.set_title(
            f"true: {class_names[item['true']]}\n"
            f"pred: {class_names[item['predicted']]} ({item['probability']:.2f})",
            fontsize=10,
        )
    fig.suptitle("Top losses: the most confident mistakes on the test set", fontsize=13)
    return save_figure(fig, path)


def sample_picks(labels: np.ndarray, num_classes: int, per_class: int = 8, seed: int = 0):
    """The positions of up to `per_class` randomly chosen examples of each class, class by
    class: what `sample_grid` shows, chosen from the labels alone, so that a run reads only
    those images and can let the rest of its training data go before the test pass."""
    rng = np.random.default_rng(seed)
    picks = []
    for label in range(num_classes):
        members = np.flatnonzero(labels == label)
        picks.append(rng.choice(members, min(per_class, len(members)), False))
    return np.concatenate(picks).astype(np.int64) if picks else np.zeros(0, np.int64)


def sample_grid(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    path: str | Path,
    per_class: int = 8,
) -> Path:
    """A row of training images for each class, the class named on the left: the first
    `per_class` of each class in `images` (the examples `sample_picks` chose).

    The images are tiled into one picture (one Axes, not one per image), which draws fast.
    """
    n, (height, width, channels) = len(class_names), images.shape[1:]
    gap = max(2, height // 10)  # pixels between tiles
    tiles = np.full(
        (n * (height + gap) - gap, per_class * (width + gap) - gap, channels), 255, np.uint8
    )
    for row in range(n):
        for column, i in enumerate(np.flatnonzero(labels == row)[:per_class]):
            top, left = row * (height + gap), column * (width + gap)
            tiles[top : top + height, left : left + width] = images[i]
    cell = 0.9  # inches per image
    fig = Figure(figsize=(1.6 + cell * per_class, 0.7 + cell * n), layout="constrained")
    ax = fig.subplots()
    _show(ax, tiles)
    ax.set_frame_on(False)
    ax.set_yticks([row * (height + gap) + height / 2 for row in range(n)], class_names)
    ax.tick_params(axis="y", length=0, labelsize=11)
    ax.set_title("Training data: random examples of each class", fontsize=13)
    return save_figure(fig, path)


def compare_curves(histories: dict[str, dict[str, list[float]]], path: str | Path) -> Path:
    """Several runs' learning curves overlaid: a colour per run, solid validation, dashed training.

    Args:
        histories: run name -> its `read_history` columns.
        path: where to write the PNG.
    """
    fig = Figure(figsize=(13, 5), layout="constrained")
    axes = fig.subplots(1, 2)
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (name, history) in enumerate(histories.items()):
        colour = colours[index % len(colours)]
        epochs = range(1, len(history.get("loss", [])) + 1)
        for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
            if metric in history:
                ax.plot(epochs, history[metric], "--", color=colour, alpha=0.6)
            if f"val_{metric}" in history:
                ax.plot(epochs, history[f"val_{metric}"], "o-", color=colour, label=name)
            elif metric in history:
                ax.plot([], [], "--", color=colour, label=f"{name} (training only)")
    for ax, title in zip(axes, ("Accuracy", "Loss"), strict=True):
        ax.set_title(f"{title} per epoch (solid: validation, dashed: training)", fontsize=12)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    return save_figure(fig, path)


def lr_find_plot(result: dict, path: str | Path) -> Path:
    """Smoothed training loss against learning rate (log scale), the suggested rates marked.

    Args:
        result: {"learning_rates", "losses", "suggested", "steepest", "minimum"} as returned
            by `convnet.training.lr_find.lr_range_test`.
        path: where to write the PNG.
    """
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    ax.plot(result["learning_rates"], result["losses"], color="tab:blue", label="Training loss")
    marks = (
        ("suggested", "tab:red", "Suggested"),
        ("steepest", "tab:green", "Steepest descent"),
        ("minimum", "tab:gray", "Minimum loss"),
    )
    for key, colour, label in marks:
        if result.get(key):
            ax.axvline(
                result[key],
                color=colour,
                linestyle="--",
                label=f"{label}: {result[key]:.2g}",
                zorder=3 if key == "suggested" else 2,  # on top when two marks coincide
            )
    losses = result["losses"]
    if losses and losses[0] > min(losses):  # the final blow-up would flatten the useful part
        spread = losses[0] - min(losses)
        ax.set_ylim(min(losses) - 0.1 * spread, losses[0] + 0.3 * spread)
    ax.set_xscale("log")
    ax.set_xlabel("Learning rate (log scale)")
    ax.set_ylabel("Training loss (smoothed)")
    ax.set_title("Learning-rate range test", fontsize=13)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return save_figure(fig, path)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Writes `fig` as a PNG atomically. No pyplot figure manager holds it: nothing to close."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return write_atomic(path, buffer.getvalue())
