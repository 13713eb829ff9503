"""`convnet tune` against kills at the worst moment, tunes started together, and continued tunes:
`best/` always whole, no trial drawn twice, none run past --trials."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import CONVNET

from convnet.tuning.outputs import copy_best
from convnet.tuning.storage import DONE, open_storage, open_study


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler catches it."""


def killed_at(monkeypatch, step: int) -> None:
    """From the `step`th change to the file system (a rename, a removal, a link) on, each one
    raises Killed instead: the process died just before it. The lock library's own changes
    are let through, as the kernel releases a dead process's lock."""
    count = [0]

    def wrap(real):
        def change(*args, **kwargs):
            if not sys._getframe(1).f_globals.get("__name__", "").startswith("filelock"):
                count[0] += 1
                if count[0] >= step:
                    raise Killed
            return real(*args, **kwargs)

        return change

    for name in ("replace", "rename", "unlink", "remove", "rmdir", "symlink"):
        monkeypatch.setattr(os, name, wrap(getattr(os, name)))


def study_with_best(*scores: float) -> optuna.Study:
    """A study whose trial i, run folder trials/trial-000i, scored scores[i]."""
    study = optuna.create_study(direction="maximize")
    for number, score in enumerate(scores):
        run = {"run": f"trials/trial-{number:04d}"}
        study.add_trial(optuna.trial.create_trial(value=score, user_attrs=run))
    return study


def tune_folder(folder: Path) -> Path:
    """A tune folder whose trials 0 and 1 ran, and whose best/ is trial 0's."""
    for number in (0, 1):
        run = folder / "trials" / f"trial-{number:04d}"
        (run / "plots").mkdir(parents=True)
        (run / "model.keras").write_text(f"model {number}")
        (run / "plots" / "history.png").write_text(f"plot {number}")
    copy_best(study_with_best(0.5), folder)
    return folder


def entries(folder: Path) -> int:
    """How many files and folders `folder` holds, its trials aside."""
    return sum(len(d) + len(f) for _, d, f in os.walk(folder)) - len(os.listdir(folder / "trials"))


def test_best_is_a_whole_run_whenever_its_replacement_is_killed(tmp_path, monkeypatch):
    clean = tune_folder(tmp_path / "clean")
    copy_best(study_with_best(0.5, 0.9), clean)
    step = 0
    while True:
        step += 1
        folder = tune_folder(tmp_path / f"kill-{step}")
        with monkeypatch.context() as patched:
            killed_at(patched, step)
            try:
                copy_best(study_with_best(0.5, 0.9), folder)
                finished = True
            except Killed:
                finished = False
        best = folder / "best"
        whole = (best / "model.keras").is_file() and (best / "plots/history.png").is_file()
        assert whole, f"killed at step {step}: best/ is not a whole run"
        model, plot = (best / "model.keras").read_text(), (best / "plots/history.png").read_text()
        assert (model, plot) in {("model 0", "plot 0"), ("model 1", "plot 1")}, step
        if finished:
            break
        copy_best(study_with_best(0.5, 0.9), folder)  # the next tune on the folder
        assert (best / "model.keras").read_text() == "model 1"
        assert entries(folder) == entries(clean), step  # nothing the killed one left stays
    assert step > 3  # the replacement was killed at each of its steps


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # trials asked and told, not run
def test_each_process_on_a_study_draws_new_settings_and_the_same_seed_the_same(tmp_path):
    def draw(url: str) -> dict:
        """A trial drawn by a new process's sampler (a continued tune, another worker)."""
        study = open_study(open_storage(url, 30), "s", "seed", ["val_accuracy"], "none", 7)
        trial = study.ask()
        params = {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True)}
        params["batch"] = trial.suggest_categorical("batch", [16, 32, 64, 128, 256])
        study.tell(trial, 0.5)
        return params

    first = [draw(f"sqlite:///{tmp_path / 'a.db'}") for _ in range(3)]
    assert len({tuple(p.values()) for p in first}) == 3  # no trial repeats an earlier one
    again = [draw(f"sqlite:///{tmp_path / 'b.db'}") for _ in range(3)]
    assert again == first  # the seed decides the search


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_processes_making_one_study_at_once_all_open_it(tmp_path, request, database):
    """Workers started together on a new database: all but one lose the race to create
    Optuna's tables (PostgreSQL: "relation alembic_version already exists"), then open them."""
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'study.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    go = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        "from convnet.tuning.storage import open_storage, open_study\n"
        "print('ready', flush=True)\n"
        "while not os.path.exists(sys.argv[2]):\n"
        "    time.sleep(0.001)\n"
        "open_study(open_storage(sys.argv[1], 30), 'convnet', 'seed', ['val_accuracy'], "
        "'median', 0)\n"
    )
    command = [sys.executable, "-W", "ignore", "-c", code, url, str(go)]
    opening = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    for process in opening:  # Optuna imported in each: they all start at once
        assert process.stdout.readline() == "ready\n"
    go.touch()
    for process in opening:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err


@pytest.mark.trains
def test_two_tunes_started_together_on_a_new_folder_share_its_study(tmp_path, tiny_npz):
    out = tmp_path / "tune"
    command = [CONVNET, "tune", "--train", str(tiny_npz), "--epochs", "1", "--trials", "2"]
    command += ["--batch-size", "16", "--out", str(out), "--quiet"]
    tunes = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for tune in tunes:
        _, err = tune.communicate(timeout=600)
        assert tune.returncode == 0, err
    study = optuna.load_study(study_name="convnet", storage=f"sqlite:///{out / 'study.db'}")
    trials = study.get_trials()
    assert sum(t.state in DONE for t in trials) == 2  # --trials across both, none over
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)  # none twice
    folders = sorted(p.name for p in (out / "trials").iterdir())
    assert folders == [Path(t.user_attrs["run"]).name for t in trials]


def test_a_trial_another_process_is_beginning_is_not_taken_for_lost(tmp_path):
    """Its folder exists (made and locked) before its config.yaml does: a second tune starting
    then must neither fail it nor stop on it (seen on PostgreSQL with two machines)."""
    from convnet.tuning.records import fail_lost_trials

    study = optuna.create_study()
    trial = study.ask()
    trial.set_user_attr("run", "trials/trial-0000")
    (tmp_path / "trials" / "trial-0000").mkdir(parents=True)
    (tmp_path / "trials" / "trial-0000" / ".lock").touch()
    fail_lost_trials(study, tmp_path)
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING
