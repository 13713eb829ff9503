"""A line on stderr for each trial of a tune that finishes, whichever worker process or machine ran
it: the tune's main process reads the study's storage, which every worker writes to, every few
seconds (a worker's own stderr is not the caller's in a notebook). For example:

  trial 4 (5/40): val_accuracy 0.9132 (best 0.9170, trial 3), 41 s, pruned at epoch 2; 9 min left
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time

import optuna

from convnet.tuning.plan import TunePlan
from convnet.tuning.space import OBJECTIVES
from convnet.tuning.storage import DONE

FINISHED = (*DONE, optuna.trial.TrialState.FAIL)
# Trials take tens of seconds and a read of the storage milliseconds: a line is at most this late.
POLL_SECONDS = 2.0


class TrialLines:
    """Prints each trial of `study` that finishes while it watches, in the order they finish: a
    context manager that watches from a thread of its own and, on a normal exit, prints the last.

    Args:
        study: the tune's study.
        plan: the tune's plan: its objectives, --trials target, local workers and time budget.
    """

    def __init__(self, study: optuna.Study, plan: TunePlan):
        self.study, self.plan = study, plan
        self.started = time.monotonic()
        # Trials finished by an earlier tune on the study were reported then.
        self.seen = {t.number for t in study.get_trials(deepcopy=False, states=FINISHED)}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="tune-progress", daemon=True)

    def __enter__(self) -> TrialLines:
        self._thread.start()
        return self

    def __exit__(self, error_type, *_) -> None:
        self._stop.set()
        self._thread.join()
        if error_type is None:
            self.report()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            # A busy database is read again next time.
            with contextlib.suppress(optuna.exceptions.StorageInternalError):
                self.report()

    def report(self) -> None:
        for line in self.lines(self.study.get_trials(deepcopy=False)):
            print(line, file=sys.stderr, flush=True)

    def lines(self, trials: list[optuna.trial.FrozenTrial]) -> list[str]:
        """The lines of the trials in `trials` finished since the last call, oldest first."""
        finished = [t for t in trials if t.state in FINISHED and t.datetime_complete]
        finished.sort(key=lambda t: t.datetime_complete)
        lines = []
        for index, trial in enumerate(finished):
            if trial.number not in self.seen:
                self.seen.add(trial.number)
                lines.append(self._line(trial, finished[: index + 1], trials))
        return lines

    def _line(self, trial, before: list, trials: list) -> str:
        """`trial`'s line, the best and the time left as they were when it finished (`before`,
        the finished trials up to it)."""
        if trial.state == optuna.trial.TrialState.FAIL:
            outcome = _failure(trial, trials)
        else:
            outcome = _outcome(trial, before, self.plan.objectives)
        # The trial's number (its folder's, trials/trial-0004), then the trials done of the
        # target: with several workers trials finish out of order, and failed ones do not count.
        done = sum(t.state in DONE for t in before)
        line = f"trial {trial.number} ({done}/{self.plan.trials}): {outcome}"
        if trial.duration:
            line += f", {_seconds(trial.duration.total_seconds())}"
        if trial.state == optuna.trial.TrialState.PRUNED:
            epoch = trial.last_step
            line += ", pruned" + ("" if epoch is None else f" at epoch {epoch + 1}")
        return line + self._left(before)

    def _left(self, before: list) -> str:
        """'; about N min left': the mean finished trial's time for each trial to go, across the
        local workers, at most the time budget left."""
        done = [t for t in before if t.state in DONE]
        seconds = [t.duration.total_seconds() for t in done if t.duration]
        remaining = self.plan.trials - len(done)
        if remaining <= 0 or not seconds:
            return ""
        left = sum(seconds) / len(seconds) * remaining / self.plan.workers
        if self.plan.time_budget:
            left = min(left, self.plan.time_budget - (time.monotonic() - self.started))
        return f"; {_minutes(left)} left"


def _outcome(trial, before: list, objectives: list[str]) -> str:
    """Its values, and the best so far (one objective) or whether it is on the Pareto front."""
    if trial.values is None:  # pruned before any epoch's report
        return "no value yet"
    values = ", ".join(f"{o} {_value(o, v)}" for o, v in zip(objectives, trial.values, strict=True))
    complete = [t for t in before if t.state == optuna.trial.TrialState.COMPLETE]
    if len(objectives) > 1:
        front = not any(_dominates(t, trial, objectives) for t in complete)
        return values + (" (on the Pareto front)" if front else "")
    if not complete:
        return values
    pick = max if OBJECTIVES[objectives[0]] == "maximize" else min
    best = pick(complete, key=lambda t: t.values[0])
    return f"{values} (best {_value(objectives[0], best.values[0])}, trial {best.number})"


def _dominates(a, b, objectives: list[str]) -> bool:
    """Whether trial `a` is at least as good as `b` on every objective and better on one."""
    signs = [1 if OBJECTIVES[o] == "maximize" else -1 for o in objectives]
    pairs = [(s * x, s * y) for s, x, y in zip(signs, a.values, b.values, strict=True)]
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


def _failure(trial, trials: list) -> str:
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history
    again = [t.number for t in trials if retry(t) and retry(t)[-1] == trial.number]
    if again:  # the heartbeat found its worker gone
        return f"failed (its worker stopped; run again as trial {again[0]})"
    return "failed"


def _value(objective: str, value: float) -> str:
    if objective == "parameters":
        return f"{value:,.0f}"
    if objective == "train_seconds":
        return f"{value:.1f} s"
    return f"{value:.4f}"


def _seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 100 else f"{seconds / 60:.1f} min"


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return "less than a minute"
    if seconds < 90 * 60:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"
