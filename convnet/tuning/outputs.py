"""What a tune leaves in its folder besides the trials' run folders: `trials.csv`, `best/` (the
best trial's run, complete), and `tune.html` (the search at a glance, self-contained)."""

from __future__ import annotations

import base64
import csv
import html
import io
import os
import secrets
import shutil
from pathlib import Path

import optuna
from matplotlib.figure import Figure

from convnet.files import fsync_path, replace_durably, write_atomic
from convnet.tuning import views
from convnet.tuning.plan import folder_lock

BEST_DIR = "best"
COPIES_DIR = f".{BEST_DIR}"  # the copies `best` links to (`copy_best`)


def write_trials_csv(study: optuna.Study, folder: Path, objectives: list[str]) -> Path:
    """One row per trial: number, state, the objectives' values, seconds, run folder, the trial
    it retries (after a killed worker), and each parameter."""
    trials = study.get_trials(deepcopy=False)
    params = sorted({name for t in trials for name in t.params})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["number", "state", *objectives, "seconds", "run", "retries", *params])
    for t in trials:
        values = t.values or [None] * len(objectives)
        seconds = t.duration.total_seconds() if t.duration else None
        retries = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
        row = [t.number, t.state.name.lower(), *values, seconds, t.user_attrs.get("run"), retries]
        writer.writerow(row + [t.params.get(name) for name in params])
    return write_atomic(folder / "trials.csv", out.getvalue())


def best_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The best trial, or with two objectives the Pareto front's; [] before any completes."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return []
    return study.best_trials if len(study.directions) > 1 else [study.best_trial]


def copy_best(study: optuna.Study, folder: Path) -> Path | None:
    """Copies the best trial's run folder to `folder/best/`, replacing an earlier best; None
    with two objectives (the user picks from the front) or when the best ran on another
    machine (its run folder is there).

    `best` is a symbolic link to the copy, in `folder/.best/`: a new link renamed over the old
    one replaces it in one step, so that `best` names a complete run whenever the process is
    killed. A folder cannot be renamed over a folder that holds files, and removing the old one
    first left a moment with no `best` at all. Where links cannot be made (Windows without the
    privilege), `best` is a folder replaced in two renames.
    """
    best = best_trials(study)
    if len(study.directions) > 1 or not best:
        return None
    run = {t.number: t for t in study.get_trials(deepcopy=False)}[best[0].number].user_attrs
    source = folder / run.get("run", "")
    if not (source / "model.keras").is_file():
        return None
    target, copies = folder / BEST_DIR, folder / COPIES_DIR
    with folder_lock(folder):  # another tune's process on the folder may be replacing it too
        _remove_unlinked(target, copies)
        copy = copies / f"{source.name}-{secrets.token_hex(4)}"
        staging = copies / f".{copy.name}.tmp"
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(".lock", "backup"))
        replace_durably(staging, copy)
        _point(target, copy)
        _remove_unlinked(target, copies)
    return target


def _point(link: Path, copy: Path) -> None:
    """Makes `link` name `copy`, replacing what it named in one rename where links can be
    made, in two (a folder moved aside, then `copy`) where they cannot."""
    new = link.with_name(f".{link.name}.{secrets.token_hex(4)}.link")
    try:
        os.symlink(os.path.relpath(copy, link.parent), new, target_is_directory=True)
    except OSError:  # no links here: a folder, as in tunes made before them
        if link.is_dir() and not link.is_symlink():
            os.replace(link, copy.with_name(f"{link.name}-{secrets.token_hex(4)}"))
        replace_durably(copy, link)
        return
    if link.is_dir() and not link.is_symlink():  # made as a folder, before links
        os.replace(link, copy.with_name(f"{link.name}-{secrets.token_hex(4)}"))
    os.replace(new, link)
    fsync_path(link.parent)


def _remove_unlinked(link: Path, copies: Path) -> None:
    """Removes the copies in `copies` that `link` does not name: earlier bests, and those of
    a process killed before it linked them. And links left by such a process."""
    named = Path(os.readlink(link)).name if link.is_symlink() else None
    for path in copies.iterdir() if copies.is_dir() else ():
        if path.name != named:
            shutil.rmtree(path, ignore_errors=True)
    for path in link.parent.glob(f".{link.name}.*.link"):
        path.unlink(missing_ok=True)


def write_tune_page(study: optuna.Study, folder: Path, objectives: list[str]) -> Path:
    """tune.html: the best trials' settings and values, the optimisation history, parameter
    importances, a parallel-coordinates plot and, with two objectives, the Pareto front."""
    names = {i: name for i, name in enumerate(objectives)}
    figures = [
        ("Optimisation history", views.history),
        ("Parameter importances", views.importances),
        ("Parallel coordinates", views.parallel),
    ]
    if len(objectives) > 1:
        figures.append(("Pareto front", views.pareto))
    sections = [_best_table(study, objectives)]
    for title, draw in figures:
        sections.append(f"<h2>{title}</h2>{_figure(draw, study, names)}")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>convnet tune: {html.escape(study.study_name)}</title>"
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>Study {html.escape(study.study_name)}</h1>"
        f"<p>{_counts(study)}; objectives: {', '.join(objectives)}.</p>"
        + "".join(sections)
        + "</body></html>"
    )
    return write_atomic(folder / "tune.html", page)


def _counts(study: optuna.Study) -> str:
    trials = study.get_trials(deepcopy=False)
    states = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    return f"{len(trials)} trials (" + ", ".join(f"{n} {s}" for s, n in states.items()) + ")"


def _best_table(study: optuna.Study, objectives: list[str]) -> str:
    best = best_trials(study)
    if not best:
        return "<p>No trial has completed yet.</p>"
    params = sorted({name for t in best for name in t.params})
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["trial", *objectives, "run", *params])
    rows = []
    for t in best:
        cells = [t.number, *(f"{v:.4g}" for v in t.values), t.user_attrs.get("run", "")]
        cells += [_short(t.params.get(p)) for p in params]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    title = "Best trial" if len(best) == 1 else "Pareto front"
    return f"<h2>{title}</h2><table><tr>{head}</tr>{''.join(rows)}</table>"


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _figure(draw, study: optuna.Study, names: dict[int, str]) -> str:
    """A plot as an inline PNG, or a line saying why there is none (too few trials)."""
    figure = Figure(figsize=(9, 5), layout="constrained")
    try:
        draw(study, names, figure.subplots())
    except (ValueError, RuntimeError, ZeroDivisionError) as error:
        return f"<p>Not drawn: {html.escape(str(error))}</p>"
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"<img alt='' src='data:image/png;base64,{encoded}'>"
