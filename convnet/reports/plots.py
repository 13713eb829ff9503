"""Plots of a run, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from convnet.runs import write_atomic  # noqa: E402


def read_history(path: str | Path) -> dict[str, list[float]]:
    """Columns of a Keras CSVLogger file, as floats."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def learning_curves(history: dict[str, list[float]], path: str | Path) -> Path:
    """The seed's two panels: accuracy and loss per epoch, training against validation."""
    epochs = range(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
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
        ax.set_title(f"Training & validation {metric}", fontsize=13)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Writes `fig` as a PNG atomically and closes it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return write_atomic(path, buffer.getvalue())
