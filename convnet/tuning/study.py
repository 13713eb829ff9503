"""The trials one worker process runs for a study (`convnet.tuning.storage`): each a complete
convnet run folder under the tune folder's `trials/`, its epochs reported to the pruner."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import keras
import optuna

from convnet.config import TrainConfig
from convnet.data import TrainingData, fitted_to_data
from convnet.errors import ConfigError
from convnet.runs import Run
from convnet.training import tracking, trainer
from convnet.tuning.records import TRIALS_DIR, run_values
from convnet.tuning.space import Param
from convnet.tuning.storage import DONE

RUNNING = optuna.trial.TrialState.RUNNING
POLL_SECONDS = 2.0  # how often a worker waiting for the others' last trials looks again


class ReportEpochs(keras.callbacks.Callback):
    """Reports each epoch's validation metric to the trial and stops a trial the pruner gives
    up on. (optuna-integration's Keras callback is the same few lines, behind a package.)"""

    def __init__(self, trial: optuna.Trial, monitor: str):
        super().__init__()
        self.trial, self.monitor = trial, monitor

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.monitor} {value:.4f} at epoch {epoch + 1}")


@dataclasses.dataclass
class Trials:
    """What every trial of one worker shares: the settings, the data, the space."""

    config: TrainConfig
    data: TrainingData
    space: dict[str, Param]
    fixed: dict
    objectives: list[str]
    folder: Path
    tensorboard: str | None = None
    mlflow: str | None = None

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        """Trains one trial's run and returns its objectives' values."""
        params = self.fixed | {name: suggest(trial, p) for name, p in self.space.items()}
        out = self.folder / TRIALS_DIR / f"trial-{trial.number:04d}"
        trial.set_user_attr("run", str(out.relative_to(self.folder)))
        config = dataclasses.replace(
            self.config, out=str(out), overrides=self.config.overrides | params
        )
        config = fitted_to_data(config, self.data)
        callbacks = []
        if len(self.objectives) == 1 and self.objectives[0].startswith("val_"):
            callbacks.append(ReportEpochs(trial, self.objectives[0]))

        def train_with(trackers: list):
            return trainer.train(
                config, self.data, command=None, verbose=0, callbacks=[*callbacks, *trackers]
            )

        try:
            # A trial's MLflow run holds its metrics, not a model: `convnet export` makes one of
            # the best trial's run folder when it is wanted.
            tracking.tracked(out, train_with, self.tensorboard, self.mlflow, log_model=False)
        except optuna.TrialPruned:
            run = Run(out)
            run.write_json("manifest.json", run.read_json("manifest.json") | {"status": "pruned"})
            raise
        finally:  # Keras keeps every model built in its global state: trials would pile up
            keras.backend.clear_session()
        values = run_values(out, self.objectives)
        return values[0] if len(values) == 1 else tuple(values)


def suggest(trial: optuna.Trial, param: Param):
    """The trial's value of `param`, drawn by the study's sampler."""
    if param.kind == "choice":
        return trial.suggest_categorical(param.name, list(param.choices))
    if param.kind == "int":
        return trial.suggest_int(param.name, int(param.low), int(param.high), log=param.log)
    return trial.suggest_float(param.name, param.low, param.high, log=param.log)


def run_worker(
    study: optuna.Study,
    trials: Trials,
    n_trials: int,
    timeout: float | None,
    callbacks: list = (),
) -> None:
    """Runs trials until the study holds `n_trials` finished ones (complete or pruned), or
    `timeout` seconds have passed. A trial whose settings cannot train is marked failed and the
    study goes on; any other error stops this worker. `callbacks` run after each trial."""
    os.makedirs(trials.folder / TRIALS_DIR, exist_ok=True)
    target = Target(n_trials, None if timeout is None else time.monotonic() + timeout)
    if not target.room(study):
        return
    study.optimize(
        trials,
        n_trials=None,
        timeout=timeout,
        catch=(ConfigError,),
        callbacks=[target, *callbacks],
        gc_after_trial=True,
    )


@dataclasses.dataclass
class Target:
    """Stops a worker once the trials finished and those running, in every worker, make
    `n_trials`. Counting only the finished ones (Optuna's MaxTrialsCallback), each worker would
    start one more while the others' last trials run, and the study would end trials over.

    Attributes:
        n_trials: finished trials (complete or pruned) the study stops at.
        deadline: `time.monotonic()` past which this worker stops; None for none.
    """

    n_trials: int
    deadline: float | None = None

    def __call__(self, study: optuna.Study, _) -> None:
        if not self.room(study):
            study.stop()

    def room(self, study: optuna.Study) -> bool:
        """Whether another trial is needed. While the trials running elsewhere would make the
        target but have not yet, waits: one of them could fail, or its worker die."""
        while self.deadline is None or time.monotonic() < self.deadline:
            # A killed worker's trial counts as running until its heartbeat is found stale.
            optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False, states=(*DONE, RUNNING))
            done = sum(t.state in DONE for t in trials)
            if done >= self.n_trials or len(trials) < self.n_trials:
                return done < self.n_trials
            time.sleep(POLL_SECONDS)
        return False
