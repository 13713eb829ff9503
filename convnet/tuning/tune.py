"""A tune: its folder, its worker processes, and what it leaves when they are done.

The folder's `tune.json` holds everything a worker needs (the config, the space, the study), so
`convnet tune --out DIR` continues a tune, and every worker process, spawned here or started on
another machine against the same storage, runs the same trials.

    python -m convnet.tuning.tune DIR INDEX    # another worker on DIR's study (as --workers)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna

from convnet import framework
from convnet.config import make_config
from convnet.data import TrainingData, load_training_data
from convnet.errors import ConfigError, ConvnetWarning, command, setting, warn
from convnet.tuning import outputs, records
from convnet.tuning.plan import PLAN_FILE, TunePlan, folder_lock
from convnet.tuning.progress import TrialLines
from convnet.tuning.storage import DONE, open_storage, open_study

# The database URL with its password, which tune.json does not hold, for spawned workers.
STORAGE_ENV = "CONVNET_TUNE_STORAGE"


@dataclasses.dataclass
class TuneResult:
    """What a tune gives back.

    Attributes:
        folder: the tune folder.
        study: the study's name.
        finished: trials complete or pruned, across every worker.
        best: the best trial, or the Pareto front's: {"trial", "values", "params", "run"} each.
        best_run: `folder/best`, a copy of the best trial's run folder (None with two objectives).
    """

    folder: Path
    study: str
    finished: int
    best: list[dict]
    best_run: Path | None


class TuneInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the tune; the message says how to continue. The CLI exits 130."""


def study_for(plan: TunePlan, storage_url: str) -> optuna.Study:
    storage = open_storage(storage_url, plan.heartbeat)
    return open_study(
        storage, plan.study, plan.config["preset"], plan.objectives, plan.pruner, plan.seed
    )


def run(
    plan: TunePlan, storage_url: str, data: TrainingData | None = None, verbose: int = 1
) -> TuneResult:
    """Runs `plan`'s worker processes (this one and `plan.workers - 1` more) to the end, this
    one on `data` if given (else it reads the data the plan names); with `verbose`, a line on
    stderr as each trial finishes (`convnet.tuning.progress`).

    Raises:
        ConfigError: another tune was started in the same folder at the same time with other
            settings, or the study's storage is damaged or not the one its trials ran in.
        TuneInterrupted: Ctrl-C; the study keeps every finished trial.
    """
    # Under the folder's lock: tunes started together on one new folder would race to create
    # its SQLite tables, and to write tune.json, each with its own plan.
    with folder_lock(plan.folder):
        plan = _settled(plan)
        study = study_for(plan, storage_url)  # checks the study before any training
        records.rebuild_lost_study(study, plan)
        plan.write()
        # Before the other workers start, so that it knows which trials finished before this.
        progress = TrialLines(study, plan) if verbose else contextlib.nullcontext()
        records.fail_lost_trials(study, plan.folder)  # after: their lines say so
    others = [_spawn(plan.folder, index, storage_url) for index in range(1, plan.workers)]
    try:
        with progress:
            _work(plan, study, data)
            for index, process in enumerate(others, 1):
                if process.wait():
                    warn(
                        f"worker {index} of {plan.folder} exited with code "
                        f"{process.returncode}; its running trial is run again by the next "
                        "tune on the study.",
                        ConvnetWarning,
                    )
    except KeyboardInterrupt:
        for process in others:
            process.send_signal(signal.SIGINT)
        for process in others:
            process.wait()
        finished = _summarize(plan, study).finished
        raise TuneInterrupted(
            f"interrupted with {finished} of {plan.trials} trials finished; continue with: "
            f"{command('tune', out=plan.folder)}"
        ) from None
    finally:  # this worker failed: the others stop too
        for process in others:
            if process.poll() is None:
                process.terminate()
                process.wait()
    return _summarize(plan, study)


def _settled(plan: TunePlan) -> TunePlan:
    """`plan`, once sure that a tune.json written meanwhile by another process searches alike.

    Raises:
        ConfigError: it searches otherwise.
    """
    if not (plan.folder / PLAN_FILE).is_file():
        return plan
    if not TunePlan.read(plan.folder).searches_as(plan):
        raise ConfigError(
            f"{plan.folder}: another tune was started there at the same time with other "
            f"settings; choose another {setting('out')} for this one, or continue that tune with: "
            f"{command('tune', out=plan.folder)}"
        )
    return plan


def _work(plan: TunePlan, study: optuna.Study, data: TrainingData | None = None) -> None:
    """This process's trials, on the data and backend the plan's config names."""
    config = make_config(plan.config, str(plan.folder / PLAN_FILE))
    data = data or load_training_data(config)
    config = dataclasses.replace(config, backend=framework.load(config.backend, config.devices))
    from convnet.tuning.study import Trials, run_worker  # Keras, now that its backend is set

    trials = Trials(config, data, plan.space(), plan.fixed, plan.objectives, plan.folder)
    trials = dataclasses.replace(trials, tensorboard=plan.tensorboard, mlflow=plan.mlflow)
    callbacks = []
    if plan.writes_outputs:  # one process writes it, the others' trials included
        callbacks.append(
            lambda study, _: outputs.write_trials_csv(study, plan.folder, plan.objectives)
        )
    run_worker(study, trials, plan.trials, plan.time_budget, callbacks)


def _spawn(folder: Path, index: int, storage_url: str) -> subprocess.Popen:
    env = os.environ | {STORAGE_ENV: storage_url}
    command = [sys.executable, "-m", "convnet.tuning.tune", str(folder), str(index)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)


def _summarize(plan: TunePlan, study: optuna.Study) -> TuneResult:
    """Writes trials.csv, best/ and tune.html from the study as it stands."""
    records.fail_lost_trials(study, plan.folder)  # a local worker killed during this tune
    outputs.write_trials_csv(study, plan.folder, plan.objectives)
    best_run = outputs.copy_best(study, plan.folder)
    outputs.write_tune_page(study, plan.folder, plan.objectives)
    # Each from the study's list of trials: the best trial Optuna returns from a shared database
    # has been seen without its user attributes, the run folder among them.
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    best = [
        {
            "trial": t.number,
            "values": t.values,
            "params": t.params,
            "run": trials.get(t.number, t).user_attrs.get("run"),
        }
        for t in outputs.best_trials(study)
    ]
    finished = len(study.get_trials(deepcopy=False, states=DONE))
    return TuneResult(plan.folder, plan.study, finished, best, best_run)


def _worker_main(folder: str, index: str) -> int:
    """A spawned worker: the plan in `folder` (its sampler seeded by each trial's number, so
    that it draws other settings than the other workers)."""
    framework.quiet(True)
    plan = TunePlan.read(Path(folder))
    url = os.environ.get(STORAGE_ENV) or plan.storage_url()
    try:
        _work(dataclasses.replace(plan, writes_outputs=False), study_for(plan, url))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(*sys.argv[1:3]))
