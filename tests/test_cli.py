"""The real `convnet` binary: outputs, JSON, and one-line errors with exit code 2."""

from __future__ import annotations

import csv
import gc
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images, run_cli, run_main, write_csv, write_npz
from PIL import Image

from convnet import api


def assert_user_error(result, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("convnet: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr


def test_presets_and_summary(capsys):
    from convnet.models.registry import get_preset, list_presets

    presets = run_cli("presets")
    assert presets.returncode == 0
    listed = {line.split()[0]: line.split(None, 1)[1] for line in presets.stdout.splitlines()}
    assert listed == {name: get_preset(name).description for name in list_presets()}
    assert {"seed", "fast", "best"} <= set(listed)
    summary = run_main(capsys, "summary", "seed")  # Keras' summary: no process needed
    assert summary.returncode == 0 and "Total params: 93,322" in summary.stdout


def test_unknown_preset_is_a_user_error(tmp_path):
    result = run_cli("train", "--preset", "nope", "--out", tmp_path / "run")
    assert_user_error(result, "Unknown preset 'nope'. Known presets:")


def test_bad_csv_is_one_line_exit_2_and_leaves_no_run(tmp_path):
    bad = write_csv(tmp_path / "bad.csv", make_images(5))
    lines = bad.read_text().splitlines()
    cells = lines[2].split(",")
    cells[1] = "x0"
    lines[2] = ",".join(cells)
    bad.write_text("\n".join(lines) + "\n")
    result = run_cli("train", "--train", bad, "--test", bad, "--out", tmp_path / "run")
    assert_user_error(result, "bad.csv: line 3, column 'pixel1': 'x0' is not a pixel value")
    assert not (tmp_path / "run").exists()


def test_run_folder_that_is_not_empty_is_refused(tmp_path, tiny_npz):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    result = run_cli("train", "--train", tiny_npz, "--out", tmp_path / "run")
    assert_user_error(result, "already exists and is not empty")
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


@pytest.mark.trains
def test_train_json_then_evaluate_and_predict(tmp_path, tiny_npz, capsys):
    run = tmp_path / "run"
    launched = time.perf_counter()
    result = run_cli(
        "train",
        "--train",
        tiny_npz,
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--flip",
        "--shift-tta",
        "1",
        "--json",
        "--out",
        run,
    )
    assert result.returncode == 0, result.stderr
    # TensorFlow's C++ start-up lines (oneDNN, absl, CUDA) are hidden without -v.
    assert not re.search(r"oneDNN|absl|cuda|^[IWE]\d{4} ", result.stderr, re.M), result.stderr
    summary = json.loads(result.stdout)
    assert set(summary) == {"run", "test_loss", "test_accuracy", "wall_seconds"}
    assert summary["test_accuracy"] > 0.9  # four bar classes are easy
    # From the process's start, imports included, to the start of training, and to the end of
    # its first step: inside epoch 1.
    process_seconds = time.perf_counter() - launched
    metrics = json.loads((run / "metrics.json").read_text())
    with open(run / "history.csv") as history:
        first_epoch = float(next(csv.DictReader(history))["epoch_seconds"])
    later_epochs = metrics["fit_seconds"] - first_epoch
    assert process_seconds - summary["wall_seconds"] < metrics["startup_seconds"]
    assert metrics["startup_seconds"] < metrics["first_step_seconds"]
    assert metrics["startup_seconds"] + metrics["fit_seconds"] < process_seconds
    assert metrics["first_step_seconds"] < process_seconds - later_epochs
    for name in (
        "config.yaml",
        "model.keras",
        "history.csv",
        "metrics.json",
        "manifest.json",
        "plots/learning_curves.png",
    ):
        assert (run / name).is_file(), name
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["seed"] == 42
    assert "--json" in manifest["command"] and len(manifest["data"]["train"]["sha256"]) == 64
    # Times depend on the CPU more than on anything else: the manifest names it as Linux does.
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    assert manifest["machine"]["cpu"] == cpu

    # The binary trained; the other commands run in this process (the exit is tested above).
    evaluated = run_main(capsys, "evaluate", run, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert metrics["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert metrics["tta_views"] == 18  # flip x a 3x3 grid of 1-pixel shifts
    one_pass = run_main(capsys, "evaluate", run, "--no-tta", "--json")
    assert one_pass.returncode == 0, one_pass.stderr
    assert json.loads(one_pass.stdout)["tta_views"] == 1
    assert json.loads(one_pass.stdout)["test_loss"] != pytest.approx(metrics["test_loss"])
    saved = json.loads((run / "metrics.json").read_text())  # still the run's own scoring
    assert (saved["tta_views"], saved["test_loss"]) == (18, pytest.approx(metrics["test_loss"]))

    images = make_images(3, seed=9)
    png = tmp_path / "one.png"
    Image.fromarray(images.x[0, :, :, 0]).save(png)
    np.save(tmp_path / "two.npy", images.x[1:, :, :, 0])
    predicted = run_main(
        capsys, "predict", run, png, tmp_path / "two.npy", "--top-k", "2", "--json"
    )
    assert predicted.returncode == 0, predicted.stderr
    results = json.loads(predicted.stdout)
    assert [r["file"] for r in results] == [
        str(png),
        f"{tmp_path}/two.npy[0]",
        f"{tmp_path}/two.npy[1]",
    ]
    assert [r["class"] for r in results] == [f"bar{k}" for k in images.y]
    assert all(len(r["top"]) == 2 and r["top"][0]["class"] == r["class"] for r in results)

    import keras

    untransformed = run_main(capsys, "predict", run, tmp_path / "two.npy", "--no-tta", "--json")
    assert untransformed.returncode == 0, untransformed.stderr
    model = keras.saving.load_model(run / "model.keras")
    expected = model.predict(images.x[1:], verbose=0).max(axis=1)
    found = [r["probability"] for r in json.loads(untransformed.stdout)]
    np.testing.assert_allclose(found, expected, rtol=1e-4)
    assert found != pytest.approx([r["probability"] for r in results[1:]])


def test_predict_refuses_unknown_file_types(tmp_path, trained_run):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    result = run_cli("predict", trained_run, path)
    assert_user_error(result, "notes.txt: unsupported file type '.txt'")


def test_predict_top_k_below_one_is_a_user_error(tmp_path, trained_run, tiny):
    np.save(tmp_path / "one.npy", tiny.x[0])
    result = run_cli("predict", trained_run, tmp_path / "one.npy", "--top-k", "0")
    assert_user_error(result, "--top-k 0: expected a whole number >= 1.")


def test_evaluate_a_folder_that_is_not_a_run(tmp_path):
    assert_user_error(run_cli("evaluate", tmp_path), "not a run folder; expected config.yaml")


def csv_with_label(path, label: str):
    """A 6-image CSV labelled 0, but for its third image (line 4), labelled `label`."""
    images = make_images(6)
    write_csv(path, type(images)(images.x, images.y * 0, images.class_names))
    lines = path.read_text().splitlines()
    lines[3] = label + lines[3][lines[3].index(",") :]
    path.write_text("\n".join(lines) + "\n")
    return path


def written(path, text: str):
    path.write_text(text)
    return path


def empty_class_folder(root):
    (root / "b").mkdir(parents=True)
    (root / "a").mkdir()
    Image.fromarray(make_images(1).x[0, ..., 0]).save(root / "a" / "0.png")
    return root


# Each: the arguments after `convnet`, made in a folder, and the one error line expected.
USER_ERRORS = {
    "missing training file": (
        lambda d: ["train", "--train", d / "missing.csv"],
        "missing.csv: file not found.",
    ),
    "missing config file": (
        lambda d: ["train", "--config", d / "missing.yaml"],
        "missing.yaml: config file not found.",
    ),
    "config that is not YAML": (
        lambda d: ["train", "--config", written(d / "bad.yaml", "epochs: [1,\n")],
        "bad.yaml: not valid YAML at line 2, column 1: expected the node content, but found "
        "'<stream end>'.",
    ),
    "negative label": (
        lambda d: ["train", "--train", csv_with_label(d / "neg.csv", "-1")],
        "neg.csv: line 4, column 'label': label -1 is negative; expected a class index from 0.",
    ),
    "fractional label": (
        lambda d: ["train", "--train", csv_with_label(d / "frac.csv", "1.5")],
        "frac.csv: line 4, column 'label': label '1.5' is not a whole number; expected integer "
        "class indexes or class names.",
    ),
    "label beyond the class names": (
        lambda d: ["train", "--train", csv_with_label(d / "t.csv", "3"), "--class-names", "a,b,c"],
        "t.csv: line 4, column 'label': label 3 is out of range; expected 0 to 2.",
    ),
    "--out that is a file": (
        lambda d: ["train", "--train", written(d / "t.csv", ""), "--out", written(d / "f", "")],
        "f: a file, not a folder; choose another --out for the run.",
    ),
    "empty class folder": (
        lambda d: ["train", "--train", empty_class_folder(d / "photos")],
        "photos/b: no image files (.bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp).",
    ),
}


@pytest.mark.parametrize("case", USER_ERRORS)
def test_user_errors_name_the_file_and_leave_no_run(tmp_path, capsys, case):
    from convnet.cli import main

    make_args, message = USER_ERRORS[case]
    data = tmp_path / "data"
    data.mkdir()
    args = [str(a) for a in make_args(data)]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "run")]
    assert main(args) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors[-1] == f"convnet: error: {data}/{message}"
    assert "Traceback" not in "\n".join(errors)
    assert not (tmp_path / "run").exists()


def test_resume_is_refused_while_training_runs_or_after_the_data_changed(
    tmp_path, trained_run, capsys
):
    import os

    from convnet.cli import main
    from convnet.files import write_yaml
    from convnet.runs import Run

    run = Run(shutil.copytree(trained_run, tmp_path / "run"))
    manifest = run.read_json("manifest.json")
    alive = {"pid": os.getpid(), "hostname": platform.node()}
    run.write_json("manifest.json", manifest | {"status": "running", "process": alive})
    assert main(["train", "--resume", str(run.path)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"convnet: error: {run.path}: still being trained by process {os.getpid()}; stop it first."
    )

    run.write_json("manifest.json", manifest | {"status": "interrupted"})
    changed = write_npz(tmp_path / "bars.npz", make_images(600, seed=9), make_images(200, seed=2))
    write_yaml(run.path / "config.yaml", run.config().resolved() | {"train": str(changed)})
    assert main(["train", "--resume", str(run.path)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"convnet: error: {run.path}: the training data ({changed}:train) changed since the run "
        "began; start a new run instead."
    )
    assert run.read_json("manifest.json")["status"] == "interrupted"  # left as it was


def test_predict_names_a_missing_file_and_a_folder_without_images(tmp_path, trained_run, capsys):
    from convnet.cli import main

    write_csv(tmp_path / "small.csv", make_images(3, side=14))  # named files only are read
    for path, message in (
        (tmp_path / "missing.png", "file not found."),
        (tmp_path, "no image files; expected image, .npy or .csv files or folders of images."),
    ):
        assert main(["predict", str(trained_run), str(path)]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"convnet: error: {path}: {message}"
        )


def test_ctrl_c_outside_training_says_interrupted(monkeypatch, capsys):
    from convnet.cli import main

    def interrupted(pattern="*"):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "list_presets", interrupted)
    assert main(["presets"]) == 130
    assert capsys.readouterr().err == "convnet: interrupted\n"


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_serve_refuses_a_port_that_is_not_one(port, capsys):
    from convnet.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["serve", "some-run", "--port", port])
    assert exited.value.code == 2
    assert f"argument --port: '{port}' is not a port number; expected 0 to 65535" in (
        capsys.readouterr().err
    )


def test_serve_on_a_port_in_use_is_a_user_error(trained_run, capsys):
    import socket

    from convnet.cli import main

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", str(trained_run), "--port", str(port)]) == 2
    assert capsys.readouterr().err == (
        f"convnet: error: cannot listen on 127.0.0.1:{port} (Address already in use); pass "
        "another --port or --host.\n"
    )


def test_a_command_that_loaded_keras_finishes_its_threads_before_it_exits(
    tmp_path, trained_run, private_cache
):
    """The console script exits without the interpreter's teardown once a framework is loaded;
    the parse cache's writer, a thread the command leaves running, still completes its entry."""
    test = write_csv(tmp_path / "test.csv", make_images(50, seed=3))
    result = run_cli("evaluate", trained_run, "--test", test, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["test_examples"] == 50
    (entry,) = (private_cache / "convnet" / "parsed").iterdir()
    with np.load(entry) as cached:
        assert len(cached["x"]) == 50


# Run in a fresh process: which libraries a command imported, then whether Keras' scikit-learn
# wrapper is whole and whether it takes DataFrames; then whether the import's objects were frozen
# out of the garbage collector's scans, only once, and the collector is on. argv: the run folder,
# then "cli" (a command, as the console script runs it) or "python" (convnet used from Python).
IMPORTED = """
import gc, sys
from convnet import framework
if sys.argv[2] == "cli":
    from convnet.cli.entry import main
    assert main(["evaluate", sys.argv[1], "--json"]) == 0
else:
    import convnet
    convnet.load(sys.argv[1])
extras = [name for name in framework.KERAS_EXTRAS if name in sys.modules]
frozen = gc.get_freeze_count()
made = [[] for _ in range(1000)]  # frozen by a second freeze, they would add 1,000
framework.load()
from keras.src.trainers.data_adapters import array_slicing
from keras.wrappers import SKLearnClassifier
from sklearn.base import BaseEstimator
print(extras, issubclass(SKLearnClassifier, BaseEstimator), array_slicing.pandas is not None,
      frozen > 100_000, gc.get_freeze_count() <= frozen, gc.isenabled())
"""


@pytest.mark.parametrize(
    ("caller", "expected"),
    [("cli", "[] False False True True True"), ("python", "True True False True True")],
)
def test_commands_import_keras_lean_and_python_gets_it_whole(trained_run, caller, expected):
    """A command imports Keras without scikit-learn, matplotlib, pandas and IPython, which Keras
    imports only for features convnet does not use, and freezes what the import made out of the
    collector's scans; convnet used from Python leaves the user's Keras whole (its scikit-learn
    wrapper works, and it takes DataFrames) and the user's objects to the collector."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORTED, str(trained_run), caller],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].endswith(expected)


def test_recipe_flags_say_what_they_mean_and_each_presets_default():
    result = run_cli("train", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps the help to the terminal's width
    assert "--epochs N passes over the training data; with a time budget, the most" in text
    assert "(seed 15, fast 5, best 24)" in text
    assert "--learning-rate X peak learning rate (auto: the optimizer's default) " in text
    assert "(seed auto, fast 0.004, best 0.003)" in text
    # A default every preset shares is said once: `seed` takes no --width at all.
    assert "--width X a factor on every convolution's filters (fast and best) (default 1)" in text
    assert "recipe: " not in text  # the old help, the field's name and nothing more


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_version_prints_the_version_and_the_backend_it_would_use(backend):
    from importlib.metadata import version

    result = run_cli("--version", env={"KERAS_BACKEND": backend})
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"convnet {version('convnet')} (Keras backend: {backend})\n"


def test_dash_v_shows_the_frameworks_start_up_lines():
    """TensorFlow's C++ start-up lines (absl's, oneDNN's) that every command hides without -v
    (test_train_json_then_evaluate_and_predict); even with TF_CPP_MIN_LOG_LEVEL=2 set."""
    result = run_cli("-v", "summary", "seed", env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr
    assert "Total params: 93,322" in result.stdout
    assert re.search(r"oneDNN|absl|^[IWE]\d{4} ", result.stderr, re.M), result.stderr


def test_python_dash_m_convnet_is_the_command():
    result = subprocess.run(
        [sys.executable, "-m", "convnet", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.startswith("convnet ")


@pytest.mark.parametrize(
    ("words", "expected"),
    [(["convnet", "tr"], {"train"}), (["convnet", "train", "--pre"], {"--preset", "--precision"})],
)
def test_bash_completion_completes_commands_and_flags(tmp_path, words, expected):
    script = run_cli("--print-completion", "bash")
    assert script.returncode == 0
    (tmp_path / "convnet.bash").write_text(script.stdout)
    shell = (
        f"source {tmp_path / 'convnet.bash'}; COMP_WORDS=({' '.join(words)}); "
        f'COMP_CWORD={len(words) - 1}; _shtab_convnet; echo "${{COMPREPLY[@]}}"'
    )
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60)
    assert set(done.stdout.split()) == expected, done.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_that_lands_in_a_gc_callback_still_stops_the_command(signum):
    """Python prints and drops an exception raised in a garbage collector's callback (JAX
    registers one) or a weak reference's: a SIGTERM that landed there let `convnet predict` run
    to the end (CI). The signal now stops the command once the callback is done."""
    from convnet.cli.entry import _TerminateAsInterrupt

    landed = []

    def callback(phase, info):
        if phase == "start" and not landed:
            landed.append(True)
            os.kill(os.getpid(), signum)
            for _ in range(10_000):  # Python runs the signal's handler here, in the callback
                pass

    gc.callbacks.append(callback)
    try:
        with pytest.raises(KeyboardInterrupt), _TerminateAsInterrupt() as terminate:
            gc.collect()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        gc.callbacks.remove(callback)
    assert landed and terminate.received == (signum == signal.SIGTERM)


def test_the_quick_exit_waits_for_threads_and_not_for_a_thread_pool_left_idle():
    """The console script's exit skips the interpreter's teardown once a framework is loaded,
    but waits for the threads still working (the parse cache's writer, say: here one that
    writes half a second later). MLflow leaves its artifact uploads' thread pool idle after a
    run: an exit that joined every thread waited on that pool's worker for ever."""
    code = (
        "import concurrent.futures, sys, threading, time, types\n"
        "sys.modules['jax'] = types.ModuleType('jax')  # as if loaded: the quick exit\n"
        "from convnet.cli import entry\n"
        "pool = concurrent.futures.ThreadPoolExecutor(1)\n"
        "pool.submit(print, 'uploaded').result()\n"
        "def late():\n"
        "    time.sleep(0.5)\n"
        "    print('written', flush=True)\n"
        "threading.Thread(target=late).start()\n"
        "entry.main = lambda: 3\n"
        "entry.run()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (3, "uploaded\nwritten\n"), done.stderr[-2000:]
