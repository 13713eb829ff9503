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

import contextlib
import os
import sqlite3
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy.engine
import sqlalchemy.exc

from convnet.errors import ConfigError, setting
from convnet.tuning.plan import hide_password
from convnet.tuning.sampler import TrialSeeded
from convnet.tuning.space import OBJECTIVES

DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)  # finished trials
# The tables of Optuna's relational storage that hold a study, in every version since 2.0.
TABLES = (
    "studies",
    "study_directions",
    "study_user_attributes",
    "study_system_attributes",
    "trials",
    "trial_params",
    "trial_values",
    "trial_intermediate_values",
    "trial_user_attributes",
    "trial_system_attributes",
    "version_info",
)


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
    sqlite = url.startswith("sqlite")
    if sqlite:
        check_sqlite_file(url)
    engine = {"connect_args": {"timeout": 60}} if sqlite else {}
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=heartbeat,
                grace_period=2 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(3),
            )
        except (
            sqlalchemy.exc.IntegrityError,
            sqlalchemy.exc.OperationalError,
            sqlalchemy.exc.ProgrammingError,
        ) as error:
            # Workers started together on a new database race to create Optuna's tables, and
            # all but one fail: on PostgreSQL's catalog (an IntegrityError) or its
            # "relation \"alembic_version\" already exists" (a ProgrammingError), on SQLite with
            # "table ... already exists". The tables exist once the winner is done.
            failure = error
            if not (isinstance(error, sqlalchemy.exc.IntegrityError) or _created(error)):
                break
            time.sleep(1 + attempt)
        except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as error:
            failure = error
            break
    reason = str(getattr(failure, "orig", None) or failure).strip().splitlines()[0]
    raise ConfigError(f"cannot open the study's storage {hide_password(url)} ({reason}).")


def _created(error: Exception) -> bool:
    return "already exists" in str(error)


def check_sqlite_file(url: str) -> None:
    """Refuses a SQLite study file that is damaged: not a database, pages that do not read, or
    one of Optuna's tables gone. Opened as it is, Optuna would make a missing table again,
    empty, and carry on with the study's trials, values or settings silently lost.

    Raises:
        ConfigError: naming the file, why, and how to rebuild the study or start afresh.
    """
    path = sqlalchemy.engine.make_url(url).database
    if not path or path == ":memory:" or not os.path.isfile(path) or not os.path.getsize(path):
        return  # an empty or missing file is a new database
    try:
        with contextlib.closing(
            sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True, timeout=60)
        ) as db:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":  # "*** in database main ***\nPage 3: btreeInitPage() returns ..."
                check = f"database disk image is malformed: {check.splitlines()[-1]}"
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error as error:
        check = str(error)
    missing = sorted(set(TABLES) - tables) if check == "ok" else []
    if check != "ok" or missing:
        reason = check if check != "ok" else f"no table {missing[0]!r}"
        raise ConfigError(
            f"{path}: a damaged study database ({reason}); move it aside and run the command "
            f"again to rebuild the study from the trial folders, or choose another "
            f"{setting('out')} to start afresh."
        )


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
        sampler=TrialSeeded(seed),
        pruner=_pruner(pruner) if len(objectives) == 1 else optuna.pruners.NopPruner(),
    )
    wanted = {"preset": preset, "objectives": objectives}
    for key, value in wanted.items():
        # Missing in a new study, or in one another process is making now: it writes one key
        # at a time, and a process that read between the two was refused a study made for
        # `preset` "with objectives None".
        if key not in study.user_attrs:
            study.set_user_attr(key, value)
    made_for = study.user_attrs
    if {key: made_for.get(key) for key in wanted} != wanted:
        raise ConfigError(
            f"study {name!r} was made for preset {made_for.get('preset')!r} with objectives "
            f"{made_for.get('objectives')}; received preset {preset!r} with {objectives}. "
            f"Pass another {setting('study')} name, or the same settings."
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
