"""`convnet tune`: Optuna studies whose trials are run folders, continued, shared and refused."""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml
from conftest import CONVNET, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

import convnet
from convnet import api
from convnet.cli import main
from convnet.config import with_settings
from convnet.errors import ConvnetWarning
from convnet.models import get_preset, list_presets
from convnet.runs import Run, list_runs
from convnet.tuning.plan import TunePlan
from convnet.tuning.progress import TrialLines
from convnet.tuning.space import load_space
from convnet.tuning.study import ReportEpochs, run_values

# The line `convnet tune` prints on stderr as each trial finishes.
PROGRESS = re.compile(r"trial (\d+) \((\d+)/(\d+)\): (.*)")  # number (done/target): ...


def trials_csv(folder: Path) -> list[dict]:
    return list(csv.DictReader((folder / "trials.csv").read_text().splitlines()))


def study_of(folder: Path, name: str = "convnet") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'study.db'}")


def progress_lines(stderr: str) -> list[re.Match]:
    return [found for line in stderr.splitlines() if (found := PROGRESS.fullmatch(line))]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, tiny_npz):
    """Three trials of the seed preset's learning rate and batch size, one epoch each; and what
    the tune printed on stderr."""
    space = tmp_path_factory.mktemp("space") / "space.yaml"
    space.write_text(
        "learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
        "batch_size: {choices: [32, 64]}\nlabel_smoothing: 0.05\n"
    )
    folder = tmp_path_factory.mktemp("tunes") / "tune"
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        result = convnet.tune(
            train=str(tiny_npz), epochs=1, trials=3, space=str(space), out=str(folder), heartbeat=7
        )
    return folder, result, space, stderr.getvalue()


@pytest.mark.trains
def test_a_tune_leaves_its_trials_as_runs_and_the_best_as_a_whole_run(tuned):
    folder, result, *_ = tuned
    rows = trials_csv(folder)
    assert result.finished == 3 and [row["state"] for row in rows] == ["complete"] * 3
    assert set(rows[0]) >= {"number", "val_accuracy", "run", "learning_rate", "batch_size"}
    values = []
    for row in rows:  # each trial is a run folder whose config holds the trial's settings
        run = folder / row["run"]
        assert Run(run).status() == "complete"
        config = Run(run).config()
        recipe = config.recipe()
        assert recipe.learning_rate == pytest.approx(float(row["learning_rate"]))
        assert (recipe.batch_size, recipe.label_smoothing, recipe.epochs) == (
            int(row["batch_size"]),
            0.05,
            1,
        )
        values.append(run_values(run, ["val_accuracy"])[0])
        assert float(row["val_accuracy"]) == pytest.approx(values[-1])
    study = study_of(folder)
    assert study.best_value == pytest.approx(max(values))
    assert result.best[0]["trial"] == study.best_trial.number
    best = folder / "best"
    assert (best / "model.keras").is_file() and (best / "report.html").is_file()
    assert Run(best).config().recipe() == Run(folder / result.best[0]["run"]).config().recipe()
    page = (folder / "tune.html").read_text()
    assert page.count("data:image/png;base64,") == 3  # history, importances, coordinates
    assert "Best trial" in page


@pytest.mark.trains
def test_a_tune_prints_a_line_as_each_trial_finishes(tuned):
    folder, _, _, stderr = tuned
    rows = trials_csv(folder)
    lines = progress_lines(stderr)
    assert [line[1] for line in lines] == [row["number"] for row in rows]  # each once, in order
    best = None
    for line, row in zip(lines, rows, strict=True):
        value = float(row["val_accuracy"])
        if best is None or value > float(best["val_accuracy"]):
            best = row
        last = row is rows[-1]
        left = "" if last else r"; (about \d+ min|less than a minute) left"  # none to go after
        assert re.fullmatch(
            rf"val_accuracy {value:.4f} \(best {float(best['val_accuracy']):.4f}, "
            rf"trial {best['number']}\), \d+ s{left}",
            line[4],
        ), line[0]
        assert line[3] == "3"
    assert [int(line[2]) for line in lines] == list(range(1, len(rows) + 1))


@pytest.mark.trains
def test_a_trials_config_reproduces_it_with_train(tuned, tmp_path, monkeypatch):
    """`convnet train --config TRIAL/config.yaml` asks for the trial's run again: every setting
    the same but the folder. What it asks for is the config that `convnet.api.train` loads from
    what the command passes it; no need to train it."""
    folder, result, *_ = tuned
    trial = folder / result.best[0]["run"]
    asked = []

    def train(config=None, *, command=None, verbose=None, resume=None, tensorboard=None,
              mlflow=None, mlflow_register=None, **settings):  # fmt: skip
        asked.append(with_settings(config, settings))  # as api.train begins
        return SimpleNamespace(run=asked[-1].out, is_chief=True, test_loss=0.0,
                               test_accuracy=0.0, wall_seconds=0.0)  # fmt: skip

    monkeypatch.setattr(api, "train", train)
    again = tmp_path / "again"
    assert main(["train", "--config", str(trial / "config.yaml"), "--out", str(again)]) == 0
    [config] = asked
    assert config.resolved() == Run(trial).config().resolved() | {"out": str(again)}
    assert config.recipe() == Run(trial).config().recipe()


@pytest.mark.trains
def test_running_a_tune_again_continues_it(tuned, capsys):
    folder, *_ = tuned
    before = trials_csv(folder)
    result = convnet.tune(trials=4, out=str(folder), verbose=0)
    assert progress_lines(capsys.readouterr().err) == []  # verbose=0: silent
    after = trials_csv(folder)
    assert result.finished == 4 and len(after) == 4
    assert after[:3] == before  # the finished trials are kept, none run again
    assert list_runs(folder.parent)[0]["status"] == "tune 4/4"
    settings = [(row["learning_rate"], row["batch_size"]) for row in after]
    assert settings[3] not in settings[:3]  # a new process draws new settings
    assert TunePlan.read(folder).heartbeat == 7  # how it runs, as given at first


@pytest.fixture
def tune_copy(tuned, tmp_path) -> Path:
    """A copy of the module's tune folder, to damage."""
    folder = tmp_path / "tune"
    shutil.copytree(tuned[0], folder, symlinks=True)
    return folder


def damage(db: Path, how: str) -> None:
    if how.startswith("random bytes"):
        with db.open("r+b") as f:
            f.seek(0 if how.endswith("header") else 2 * 4096)
            f.write(os.urandom(4096))
    elif how == "a dropped table":
        with contextlib.closing(sqlite3.connect(db)) as connection:
            connection.execute("DROP TABLE trial_values")
            connection.commit()
    else:  # another study's database in its place
        db.unlink()
        study = optuna.create_study(study_name="convnet", storage=f"sqlite:///{db}")
        study.set_user_attr("preset", "seed")
        study.set_user_attr("objectives", ["val_accuracy"])
        study.add_trial(optuna.trial.create_trial(value=0.5))


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("random bytes over its header", r"a damaged study database \(file is not a database\)"),
        ("random bytes over its pages", r"a damaged study database \(.*malformed.*\)"),
        ("a dropped table", r"a damaged study database \(no table 'trial_values'\)"),
        ("another study", r"study 'convnet' has no trial 1 \(.*trial-0001\), so it is not the"),
    ],
)
@pytest.mark.trains
def test_a_damaged_study_database_is_one_line_saying_what_to_do(tune_copy, capsys, how, reason):
    db = tune_copy / "study.db"
    damage(db, how)
    assert main(["tune", "--out", str(tune_copy)]) == 2
    [err] = capsys.readouterr().err.strip().splitlines()
    assert re.fullmatch(rf"convnet: error: {re.escape(str(db))}: {reason}.*", err), err
    what_to_do = "aside and run the command again to rebuild the study from the trial folders"
    assert re.search(rf"move (it|the database) {what_to_do}", err)
    assert "another --out to start afresh" in err


@pytest.mark.parametrize("loss", ["deleted", "emptied"])
@pytest.mark.trains
def test_a_lost_study_is_rebuilt_from_its_trial_folders(tune_copy, loss):
    db = tune_copy / "study.db"
    before, rows = study_of(tune_copy).get_trials(), trials_csv(tune_copy)
    db.unlink() if loss == "deleted" else db.write_bytes(b"")
    lost = rf"{re.escape(str(db))}: held none of the {len(before)} trials in .*; rebuilt the study"
    with pytest.warns(ConvnetWarning, match=lost):
        convnet.tune(out=str(tune_copy), verbose=0)  # its own --trials: all finished already
    after = study_of(tune_copy).get_trials()
    kept = [(t.number, t.state, t.params, t.values, t.user_attrs["run"]) for t in before]
    assert [(t.number, t.state, t.params, t.values, t.user_attrs["run"]) for t in after] == kept
    without_seconds = [{k: v for k, v in row.items() if k != "seconds"} for row in rows]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in trials_csv(tune_copy)] == (
        without_seconds
    )
    if loss == "deleted":  # and it goes on, numbering its trials after those
        result = convnet.tune(out=str(tune_copy), trials=len(before) + 1, verbose=0)
        assert result.finished == len(before) + 1
        assert Run(tune_copy / "trials" / f"trial-{len(before):04d}").status() == "complete"


@pytest.mark.trains
def test_two_objectives_give_a_pareto_front(tmp_path, tiny_npz):
    result = convnet.tune(
        train=str(tiny_npz),
        epochs=1,
        trials=2,
        objectives=["val_accuracy", "parameters"],
        out=str(tmp_path / "tune"),
        preset="fast",
    )
    study = study_of(tmp_path / "tune")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert {b["trial"] for b in result.best} == {t.number for t in study.best_trials}
    assert result.best_run is None and not (tmp_path / "tune" / "best").exists()
    assert "Pareto front" in (tmp_path / "tune" / "tune.html").read_text()
    for best in result.best:  # the parameter count is the run's model's
        run = tmp_path / "tune" / best["run"]
        assert best["values"][1] == Run(run).read_json("metrics.json")["parameters"]


class FakeTrial:
    """Stands in for an Optuna trial: records reports, prunes from a given epoch on."""

    def __init__(self, prune_from: int):
        self.reports, self.prune_from = [], prune_from

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return len(self.reports) > self.prune_from


def test_each_epoch_is_reported_and_a_hopeless_trial_stops():
    callback = ReportEpochs(FakeTrial(prune_from=1), "val_accuracy")
    callback.on_epoch_end(0, {"val_accuracy": 0.5})
    with pytest.raises(optuna.TrialPruned, match="val_accuracy 0.4000 at epoch 2"):
        callback.on_epoch_end(1, {"val_accuracy": 0.4})
    assert callback.trial.reports == [(0, 0.5), (1, 0.4)]


@pytest.mark.parametrize(("pruner", "finished_before"), [("median", 5), ("hyperband", 1)])
@pytest.mark.trains
def test_a_real_pruner_stops_a_hopeless_trial_and_marks_its_run(
    tmp_path, tiny_npz, capsys, pruner, finished_before
):
    """Optuna's own pruner, as `--pruner` picks it, on a study that already holds finished
    trials at val_accuracy 0.6 (the median pruner waits for 5, Hyperband for 1 to size its
    brackets); then two real trials of 2 epochs, queued: a learning rate that learns the bars,
    and one too small to move the weights (1e-7), which stays near chance. The second is
    stopped after its second epoch, the first epoch being a warm-up for both pruners."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    study = optuna.create_study(study_name="bars", storage=url, direction="maximize")
    for number in range(finished_before):
        study.add_trial(
            optuna.trial.create_trial(
                value=0.6,
                intermediate_values={0: 0.6, 1: 0.6},
                user_attrs={"run": f"elsewhere/trial-{number:04d}"},  # another worker's
            )
        )
    study.enqueue_trial({"learning_rate": 3e-3})
    study.enqueue_trial({"learning_rate": 1e-7})
    space = tmp_path / "space.yaml"
    space.write_text(
        "learning_rate: {low: 1.0e-8, high: 1.0e-1, log: true}\n"
        "epochs: 2\nbatch_size: 32\nlabel_smoothing: 0.0\ntranslate: 0.0\n"
    )
    out = tmp_path / "tune"
    argv = ["tune", "--train", str(tiny_npz), "--space", str(space), "--pruner", pruner]
    argv += ["--storage", url, "--study", "bars", "--trials", str(finished_before + 2)]
    assert main([*argv, "--out", str(out)]) == 0
    good, hopeless = study.get_trials()[finished_before:]
    assert (good.params, good.state.name) == ({"learning_rate": 3e-3}, "COMPLETE")
    assert (hopeless.params, hopeless.state.name) == ({"learning_rate": 1e-7}, "PRUNED")
    assert sorted(hopeless.intermediate_values) == [0, 1]  # stopped after its second epoch
    assert max(hopeless.intermediate_values.values()) < 0.6 < good.value
    rows = {int(row["number"]): row for row in trials_csv(out)}
    assert rows[hopeless.number]["state"] == "pruned"
    assert Run(out / hopeless.user_attrs["run"]).status() == "pruned"
    assert Run(out / good.user_attrs["run"]).status() == "complete"
    [line] = [line for line in progress_lines(capsys.readouterr().err)
              if line[1] == str(hopeless.number)]  # fmt: skip
    assert re.search(r"\d+ s, pruned at epoch 2", line[4]), line[0]


def frozen(number, state, values=None, seconds=60.0, retries=()):
    """A finished trial, `number` minutes after the first, that took `seconds`."""
    end = datetime.datetime(2026, 1, 1) + datetime.timedelta(minutes=number)
    attrs = {"failed_trial": retries[0], "retry_history": list(retries)} if retries else {}
    return optuna.trial.FrozenTrial(
        number=number,
        state=state,
        value=None,
        values=values,
        datetime_start=end - datetime.timedelta(seconds=seconds),
        datetime_complete=end if state.is_finished() else None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs=attrs,
        intermediate_values={},
        trial_id=number,
    )


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # as open_storage
def test_progress_lines_of_a_pareto_study_its_failed_trials_and_the_time_left(tmp_path):
    objectives = ["val_accuracy", "parameters"]
    plan = TunePlan(tmp_path, {}, {}, {}, objectives, trials=11, workers=2)
    study = optuna.create_study(directions=["maximize", "minimize"])
    progress = TrialLines(study, plan)
    state = optuna.trial.TrialState
    trials = [
        frozen(0, state.COMPLETE, [0.8, 1000.0]),
        frozen(1, state.COMPLETE, [0.7, 2000.0], seconds=120),  # worse on both
        frozen(2, state.FAIL, seconds=30),
        frozen(3, state.WAITING, retries=[2]),  # the heartbeat's copy of trial 2
        frozen(4, state.FAIL, seconds=5),
    ]
    assert progress.lines(trials) == [
        # a mean of 60 s for each of 10 trials to go, on 2 workers
        "trial 0 (1/11): val_accuracy 0.8000, parameters 1,000 (on the Pareto front), 60 s; "
        "about 5 min left",
        "trial 1 (2/11): val_accuracy 0.7000, parameters 2,000, 2.0 min; about 7 min left",
        "trial 2 (2/11): failed (its worker stopped; run again as trial 3), 30 s; about 7 min left",
        "trial 4 (2/11): failed, 5 s; about 7 min left",
    ]
    assert progress.lines(trials) == []  # each trial once


# --- refused in one line, nothing written -----------------------------------------------------


@pytest.mark.parametrize(
    ("space", "flags", "message"),
    [
        ("momentum: {low: 0.1, high: 0.9}", [], r"'momentum' is not a setting tuning varies"),
        ("learning_rate: {low: 0.1, high: 0.01}", [], r"low must be below high"),
        ("epochs: {low: 0, high: 3}", [], r"'epochs': epochs must be an integer >= 1"),
        ("", ["--storage", "postgresql://nobody@127.0.0.1:9/none"], r"cannot open the study's"),
        ("", ["--objectives", "val_accuracy,speed"], r"unknown objective 'speed'"),
        ("", ["--trials", "0"], r"trials must be an integer >= 1"),
        (
            "width: {choices: [[1, 2], {x: 1}]}",
            [],
            r"space.yaml: 'width': each choice must be a number, .* Received: \[1, 2\]",
        ),
        (
            "batch_size: {low: 1.5, high: 7.2}",
            [],
            r"space.yaml: 'batch_size': expected whole numbers low and high. Received: low 1.5",
        ),
    ],
)
def test_bad_tune_settings_are_one_line_and_write_nothing(
    tmp_path, tiny_npz, capsys, space, flags, message
):
    (tmp_path / "space.yaml").write_text(space or "{}")
    out = tmp_path / "tune"
    argv = ["tune", "--train", str(tiny_npz), "--space", str(tmp_path / "space.yaml")]
    assert main([*argv, *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not out.exists()


def test_a_study_made_for_another_preset_is_refused(tmp_path, tiny_npz, capsys):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    optuna.create_study(study_name="mine", storage=url).set_user_attr("preset", "best")
    argv = ["tune", "--train", str(tiny_npz), "--storage", url, "--study", "mine"]
    assert main([*argv, "--out", str(tmp_path / "tune")]) == 2
    [err] = capsys.readouterr().err.strip().splitlines()
    assert "study 'mine' was made for preset 'best'" in err
    assert not (tmp_path / "tune").exists()


@pytest.mark.parametrize("preset", list_presets())
def test_the_default_space_of_each_preset_holds_settings_its_builder_takes(preset):
    """A model setting drawn that the preset's builder does not take would fail every trial."""
    import inspect

    from convnet.models.factory import BUILDER_DEFAULTS

    space, _ = load_space(preset)
    takes = inspect.signature(get_preset(preset).build_function()).parameters
    drawn = set(space) & set(BUILDER_DEFAULTS)
    assert drawn <= set(takes), (preset, drawn - set(takes))
    assert bool(drawn) == (preset != "seed")  # seed's builder takes no width or dropout


# --- workers killed, and workers sharing a study ----------------------------------------------


@pytest.mark.trains
def test_a_killed_worker_s_trial_is_failed_retried_and_nothing_counted_twice(tmp_path, tiny_npz):
    out = tmp_path / "tune"
    # 4 epochs: the worker is killed at the first epoch's row, 3 epochs before its trial ends.
    args = ["tune", "--train", tiny_npz, "--epochs", "4", "--batch-size", "16"]
    args += ["--trials", "2", "--out", out]
    worker = subprocess.Popen([CONVNET, *map(str, args)], stderr=subprocess.PIPE)
    history = out / "trials" / "trial-0000" / "history.csv"
    deadline = time.monotonic() + 300
    while not (history.is_file() and len(history.read_text().splitlines()) > 1):
        assert worker.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()

    # At once, within two heartbeats (30 s): its process is gone from this machine, as its run
    # folder records.
    again = run_cli("tune", "--out", out)
    assert again.returncode == 0, again.stderr
    assert Run(out / "trials" / "trial-0000").read_json("manifest.json")["status"] == "interrupted"
    trials = study_of(out).get_trials()
    states = {t.number: t.state.name for t in trials}
    assert states[0] == "FAIL"
    retried_from = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
    retried = [t for t in trials if retried_from(t) == 0]
    assert [t.state.name for t in retried] == ["COMPLETE"]
    [failed] = [line[4] for line in progress_lines(again.stderr) if line[1] == "0"]
    assert failed.startswith(f"failed (its worker stopped; run again as trial {retried[0].number})")
    assert sum(state == "COMPLETE" for state in states.values()) == 2
    rows = trials_csv(out)
    assert [row["retries"] for row in rows if row["number"] == str(retried[0].number)] == ["0"]


@pytest.mark.trains
def test_two_workers_on_postgres_share_one_study(tmp_path, tiny_npz, postgres_url):
    common = ["tune", "--train", tiny_npz, "--epochs", "1", "--trials", "4"]
    common += ["--storage", postgres_url, "--study", "shared"]
    workers = [
        subprocess.Popen(
            [CONVNET, *map(str, common), "--out", tmp_path / name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    finished = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len(finished) >= 4 and len({t.number for t in finished}) == len(finished)
    ran = {}
    for name in ("a", "b"):  # every trial ran once, in one of the two folders
        for run in (tmp_path / name / "trials").iterdir():
            ran.setdefault(run.name, []).append(name)
    assert sorted(ran) == sorted(f"trial-{t.number:04d}" for t in study.get_trials())
    assert all(len(where) == 1 for where in ran.values())
    values = [
        run_values(
            tmp_path / ran[f"trial-{t.number:04d}"][0] / t.user_attrs["run"], ["val_accuracy"]
        )[0]
        for t in finished
    ]
    assert study.best_value == pytest.approx(max(values))


@pytest.mark.trains
def test_two_local_workers_share_the_sqlite_study(tmp_path, tiny_npz):
    out = tmp_path / "tune"
    result = run_cli("tune", "--train", tiny_npz, "--epochs", "1", "--trials", "4",
                     "--workers", "2", "--out", out, "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    trials = study_of(out).get_trials()
    assert sum(t.state.name == "COMPLETE" for t in trials) >= 4
    printed = [int(line[1]) for line in progress_lines(result.stderr)]  # by the first process
    assert sorted(printed) == [t.number for t in trials]  # each once, whichever worker ran it
    folders = sorted(p.name for p in (out / "trials").iterdir())
    assert folders == [f"trial-{t.number:04d}" for t in trials]  # one folder, one run, each
    manifests = [Run(out / t.user_attrs["run"]).read_json("manifest.json") for t in trials]
    assert len({m["process"]["pid"] for m in manifests}) == 2  # both workers trained
    assert len(trials_csv(out)) == len(trials)


@pytest.mark.trains
def test_ctrl_c_stops_the_tune_and_says_how_to_continue(tmp_path, tiny_npz):
    out = tmp_path / "tune"
    args = ["tune", "--train", tiny_npz, "--epochs", "30", "--batch-size", "16", "--out", out]
    tuning = subprocess.Popen([CONVNET, *map(str, args)], stderr=subprocess.PIPE, text=True)
    history = out / "trials" / "trial-0000" / "history.csv"
    while tuning.poll() is None and not history.is_file():
        time.sleep(0.05)
    tuning.send_signal(signal.SIGINT)
    _, err = tuning.communicate(timeout=120)
    assert tuning.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        f"convnet: interrupted with 0 of 20 trials finished; continue with: "
        f"convnet tune --out {out}"
    )
    assert Run(out / "trials" / "trial-0000").status() == "interrupted"


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """The epoch scalars in a TensorBoard log folder's event files: {tag: [(step, value)]}."""
    events = EventAccumulator(str(folder), size_guidance={"tensors": 0}).Reload()
    tags = [tag for tag in events.Tags()["tensors"] if tag.startswith("epoch_")]
    return {
        tag: [(e.step, float(make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
        for tag in tags
    }


def flat(settings: dict, prefix: str = "") -> dict[str, str]:
    """A config.yaml's settings as MLflow parameters: one level, "augment.flip", as text."""
    found = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            found |= flat(value, f"{prefix}{key}.")
        else:
            found[f"{prefix}{key}"] = str(value)
    return found


@pytest.mark.trains
def test_each_trial_is_tracked_in_mlflow_and_tensorboard(tmp_path, tiny_npz):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    out = tmp_path / "tune"
    result = run_cli("tune", "--train", tiny_npz, "--epochs", "2", "--trials", "2", "--out", out,
                     "--mlflow", uri, "--tensorboard", tmp_path / "tb", "--quiet",
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert progress_lines(result.stderr) == []
    client = mlflow.tracking.MlflowClient(uri)
    trials = {t.number: t for t in study_of(out).get_trials()}
    rows = trials_csv(out)
    assert [row["state"] for row in rows] == ["complete"] * 2
    for row in rows:
        name = Path(row["run"]).name
        [found] = client.search_runs(["0"], f"attributes.run_name = '{name}'")
        history = client.get_metric_history(found.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [0, 1]
        assert history[-1].value == pytest.approx(float(row["val_accuracy"]))
        # Its parameters: the trial's config.yaml, the settings the study drew among them.
        params = found.data.params
        config = yaml.safe_load((out / row["run"] / "config.yaml").read_text())
        assert params == flat(config)
        drawn = trials[int(row["number"])].params
        assert float(params["learning_rate"]) == pytest.approx(drawn["learning_rate"], rel=1e-12)
        assert float(params["learning_rate"]) == pytest.approx(float(row["learning_rate"]))
        assert (params["epochs"], params["out"]) == ("2", str(out / row["run"]))
        # Its TensorBoard logs: loss and accuracy for each of its 2 epochs, validation's as
        # the history has them.
        logs = tmp_path / "tb" / name
        train, validation = (
            tensorboard_scalars(logs / "train"),
            tensorboard_scalars(logs / "validation"),
        )
        for scalars in (train, validation):
            assert {"epoch_loss", "epoch_accuracy"} <= set(scalars)
            assert [step for step, _ in scalars["epoch_loss"]] == [0, 1]
        assert validation["epoch_accuracy"][-1][1] == pytest.approx(float(row["val_accuracy"]))
