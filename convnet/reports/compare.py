"""The page that compares runs: their learning curves overlaid, their final metrics side by side.

Built from the runs' files alone (history.csv, metrics.json, the manifest): no framework is
imported, so `convnet compare` answers in about a second.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from convnet.errors import DataMismatchWarning, RunError, warn
from convnet.files import write_atomic
from convnet.reports import html, plots
from convnet.runs import Run


def write_compare(runs: list[str | Path], out: str | Path = "compare.html") -> Path:
    """One page overlaying several runs' learning curves, with their final metrics and timings.

    Args:
        runs: run folders, at least one.
        out: the HTML file to write (defaults to `compare.html`).

    Returns:
        The path of the page.

    Raises:
        RunError: no runs given, or one is not a run folder.
    """
    if not runs:
        raise RunError("compare needs at least one run folder.")
    folders = [Run(path) for path in runs]
    labels = _labels([run.path for run in folders])
    histories = {
        label: plots.read_history(run.path / "history.csv")
        for label, run in zip(labels, folders, strict=True)
        if (run.path / "history.csv").is_file()
    }
    with tempfile.TemporaryDirectory() as tmp:
        curves = html.image(plots.compare_curves(histories, Path(tmp) / "c.png"), "Curves")
    differences = data_differences(runs)
    for line in differences:
        warn(line, DataMismatchWarning)
    sections = [
        ("curves", "Learning curves", curves),
        (
            "metrics",
            "Final metrics and timings",
            "".join(map(html.warning, differences)) + _compare_table(folders, labels, histories),
        ),
    ]
    title = f"Comparison of {len(folders)} runs"
    page = html.page(title, ", ".join(str(run.path) for run in folders), sections)
    return write_atomic(out, page)


def data_differences(runs: list[str | Path]) -> list[str]:
    """One line for each of the training and test data that is not the same in all `runs`.

    Data is the same when its SHA-256 (from the run's manifest; the images and labels as read,
    so an IDX file and the CSV made from it agree) and, for training data, the `limit` on
    examples match. Empty when every run saw the same data, so their metrics can be compared.
    `write_compare` also issues each line as a `DataMismatchWarning`.
    """
    folders = [Run(path) for path in runs]
    labels = _labels([run.path for run in folders])
    data = [run.read_json("manifest.json").get("data", {}) for run in folders]
    limits = [run.config().limit for run in folders]
    lines = []
    for part, verb in (("train", "trained"), ("test", "tested")):
        groups: dict[tuple, list[str]] = {}  # (sha256, source without one, limit): runs
        first_source: dict[tuple, str | None] = {}
        for label, used, limit in zip(labels, data, limits, strict=True):
            source = used.get(part, {})
            sha = source.get("sha256")
            key = (sha, None if sha else source.get("source"), limit if part == "train" else None)
            groups.setdefault(key, []).append(label)
            first_source.setdefault(key, source.get("source"))
        if len(groups) > 1:
            uses = "; ".join(
                f"{', '.join(names)} on {Path(first_source[key] or '?').name}"
                + (f" (sha256 {sha[:12]})" if sha else "")
                + (f", first {limit} examples" if limit else "")
                for key, names in groups.items()
                for sha, _, limit in [key]
            )
            lines.append(f"The runs were not {verb} on the same data: {uses}.")
    return lines


def _labels(paths: list[Path]) -> list[str]:
    """Folder names, or whole paths where two runs share a name."""
    names = [path.name for path in paths]
    return [str(p) if names.count(p.name) > 1 else p.name for p in paths]


COMPARED = (  # (metrics.json key or history column, heading, higher is better)
    ("test_accuracy", "Test accuracy", True),
    ("test_balanced_accuracy", "Balanced accuracy", True),
    ("test_loss", "Test loss", False),
    ("test_macro_f1", "Macro F1", True),
    ("test_ece", "ECE", False),
    ("val_accuracy", "Final val. accuracy", True),
    ("fit_seconds", "Fit, s", False),
    ("wall_seconds", "Wall, s", False),
)


def _compare_table(folders: list[Run], labels: list[str], histories: dict) -> str:
    values = []
    for label, run in zip(labels, folders, strict=True):
        metrics = run.read_json("metrics.json")
        last = {k: v[-1] for k, v in histories.get(label, {}).items() if v}
        values.append({key: metrics.get(key, last.get(key)) for key, _, _ in COMPARED})
    rows = []
    for label, run, found in zip(labels, folders, values, strict=True):
        row = [label, run.config().preset, len(histories.get(label, {}).get("loss", []))]
        for key, _, higher in COMPARED:
            column = [v[key] for v in values if v[key] is not None]
            if found[key] is None:
                row.append("n/a")
                continue
            text = f"{found[key]:.2f}" if key.endswith("seconds") else f"{found[key]:.4f}"
            top = max(column) if higher else min(column)
            differ = len(set(column)) > 1
            row.append(html.best(text) if differ and found[key] == top else text)
        rows.append(row)
    headers = ["Run", "Preset", "Epochs"] + [heading for _, heading, _ in COMPARED]
    note = '<p class="note">The best value of each column is in green.</p>'
    return note + html.table(headers, rows, set(range(2, len(headers))))
