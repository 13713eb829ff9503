"""Starting a tune (`convnet tune`, `convnet.tune`): its numbers, folder and plan checked at once,
its data read, then its trials run by the workers (`convnet.tuning.tune.run`).
"""

from __future__ import annotations

import time
from pathlib import Path

from convnet import framework
from convnet.config import TrainConfig, load_config, with_settings
from convnet.trackers import check_installed


def tune(
    config: TrainConfig | str | Path | None = None,
    *,
    trials: int | None = None,
    space: str | Path | None = None,
    objectives: list[str] | tuple[str, ...] | None = None,
    time_budget: float | None = None,
    workers: int = 1,
    storage: str | None = None,
    study: str | None = None,
    pruner: str | None = None,
    heartbeat: int | None = None,
    out: str | Path | None = None,
    tensorboard: str | None = None,
    mlflow: str | None = None,
    verbose: int = 1,
    **settings,
):
    """Searches a preset's recipe with Optuna (TPE, and a pruner fed each epoch's validation
    metric); each trial is a run folder. Given the `out` of an earlier tune, continues it with
    its own settings (only `trials`, `time_budget`, `workers`, `heartbeat`, `storage` and the
    trackers may be given then).

    Args:
        config: the settings every trial starts from: a TrainConfig, a YAML file, or None.
        trials: finished trials (complete or pruned) to stop at; default 20, or a continued
            tune's own number.
        space: a YAML file replacing or adding to the preset's default space
            (`convnet.tuning.space`).
        objectives: "val_accuracy" (the default), "val_loss", "train_seconds" or "parameters";
            two give a Pareto front instead of one best trial (and no pruning).
        time_budget: seconds each worker searches for at most; None for no limit.
        workers: worker processes on this machine, sharing the study.
        storage: a database URL (`postgresql://...`) to share the study between machines;
            None for a SQLite file in the tune folder.
        study: the study's name in its storage; default "convnet".
        pruner: "median" (the default), "hyperband" or "none".
        heartbeat: seconds between a running trial's heartbeats; a trial silent for twice that
            (its worker killed) is failed and run again. Defaults to 30, or a continued
            tune's own.
        out: the tune folder; default `tunes/PRESET-YYYYmmdd-HHMMSS`.
        tensorboard: TensorBoard logs of each trial, as `train` takes it.
        mlflow: an MLflow tracking URI that each trial is logged to, as `train` takes it.
        verbose: 1 prints a line on stderr as each trial finishes, whichever worker ran it (its
            values, the best so far, the time left); 0 prints nothing. Defaults to 1.
        **settings: config or recipe keys applied over `config`, as for `train`; a recipe
            setting given here or in `config` is fixed for every trial, not searched.

    Returns:
        A TuneResult: folder, study, trials finished, the best trial(s), the best run's copy.

    Raises:
        ConfigError: invalid settings or space, a storage that cannot be opened, or a study
            made for another preset. DataError: the data cannot be read. TuneInterrupted:
            Ctrl-C; run it again to continue.
    """
    from convnet.tuning.plan import check_folder, check_numbers, continued_plan, new_plan

    check_numbers(trials, workers, time_budget, heartbeat)
    earlier = check_folder(Path(out)) if out else None
    given = {"config": config, "space": space, "objectives": objectives, "study": study}
    given |= {"pruner": pruner} | settings
    running = {"trials": trials, "time_budget": time_budget, "workers": workers}
    running |= {"heartbeat": heartbeat, "storage": storage}
    running |= {"tensorboard": tensorboard, "mlflow": mlflow}
    if earlier:
        plan = continued_plan(earlier, given, **running)
    else:
        config = with_settings(config, settings)
        folder = Path(out or Path("tunes") / f"{config.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
        plan = new_plan(folder, config, space, objectives, study, pruner, **running)
    check_installed(plan.tensorboard, plan.mlflow)
    url = plan.storage_url(storage)
    config = load_config(None, plan.config)
    from convnet.data import load_training_data  # the readers: NumPy, polars

    data = load_training_data(config)  # bad data is refused before anything is written
    framework.load(config.backend, config.devices)  # before tuning's modules import Keras
    from convnet.tuning.tune import run

    return run(plan, url, data, verbose=verbose)
