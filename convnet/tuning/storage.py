"""Where a study lives, and the study itself. Optuna and SQLAlchemy, no Keras: a storage that
cannot be reached, or a study made for another preset, is refused before any training starts.

Storage: a SQLite file in the tune folder by default, or any database URL Optuna takes
(`postgresql://...`) to share one study between machines. A relational storage, not Optuna's
journal file, because only it has the heartbeat: a worker killed mid-trial leaves its trial
"running", and the heartbeat marks it failed and queues it again (Optuna's
`RetryHeartbeatStaleTrialCallback`). SQLite takes several local worker processes: each waits
for the file's lock (a 60 s busy timeout), and a trial writes to it a few times a minute.
"""

from __future__ import annotations

import time
import warnings

import optuna
import sqlalchemy.exc

from convnet.errors import ConfigError
from convnet.tuning.plan import hide_password
from convnet.tuning.space import OBJECTIVES

DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)  # finished trials


def open_storage(url: str, heartbeat: int) -> optuna.storages.RDBStorage:
    """The study's storage at `url`, with a heartbeat every `heartbeat` seconds: a trial whose
    process stops beating for twice that is failed and queued again (at most 3 times).

    Raises:
        ConfigError: the storage cannot be reached or opened (the URL's password hidden).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Optuna marks the heartbeat and its retry callback experimental; they are what a tune
    # on several processes needs.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=heartbeat,
                grace_period=2 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(3),
            )
        except sqlalchemy.exc.IntegrityError as error:
            # Workers started together on a new database race to create Optuna's tables, and
            # all but one fail on PostgreSQL's catalog: the tables exist once the winner is done.
            failure = error
            time.sleep(1 + attempt)
        except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as error:
            failure = error
            break
    reason = str(getattr(failure, "orig", None) or failure).strip().splitlines()[0]
    raise ConfigError(f"cannot open the study's storage {hide_password(url)} ({reason}).")


def open_study(
    storage: optuna.storages.RDBStorage,
    name: str,
    preset: str,
    objectives: list[str],
    pruner: str,
    seed: int | None,
) -> optuna.Study:
    """The study `name` in `storage`, made for `preset` and `objectives` if it is new.

    Raises:
        ConfigError: the study exists and was made for another preset or other objectives.
    """
    directions = [OBJECTIVES[o] for o in objectives]
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        directions=directions,
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=_pruner(pruner) if len(objectives) == 1 else optuna.pruners.NopPruner(),
    )
    made_for = study.user_attrs
    if not made_for:
        study.set_user_attr("preset", preset)
        study.set_user_attr("objectives", objectives)
    elif (made_for.get("preset"), made_for.get("objectives")) != (preset, objectives):
        raise ConfigError(
            f"study {name!r} was made for preset {made_for.get('preset')!r} with objectives "
            f"{made_for.get('objectives')}; received preset {preset!r} with {objectives}. "
            "Pass another --study, or the same settings."
        )
    return study


def _pruner(name: str) -> optuna.pruners.BasePruner:
    """Hopeless trials stop early: against the median of earlier trials at the same epoch (after
    5 trials and from the second epoch), or by Hyperband's brackets."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()
