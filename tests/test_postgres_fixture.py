"""The `postgres_url` fixture's server shares one Optuna study between processes."""

from __future__ import annotations

import subprocess
import sys

import optuna

WORKER = """
import sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name=sys.argv[2], storage=sys.argv[1])
study.optimize(lambda trial: trial.suggest_float("x", -1, 1) ** 2, n_trials=3)
"""


def test_two_processes_share_a_study(postgres_url):
    # Made here first, so the two workers don't race to create the storage's tables.
    study = optuna.create_study(study_name="shared", storage=postgres_url)
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, postgres_url, "shared"]) for _ in range(2)
    ]
    assert [worker.wait(timeout=60) for worker in workers] == [0, 0]

    trials = study.get_trials()
    assert len(trials) == 6
    assert sorted(t.number for t in trials) == list(range(6))
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
