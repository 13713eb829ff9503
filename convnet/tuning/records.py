"""What a tune's trials left in their run folders (`trials/trial-NNNN`), read back: a finished
trial's objective values, and the study itself when its database lost it. And the study brought
back in line with those folders: a trial whose worker was killed here is failed at once.
No Keras: all of it runs before a worker imports a framework.
"""

from __future__ import annotations

import contextlib
import datetime
import re
from pathlib import Path

import optuna

from convnet.errors import ConfigError, ConvnetError, ConvnetWarning, setting, warn
from convnet.reports.plots import read_history
from convnet.runs import Run
from convnet.tuning.plan import STORAGE_FILE, TunePlan, hide_password
from convnet.tuning.space import Param

TRIALS_DIR = "trials"
TRIAL_NAME = re.compile(r"trial-(\d{4,})")  # trials/trial-0004: the study's trial number 4
FAIL = optuna.trial.TrialState.FAIL
FAILED = dict(state=FAIL, values=None, params={}, distributions={}, intermediate_values={})


def run_values(run_dir: Path, objectives: list[str]) -> list[float]:
    """The objectives' values of a finished run: validation metrics at the epoch whose weights
    it kept (its best with restore_best, else its last), training seconds, parameters."""
    metrics = Run(run_dir).read_json("metrics.json")
    history = read_history(run_dir / "history.csv")
    kept = metrics.get("best_epoch") or metrics["epochs"]
    found = {
        "train_seconds": metrics["fit_seconds"],
        "parameters": metrics["parameters"],
    }
    for name in ("val_accuracy", "val_loss"):
        if history.get(name):
            found[name] = history[name][kept - 1]
    missing = [o for o in objectives if o not in found]
    if missing:
        raise ConvnetError(f"{run_dir}: no {missing[0]} (is val_split 0?).")
    return [float(found[o]) for o in objectives]


def fail_lost_trials(study: optuna.Study, folder: Path) -> None:
    """Fails each running trial whose run folder here records a process that is gone (killed on
    this machine), and queues it again, as the heartbeat would two beats later; and marks such
    trials' run folders "interrupted", which their manifests still said "running"."""
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(3)  # as `open_storage`'s
    states = (optuna.trial.TrialState.RUNNING, FAIL)
    for trial in study.get_trials(states=states):
        if "run" not in trial.user_attrs:  # not yet begun training
            continue
        try:
            run = Run(folder / trial.user_attrs["run"])
            lost = run.read_json("manifest.json").get("status") == "running"
            lost = lost and run.status() == "interrupted"
        except ConvnetError:  # a run another process is beginning, or a damaged one: not lost
            continue
        if not lost:
            continue
        if trial.state != FAIL:
            try:
                study.tell(trial.number, state=FAIL)
            except (ValueError, RuntimeError):  # another process failed it first, and queued it
                continue
            retry(study, trial)
        run.write_json("manifest.json", run.read_json("manifest.json") | {"status": "interrupted"})


def rebuild_lost_study(study: optuna.Study, plan: TunePlan) -> None:
    """Puts the trials of `plan.folder/trials` back into `study` when its storage holds none of
    them (its database emptied, deleted, or moved aside when damaged): each trial's settings,
    values, epochs and times as its run folder records them.

    Raises:
        ConfigError: the study holds other trials, but not these: a different database.
    """
    folders = trial_folders(plan.folder)
    numbers = {t.number for t in study.get_trials(deepcopy=False)}
    lost = sorted(set(folders) - numbers)
    if not lost:
        return
    where = plan.folder / STORAGE_FILE if plan.storage is None else hide_password(plan.storage)
    if numbers:  # its next trials' numbers would be those of folders here
        raise ConfigError(
            f"{where}: study {plan.study!r} has no trial {lost[0]} ({folders[lost[0]]}), so it "
            "is not the study these trials ran in; move the "
            "database aside and run the command again to rebuild the study from the trial "
            f"folders, or choose another {setting('out')} to start afresh."
        )
    space = plan.space()
    for number in range(max(folders) + 1):  # a number without a folder: failed, to keep the rest
        record = _record(folders.get(number), plan.folder, space, plan.objectives)
        try:
            study.add_trial(optuna.trial.FrozenTrial(number=number, **record))
        except ValueError:  # settings outside the space, values that are not numbers
            record |= FAILED
            study.add_trial(optuna.trial.FrozenTrial(number=number, **record))
    warn(
        f"{where}: held none of the {len(folders)} trials in {plan.folder / TRIALS_DIR}; "
        "rebuilt the study from their run folders.",
        ConvnetWarning,
    )


def trial_folders(folder: Path) -> dict[int, Path]:
    """The trials' run folders in tune folder `folder`, by trial number."""
    found = {}
    if (folder / TRIALS_DIR).is_dir():
        for path in (folder / TRIALS_DIR).iterdir():
            if (match := TRIAL_NAME.fullmatch(path.name)) and path.is_dir():
                found[int(match[1])] = path
    return found


def _record(
    path: Path | None, folder: Path, space: dict[str, Param], objectives: list[str]
) -> dict:
    """A trial's FrozenTrial arguments as its run folder `path` records them; failed, without
    settings, when there is none or it cannot be read."""
    now = datetime.datetime.now()
    record = FAILED | dict(datetime_start=now, datetime_complete=now, user_attrs={})
    record |= dict(trial_id=0, value=None, system_attrs={})  # the storage numbers it
    if path is not None:
        record["user_attrs"] = {"run": str(path.relative_to(folder))}
        # A run folder that does not read (damaged, or killed before it recorded its start) is
        # a failed trial; the study goes on without it.
        with contextlib.suppress(ConvnetError, OSError, KeyError, ValueError, IndexError):
            record |= _recorded(Run(path), space, objectives)
    return record


def _recorded(run: Run, space: dict[str, Param], objectives: list[str]) -> dict:
    """A trial's FrozenTrial fields from its run folder: settings, state, values, times."""
    manifest = run.read_json("manifest.json")
    recipe = run.config().recipe()
    params = {name: getattr(recipe, name) for name in space}
    history = read_history(run.path / "history.csv") if (run.path / "history.csv").is_file() else {}
    steps = dict(enumerate(history.get(objectives[0], [])))
    status, values = manifest.get("status"), None
    if status == "complete":
        state, values = optuna.trial.TrialState.COMPLETE, run_values(run.path, objectives)
    elif status == "pruned":
        state = optuna.trial.TrialState.PRUNED
        values = [steps[max(steps)]] if steps and len(objectives) == 1 else None
    else:
        state, steps = FAIL, {}
    started = datetime.datetime.strptime(manifest["started"], "%Y-%m-%dT%H:%M:%S%z")
    ended = (run.path / "manifest.json").stat().st_mtime
    return {
        "state": state,
        "values": values,
        "params": params,
        "distributions": {name: distribution(space[name]) for name in params},
        "intermediate_values": steps if len(objectives) == 1 else {},
        "datetime_start": datetime.datetime.fromtimestamp(started.timestamp()),
        "datetime_complete": datetime.datetime.fromtimestamp(ended),
    }


def distribution(param: Param) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution `convnet.tuning.study.suggest` draws `param` from."""
    if param.kind == "choice":
        return optuna.distributions.CategoricalDistribution(param.choices)
    if param.kind == "int":
        return optuna.distributions.IntDistribution(int(param.low), int(param.high), log=param.log)
    return optuna.distributions.FloatDistribution(param.low, param.high, log=param.log)
