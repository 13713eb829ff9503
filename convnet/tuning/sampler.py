"""The sampler of a tune's study: Optuna's TPE, seeded afresh for each trial from the tune's seed
and the trial's number.

One TPESampler seeded once per process would draw the same settings in every process that starts
with that seed: a continued tune (a new process) repeats the first trials, and two tunes on one
study started with the same seed run the same trials side by side. Seeded by the trial's number,
each trial draws its own settings, and the same seed still gives the same search.
"""

from __future__ import annotations

import numpy as np
import optuna


class TrialSeeded(optuna.samplers.BaseSampler):
    """TPE whose random state for trial N is set from (`seed`, N), whichever process runs it.

    Args:
        seed: the tune's seed; None for a random search that no run repeats.
    """

    def __init__(self, seed: int | None):
        self.seed = seed
        self._tpe = optuna.samplers.TPESampler(seed=seed)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.seed is not None:
            # A new sampler rather than its random state reseeded: TPESampler keeps that state
            # in private attributes. It holds nothing else between trials.
            state = np.random.SeedSequence([self.seed, trial.number]).generate_state(1)[0]
            self._tpe = optuna.samplers.TPESampler(seed=int(state))
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()
