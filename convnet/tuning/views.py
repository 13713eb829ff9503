"""tune.html's plots, each drawn on an Axes of a `matplotlib.figure.Figure` that the caller made.

Not Optuna's matplotlib views: they draw through pyplot on the caller's backend, set the ggplot
style sheet for the whole process, and the importances view fails on a backend without a
renderer (svg, pdf). Each function raises ValueError when the study has too few trials for it.
"""

from __future__ import annotations

import itertools

import matplotlib
import numpy as np
import optuna
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.ticker import MaxNLocator

MAXIMIZE = optuna.study.StudyDirection.MAXIMIZE


def history(study: optuna.Study, names: dict[int, str], ax: Axes) -> None:
    """The first objective of each completed trial, and the best so far, by trial number."""
    trials = _complete(study, 1)
    values = [t.values[0] for t in trials]
    best = itertools.accumulate(values, max if study.directions[0] == MAXIMIZE else min)
    numbers = [t.number for t in trials]
    ax.plot(numbers, values, "o", color="tab:blue", label=names[0])
    ax.step(numbers, list(best), where="post", color="tab:red", label="Best so far")
    ax.set(xlabel="Trial", ylabel=names[0])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()


def importances(study: optuna.Study, names: dict[int, str], ax: Axes) -> None:
    """How much each parameter decides whether a trial is among the best (Optuna's default
    evaluator, PED-ANOVA; with two objectives, the best are the Pareto front's region)."""
    _complete(study, 2)
    # No `target`: with one, PED-ANOVA takes low values as the good ones, whatever the direction.
    found = optuna.importance.get_param_importances(study)
    params = list(found)[::-1]  # the most important at the top
    bars = ax.barh(params, [found[p] for p in params], color="tab:blue")
    ax.bar_label(bars, fmt="%.2f", padding=3)
    goal = names[0] if len(names) == 1 else "the Pareto front"
    ax.set(xlabel=f"Importance for {goal}", xlim=(0, 1.1))
    ax.grid(alpha=0.3, axis="x")


def parallel(study: optuna.Study, names: dict[int, str], ax: Axes) -> None:
    """One line per completed trial across an axis for the first objective and one for each
    parameter, each axis spanning its values' range, coloured by the objective."""
    trials = _complete(study, 2)
    params = sorted(set.intersection(*(set(t.params) for t in trials)))
    values = [t.values[0] for t in trials]
    columns = [_column(values, False)]
    columns += [_column([t.params[p] for t in trials], _log(trials[0], p)) for p in params]
    norm = Normalize(min(values), max(values))
    colours = matplotlib.colormaps["viridis"]
    rows = np.array([positions for positions, _ in columns]).T
    for row, value in zip(rows, values, strict=True):
        ax.plot(range(len(columns)), row, color=colours(norm(value)), alpha=0.8)
    for x, (_, ticks) in enumerate(columns):
        ax.axvline(x, color="gray", linewidth=1)
        for y, label in ticks:
            ax.annotate(label, (x, y), xytext=(3, 0), textcoords="offset points", fontsize=8)
    labels = [names[0], *(p + (" (log)" if _log(trials[0], p) else "") for p in params)]
    ax.set_xticks(range(len(columns)), labels, rotation=15, ha="right")
    ax.set(yticks=[], ylim=(-0.05, 1.05))
    ax.spines[:].set_visible(False)
    ax.figure.colorbar(ScalarMappable(norm, colours), ax=ax, label=names[0])


def pareto(study: optuna.Study, names: dict[int, str], ax: Axes) -> None:
    """The two objectives of each completed trial, the Pareto front's trials numbered."""
    trials = _complete(study, 1)
    front = {t.number for t in study.best_trials}
    for on_front, colour, label in (
        (False, "tab:gray", "Trial"),
        (True, "tab:red", "Pareto front"),
    ):
        chosen = [t for t in trials if (t.number in front) == on_front]
        if chosen:
            ax.scatter(*zip(*(t.values for t in chosen), strict=True), color=colour, label=label)
    for t in trials:
        if t.number in front:
            ax.annotate(str(t.number), t.values, xytext=(4, 4), textcoords="offset points")
    ax.set(xlabel=names[0], ylabel=names[1])
    ax.grid(alpha=0.3)
    ax.legend()


def _complete(study: optuna.Study, count: int) -> list[optuna.trial.FrozenTrial]:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < count:
        raise ValueError(f"needs {count} completed trials, {len(complete)} so far.")
    return complete


def _log(trial: optuna.trial.FrozenTrial, param: str) -> bool:
    return getattr(trial.distributions[param], "log", False)


def _column(values: list, log: bool) -> tuple[list[float], list[tuple[float, str]]]:
    """Positions from 0 to 1 on a parallel axis, and its tick labels: each choice of a
    categorical parameter, else the lowest and highest value (on a log scale if `log`)."""
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        choices = sorted({str(v) for v in values})
        spread = max(len(choices) - 1, 1)
        positions = [choices.index(str(v)) / spread for v in values]
        return positions, [(i / spread, choice) for i, choice in enumerate(choices)]
    scaled = np.log10(values) if log else np.asarray(values, float)
    low, high = scaled.min(), scaled.max()
    positions = (scaled - low) / (high - low) if high > low else np.full(len(values), 0.5)
    ticks = [(0.0, f"{min(values):.3g}"), (1.0, f"{max(values):.3g}")] if high > low else []
    return list(positions), ticks or [(0.5, f"{values[0]:.3g}")]
