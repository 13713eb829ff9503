"""Run folders: output checks before training, status and `convnet runs`, safe model loading."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections import namedtuple
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import CONVNET, make_images, run_cli, run_main, write_csv, write_npz

import convnet
from convnet import api, run_folders
from convnet.errors import DataError, RunError
from convnet.files import write_yaml
from convnet.models.factory import load_model
from convnet.run_folders import new_run_dir
from convnet.runs import Run
from convnet.training.backup import (
    BestWeights,
    EpochBackup,
    load_best,
    restore_backup,
    trim_history,
)


def accuracy(model: keras.Model, data) -> float:
    """`model`'s accuracy on `data`, one view, to compare with what convnet reports."""
    return pytest.approx(float(np.mean(model.predict(data.x, verbose=0).argmax(1) == data.y)))


# --- before training starts ------------------------------------------------------------------


def test_unwritable_output_is_refused_before_the_data_is_read(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(RunError, match=r"a-file/run: cannot write the run folder \(Not a dir"):
        convnet.train(train=str(tmp_path / "missing.csv"), out=str(blocker / "run"))


def test_full_disk_is_refused_and_leaves_no_folder(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(
        run_folders.shutil, "disk_usage", lambda path: usage(2**30, 2**30, 5 * 2**20)
    )
    with pytest.raises(
        RunError, match=r"run: only 5 MB free on its disk; a run needs at least 100"
    ):
        convnet.train(train=str(tmp_path / "missing.csv"), out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_bad_data_leaves_no_run_folder(tmp_path):
    path = write_csv(tmp_path / "bad.csv", make_images(8))
    path.write_text(path.read_text().replace(",", ",nan,", 1))
    with pytest.raises(DataError):
        convnet.train(train=str(path), out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_not_empty_output_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("")
    with (
        pytest.raises(RunError, match=r"already exists and is not empty"),
        new_run_dir(tmp_path / "run", "seed"),
    ):
        pass


def test_a_folder_claimed_by_another_process_is_refused(tmp_path, tiny_npz, trained_run):
    """The window the claim closes: a folder another process made and holds, still empty."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_CLAIM, str(tmp_path / "run")], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline() == b"claimed\n"
        with pytest.raises(RunError, match=r"run: in use by another convnet process"):
            convnet.train(train=str(tiny_npz), out=str(tmp_path / "run"))
    finally:
        holder.kill()
        holder.wait()
    # Killed without writing anything: the claim went with it and the folder is free again.
    with new_run_dir(tmp_path / "run", "seed") as path:
        assert [p.name for p in path.iterdir()] == [run_folders.LOCK_FILE]

    resumable = shutil.copytree(trained_run, tmp_path / "interrupted")
    Run(resumable).write_json("manifest.json", {"status": "interrupted"})
    with (
        run_folders.claimed(resumable),  # as a training process holds it
        pytest.raises(RunError, match=r"interrupted: in use by another convnet process"),
    ):
        api.train(resume=resumable)


HOLD_CLAIM = """
import sys, time
from convnet.run_folders import new_run_dir
with new_run_dir(sys.argv[1], "seed"):
    print("claimed", flush=True)
    time.sleep(600)
"""


RACE_FOR_ONE_FOLDER = """
import multiprocessing as mp, sys, time
from pathlib import Path
from convnet.errors import RunError
from convnet.run_folders import new_run_dir

def attempt(path, barrier, results):
    barrier.wait()
    try:
        with new_run_dir(path, "seed"):
            results.put("claimed")
            time.sleep(0.05)
    except RunError as error:
        results.put(str(error))

if __name__ == "__main__":
    base, rounds, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ctx = mp.get_context("fork")
    for r in range(rounds):
        barrier, results = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=attempt, args=(base / str(r), barrier, results))
                 for _ in range(n)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        print(*sorted(results.get() for _ in procs), sep="\\t")
"""


def test_processes_making_one_folder_at_once_get_one_claim_and_clear_refusals(tmp_path):
    # Started at one instant, so their folder checks, write probes and claims interleave: each
    # round's folder goes to exactly one, and the others are refused as a user would be told.
    rounds, contenders = 40, 4
    script = tmp_path / "race.py"
    script.write_text(RACE_FOR_ONE_FOLDER)
    done = subprocess.run(
        [sys.executable, script, tmp_path / "runs", str(rounds), str(contenders)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == rounds
    refusal = r"runs/\d+: (in use by another convnet process|already exists and is not empty)"
    for line in lines:
        outcomes = line.split("\t")
        assert outcomes.count("claimed") == 1, outcomes
        refused = [o for o in outcomes if o != "claimed"]
        assert all(re.match(f"{re.escape(str(tmp_path))}/{refusal}", o) for o in refused), refused


def test_another_process_s_write_probe_does_not_make_a_folder_taken(tmp_path):
    """The probes are what the race above can catch in the folder: made by other processes at
    the same instant, they are not a run."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".write-test-1").write_bytes(b"ok")
    (folder / "..write-test-2.abcdefgh.tmp").write_bytes(b"")
    with new_run_dir(folder, "seed") as claimed_folder:
        assert claimed_folder == folder
    (folder / "notes.txt").write_text("a user's file")
    refused = pytest.raises(RunError, match="already exists and is not empty")
    with refused, new_run_dir(folder, "seed"):
        pass


@pytest.mark.trains
def test_two_trainings_into_one_folder_leave_one_whole_run(tmp_path, tiny_npz):
    out = tmp_path / "same"
    args = ["--train", tiny_npz, "--epochs", "2", "--batch-size", "32", "--out", out]
    processes = [
        subprocess.Popen(
            [CONVNET, "train", *map(str, args), "--seed", str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    results = [(p.wait(timeout=600), *p.communicate()) for p in processes]
    assert sorted(code for code, _, _ in results) == [0, 2], results
    winner = 1 + [code for code, _, _ in results].index(0)
    loser_err = next(err for code, _, err in results if code == 2).strip().splitlines()
    assert len(loser_err) == 1, loser_err
    assert re.search(
        r"same: (in use by another convnet process|already exists and is not "
        r"empty)",
        loser_err[0],
    )
    manifest = Run(out).read_json("manifest.json")
    assert manifest["status"] == "complete" and manifest["seed"] == winner
    assert Run(out).config().seed == winner
    assert len((out / "history.csv").read_text().strip().splitlines()) == 3  # header, 2 epochs


# --- status and `convnet runs` ---------------------------------------------------------------


def fake_run(root: Path, name: str, status: str, pid: int | None = None, accuracy=None) -> Path:
    path = root / name
    write_yaml(path / "config.yaml", {"preset": "seed"})
    process = {"pid": pid, "hostname": os.uname().nodename}
    Run(path).write_json(
        "manifest.json",
        {
            "status": status,
            "preset": "seed",
            "started": f"2026-01-0{len(name)}",
            "process": process,
        },
    )
    if accuracy is not None:
        Run(path).write_json("metrics.json", {"test_accuracy": accuracy})
    if status == "complete":  # a model file that is a zip archive, as .keras files are
        zipfile.ZipFile(path / "model.keras", "w").close()
    return path


def test_status_tells_killed_runs_from_running_ones(tmp_path):
    dead = 2**22 + 12345  # above the usual pid_max: no such process
    assert Run(fake_run(tmp_path, "a", "running", pid=os.getpid())).status() == "running"
    assert Run(fake_run(tmp_path, "bb", "running", pid=dead)).status() == "interrupted"
    assert Run(fake_run(tmp_path, "ccc", "complete", accuracy=0.9)).status() == "complete"


def test_runs_command_lists_status_preset_accuracy_and_date(tmp_path):
    fake_run(tmp_path, "one", "complete", accuracy=0.91234)
    fake_run(tmp_path, "two2", "interrupted")
    (tmp_path / "not-a-run").mkdir()
    result = run_cli("runs", tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["RUN", "STATUS", "PRESET", "TEST", "ACC", "STARTED"]
    assert lines[1].split() == [str(tmp_path / "one"), "complete", "seed", "0.9123", "2026-01-03"]
    assert lines[2].split() == [str(tmp_path / "two2"), "interrupted", "seed", "-", "2026-01-04"]
    one = run_cli("runs", tmp_path / "one").stdout.splitlines()
    assert one[1:] == lines[1:2]  # a run folder lists itself
    assert (
        run_cli("runs", tmp_path / "not-a-run").stdout == f"no runs in {tmp_path / 'not-a-run'}\n"
    )
    missing = run_cli("runs", tmp_path / "nope")
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"convnet: error: {tmp_path / 'nope'}: no such folder of runs."


def test_resuming_a_complete_run_is_refused(trained_run):
    with pytest.raises(RunError, match=r"the run is complete; there is nothing to resume"):
        api.train(resume=trained_run)


@pytest.mark.trains
def test_a_run_stopped_after_its_last_epoch_resumes_without_training_again(tmp_path, monkeypatch):
    """On a source without a test set: the test set held out of it is announced when the run
    begins, not again when it resumes (where no setting could change it)."""
    import warnings

    import convnet.training.trainer as trainer
    from convnet.data import HeldOutTestWarning

    source = write_csv(tmp_path / "bars.csv", make_images(400, seed=1))

    run = tmp_path / "run"
    real_tally = trainer.predicted_tally
    stops = [KeyboardInterrupt()]  # Ctrl-C once, in the test-set pass after `fit`

    def predicted_tally(*args, **kwargs):
        if stops:
            raise stops.pop()
        return real_tally(*args, **kwargs)

    monkeypatch.setattr(trainer, "predicted_tally", predicted_tally)
    settings = {"epochs": 3, "batch_size": 64, "restore_best": True, "verbose": 0}
    resume = re.escape(f"resume with: convnet.train(resume={str(run)!r})")  # in Python's terms
    held_out = r"\(test_split=0.2, stratified, seed=42\)"
    with (
        pytest.raises(trainer.TrainingInterrupted, match=resume),
        pytest.warns(HeldOutTestWarning, match=held_out),
    ):
        api.train(train=str(source), out=str(run), **settings)
    assert Run(run).read_json("manifest.json")["status"] == "interrupted"
    history = (run / "history.csv").read_text()

    with warnings.catch_warnings():
        warnings.simplefilter("error", HeldOutTestWarning)
        api.train(resume=run, verbose=0)
    assert (run / "history.csv").read_text() == history  # no epoch trained twice
    metrics = Run(run).read_json("metrics.json")
    rows = list(csv.DictReader(history.splitlines()))
    losses = [float(row["val_loss"]) for row in rows]
    assert metrics["epochs"] == 3 and metrics["best_epoch"] == 1 + losses.index(min(losses))
    # The training time is the first process's, as history.csv counts it.
    assert metrics["fit_seconds"] == pytest.approx(float(rows[-1]["elapsed_seconds"]), abs=0.5)


@pytest.mark.trains
def test_a_run_works_from_another_directory_and_without_its_training_data(
    tmp_path, tiny_npz, monkeypatch
):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(tiny_npz, data / "bars.npz")
    monkeypatch.chdir(data)
    result = api.train(train="bars.npz", out=str(tmp_path / "run"), epochs=1, verbose=0)
    assert Run(result.run).config().train == str(data / "bars.npz")
    monkeypatch.chdir(tmp_path)
    assert api.evaluate(result.run)["test_accuracy"] == pytest.approx(result.test_accuracy)

    # Another test set needs only the run: not its training data, gone here.
    other_test = make_images(40, seed=6)
    other = write_npz(tmp_path / "other.npz", make_images(50, seed=5), other_test)
    (data / "bars.npz").unlink()
    scored = api.evaluate(result.run, str(other))
    assert scored["test_examples"] == 40
    assert scored["test_accuracy"] == accuracy(load_model(Run(result.run).model_file), other_test)
    with pytest.raises(DataError, match=r"shape \(14, 14, 1\); expected \(28, 28, 1\)"):
        small = make_images(10, seed=7)
        small = type(small)(small.x[:, :14, :14], small.y, small.class_names)
        api.evaluate(result.run, str(write_npz(tmp_path / "small.npz", small, small)))


# --- backup and history, hook by hook ---------------------------------------------------------


def test_trim_history_drops_later_and_torn_rows(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text(
        "epoch,elapsed_seconds,loss\n0,1.5,0.9\n1,3.0,0.5\n2,4.5,0.4\n3,6.0,0.3\n4,7"  # torn
    )
    assert trim_history(path, 2) == {"epoch": "1", "elapsed_seconds": "3.0", "loss": "0.5"}
    assert path.read_text() == "epoch,elapsed_seconds,loss\n0,1.5,0.9\n1,3.0,0.5\n"
    path.write_text("epoch,elapsed_seconds,loss\n0,1.5,0.9\n1,3")
    assert trim_history(path, 5)["elapsed_seconds"] == "1.5"
    path.write_text("epo")  # killed while writing the header
    assert trim_history(path, 1) == {} and not path.exists()


@pytest.mark.trains
def test_epoch_backup_keeps_one_complete_epoch(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)
    backup = EpochBackup(tmp_path / "backup")
    backup.set_model(model)
    backup.on_epoch_end(0)
    backup.on_epoch_end(1)
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == [
        "epoch-2.weights.h5",
        "state.json",
    ]
    copy = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    copy.compile(optimizer="adam", loss="mse")
    assert restore_backup(copy, tmp_path / "backup") == 2
    for a, b in zip(model.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(copy.optimizer.iterations) == int(model.optimizer.iterations) == 1
    assert restore_backup(copy, tmp_path / "none") == 0


def test_best_weights_survive_a_resume_and_are_the_ones_loaded(tmp_path):
    def dense_model(value: float) -> keras.Model:
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(optimizer="adam", loss="mse")
        model.optimizer.build(model.trainable_variables)  # as after a training step
        model.set_weights([np.full((3, 2), value), np.zeros(2)])
        return model

    backup_dir = tmp_path / "backup"
    first = BestWeights(backup_dir)
    first.set_model(dense_model(1.0))
    first.on_train_begin()
    first.on_epoch_end(0, {"val_loss": 0.5})  # the best epoch: weights 1.0
    first.model.set_weights([np.full((3, 2), 2.0), np.zeros(2)])
    first.on_epoch_end(1, {"val_loss": 0.7})

    resumed = BestWeights(backup_dir)  # a new process: only the folder remembers
    resumed.set_model(dense_model(3.0))
    resumed.on_train_begin()
    resumed.on_epoch_end(2, {"val_loss": 0.6})  # better than epoch 2, worse than epoch 1
    resumed.on_epoch_end(3, {"val_loss": float("nan")})
    last = EpochBackup(backup_dir)
    last.set_model(resumed.model)
    last.on_epoch_end(3)  # the last-epoch backup leaves the best one alone

    final = dense_model(0.0)
    assert load_best(final, backup_dir) == 1
    np.testing.assert_array_equal(final.get_weights()[0], np.full((3, 2), 1.0))
    assert load_best(final, tmp_path / "none") is None


# --- safe loading ----------------------------------------------------------------------------


@pytest.fixture
def lambda_run(tmp_path, trained_run) -> Path:
    """A copy of the trained run whose model carries a Lambda layer (arbitrary code)."""
    run = tmp_path / "lambda-run"
    shutil.copytree(trained_run, run)
    inputs = keras.Input((28, 28, 1), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0 - 1.0, output_shape=(28, 28, 1))(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    model.save(run / "model.keras")
    return run


def test_model_with_lambda_is_refused_unless_unsafe(lambda_run, capsys):
    with pytest.raises(
        RunError, match=r"carries Python code \(a Lambda layer\).*take unsafe=True, only"
    ):
        api.evaluate(lambda_run)
    model = load_model(Run(lambda_run).model_file, safe_mode=False)
    test = make_images(200, seed=2)  # the test split of `tiny_npz`, which the run names
    assert api.evaluate(lambda_run, unsafe=True)["test_accuracy"] == accuracy(model, test)
    result = run_main(capsys, "evaluate", lambda_run)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"convnet: error: {lambda_run / 'model.keras'}: the model carries Python code")
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda data: b"not a zip",
            r"damaged; a .keras model is a zip archive and this file of 9 ",
        ),
        (lambda data: data[: len(data) // 2], r"damaged; a .keras model is a zip archive"),
        (  # a whole zip whose weights are cut short
            lambda data: _rezipped(data, "model.weights.h5", lambda w: w[: len(w) // 2]),
            r"damaged or not a model this Keras can rebuild \(",
        ),
    ],
)
def test_a_damaged_model_says_damaged(tmp_path, trained_run, damage, message, capsys):
    run = tmp_path / "broken"
    shutil.copytree(trained_run, run)
    model = run / "model.keras"
    model.write_bytes(damage(model.read_bytes()))
    with pytest.raises(RunError, match=message):
        load_model(Run(run).model_file)
    result = run_main(capsys, "evaluate", run)
    assert result.returncode == 2
    assert re.search(message, result.stderr.strip().splitlines()[-1])
    assert json.loads((run / "manifest.json").read_text())["status"] == "complete"


def test_unsafe_model_keras_cannot_rebuild_is_one_line(lambda_run, capsys):
    """`--unsafe` on a Lambda whose Python code does not load here (bytecode of another Python,
    or damaged): one line, exit 2."""
    model = lambda_run / "model.keras"

    def garble_code(text: bytes) -> bytes:
        config = json.loads(text)
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "Lambda":
                layer["config"]["function"]["config"]["code"] = "AAAA"
        return json.dumps(config).encode()

    model.write_bytes(_rezipped(model.read_bytes(), "config.json", garble_code))
    images = make_images(2)
    np.save(lambda_run / "x.npy", images.x)
    result = run_main(capsys, "predict", lambda_run, lambda_run / "x.npy", "--unsafe")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a model this Keras can rebuild" in lines[0], lines


def _rezipped(data: bytes, member: str, change) -> bytes:
    """A copy of zip archive `data` with `member`'s bytes passed through `change`."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            content = source.read(info)
            target.writestr(info, change(content) if info.filename == member else content)
    return out.getvalue()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("preset: [unclosed", r"config.yaml: not valid YAML at line 1"),
        ("", r"config.yaml: empty; expected the settings of a run"),
        ("- seed\n- fast\n", r"config.yaml: expected a mapping of settings, got list"),
        ("preset: seed\nepochs: many\n", r"config.yaml: 'epochs' must be int"),
    ],
)
def test_an_invalid_run_config_is_one_line_on_every_command(
    tmp_path, trained_run, text, message, capsys
):
    from convnet.cli import main

    run = shutil.copytree(trained_run, tmp_path / "run")
    (run / "config.yaml").write_text(text)
    Run(run).write_json(
        "manifest.json", Run(run).read_json("manifest.json") | {"status": "interrupted"}
    )
    with pytest.raises(RunError, match=message):
        Run(run).config()
    np.save(tmp_path / "x.npy", make_images(1).x)
    for command in RUN_COMMANDS:
        argv = [arg.format(run=run, other=trained_run, tmp=tmp_path) for arg in command]
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(message, err[0]), (argv, err)
    assert not (tmp_path / "exported").exists() and not (tmp_path / "c.html").exists()


RUN_COMMANDS = [
    ["evaluate", "{run}"],
    ["predict", "{run}", "{tmp}/x.npy"],
    ["serve", "{run}", "--port", "0"],
    ["export", "{run}", "--out", "{tmp}/exported"],
    ["report", "{run}"],
    ["train", "--resume", "{run}"],
    ["compare", "{other}", "{run}", "--out", "{tmp}/c.html"],
]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("manifest.json", '{"status": "runn', r"manifest.json: damaged; not readable JSON"),
        ("manifest.json", "[1, 2]", r"manifest.json: expected a JSON object, got list"),
    ],
)
def test_a_damaged_json_file_of_a_run_is_one_line(
    tmp_path, trained_run, name, text, message, capsys
):
    from convnet.cli import main

    run = shutil.copytree(trained_run, tmp_path / "runs" / "run")
    (run / name).write_text(text)
    np.save(tmp_path / "x.npy", make_images(1).x)
    for command in (["evaluate", "{run}"], ["predict", "{run}", "{tmp}/x.npy"]):
        argv = [arg.format(run=run, tmp=tmp_path) for arg in command]
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(message, err[0]), (argv, err)
    shutil.copytree(trained_run, tmp_path / "runs" / "whole")
    assert main(["runs", str(tmp_path / "runs")]) == 0  # the others are still listed
    listed = capsys.readouterr().out
    assert re.search(r"runs/run +damaged", listed) and re.search(r"whole +complete", listed)


@pytest.mark.trains
def test_runs_without_out_go_side_by_side_under_runs(tmp_path, tiny_npz, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "an-earlier-run").mkdir(parents=True)
    result = api.train(train=str(tiny_npz), epochs=1, verbose=0)
    assert result.run.parent == Path("runs") and result.run.name.startswith("seed-")
    assert (result.run / "model.keras").is_file()


def test_a_run_of_a_preset_registered_elsewhere_reads_back(tmp_path, trained_run):
    run = Run(shutil.copytree(trained_run, tmp_path / "run"))
    settings = run.config().resolved() | {"preset": "registered-in-another-process"}
    write_yaml(run.path / "config.yaml", settings)
    assert run.config().recipe() == Run(trained_run).config().recipe()
    assert api.runs(tmp_path)[0]["status"] == "complete"
    assert api.evaluate(run.path)["test_examples"] == 200


# --- a disk that fills up mid-training ----------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 120 MB tmpfs of its own (a run needs 100 MB free to start), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=120m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if made.returncode:  # CI runs as root, where it must be tested
        skip_or_fail = pytest.fail if os.environ.get("CI") else pytest.skip
        skip_or_fail(f"cannot mount a small filesystem here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.trains
def test_a_disk_that_fills_up_mid_training_interrupts_the_run_cleanly(small_disk, tiny_npz, capsys):
    run = small_disk / "run"
    # Epochs enough to outlast the filling (a fraction of one) and the 300 steps `seed` learns in
    # (no under-training warning), no more: the resume trains the rest.
    args = ["--train", tiny_npz, "--epochs", "12", "--batch-size", "16", "--out", run]
    training = subprocess.Popen(
        [CONVNET, "train", *map(str, args)], stderr=subprocess.PIPE, text=True
    )
    history = run / "history.csv"
    while training.poll() is None and not (
        history.is_file() and len(history.read_text().splitlines()) > 1
    ):
        time.sleep(0.05)
    filler = small_disk / "filler"
    # Fill it whole: no room for a backup, nor for the manifest's atomic copy. The run writes
    # meanwhile.
    with filler.open("wb") as f, contextlib.suppress(OSError):
        while shutil.disk_usage(small_disk).free > 0:
            f.write(b"\0" * 2**16)
            f.flush()
    _, err = training.communicate(timeout=600)
    lines = err.strip().splitlines()
    assert training.returncode == 2, err
    assert len(lines) == 1 and re.search(
        rf"run: its disk is full \(.* MB free .*\); free at least \d+ MB there, then resume "
        rf"with: convnet train --resume {run}$",
        lines[0],
    ), lines
    assert Run(run).status() == "interrupted"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"  # the record says so too, not only `runs`
    assert not list(run.rglob(".tmp*")) and not list(run.rglob("*.tmp"))

    filler.unlink()  # then the resume, through the command line in this process
    resumed = run_main(capsys, "train", "--resume", run)
    assert resumed.returncode == 0, resumed.stderr
    assert Run(run).status() == "complete"
    assert len(history.read_text().strip().splitlines()) == 13  # header and 12 epochs, once each
