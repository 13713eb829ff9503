"""Careless and hostile input refused in one line, before it costs time, memory or a run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import CONVNET, make_images, run_cli, run_main, write_csv

import convnet
from convnet.data import load_source
from convnet.errors import ConfigError, DataError, RunError
from convnet.runs import list_runs


def peak_rss_mb(code: str) -> float:
    """The peak resident memory of a Python process running `code`, in MB: its VmHWM, which
    starts afresh at exec (ru_maxrss keeps the forking process's own peak)."""
    report = "import re\nprint(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])"
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"], capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[-1]) / 1024


def test_0_1_bitmaps_take_no_more_memory_than_the_same_in_0_255(tmp_path):
    rng = np.random.default_rng(0)
    bits = (rng.random((60_000, 28, 28)) < 0.2).astype(np.uint8)
    labels = rng.integers(0, 10, len(bits))
    np.savez(tmp_path / "bits.npz", x_train=bits, y_train=labels)
    np.savez(tmp_path / "pixels.npz", x_train=bits * 255, y_train=labels)
    read = "from convnet.data import load_source\nd = load_source({!r})['train']"
    scaled = peak_rss_mb(read.format(str(tmp_path / "bits.npz")))
    plain = peak_rss_mb(read.format(str(tmp_path / "pixels.npz")))
    assert scaled < plain * 1.2, (scaled, plain)  # 4x the data's size in float32, before
    assert np.array_equal(load_source(tmp_path / "bits.npz")["train"].x[..., 0], bits * 255)


def test_a_million_column_header_is_refused_at_once(tmp_path):
    wide = tmp_path / "wide.csv"
    columns = 1_000_001  # 1000x1000 pixels and a label: a square image, so only width says no
    wide.write_text(",".join(["label", *(f"p{i}" for i in range(columns - 1))]) + "\n1\n")
    started = time.perf_counter()
    done = subprocess.run(
        [CONVNET, "train", "--train", str(wide), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "over 262,145 columns; expected a label and at most 262,144 pixel" in done.stderr
    assert seconds < 10 and not (tmp_path / "run").exists()
    # The same refusal in a process of its own, measured: it took 3.5 GB and 17 s before.
    refused = f"from convnet.cli import main\nassert main(['train', '--train', {str(wide)!r}]) == 2"
    assert peak_rss_mb(refused) < 300


def test_one_class_and_impossible_class_weights_are_refused_before_training(tmp_path):
    one = make_images(100)
    one = one.take(one.y == one.y[0])
    with pytest.raises(DataError, match=r"holds one class \('bar\d'\); expected images of at"):
        convnet.train(train=(one.x, np.array(one.class_names)[one.y]), out=str(tmp_path / "a"))
    path = write_csv(tmp_path / "bars.csv", make_images(200))
    for weights, message in [
        ({"bar0": 1e308}, r"must be a number from 0 to 1e\+06. Received: 1e\+308"),
        ({"bar0": float("nan")}, r"must be a number from 0 to 1e\+06. Received: nan"),
        (dict.fromkeys(("bar0", "bar1", "bar2", "bar3"), 0), "every class weighs 0"),
    ]:
        spec = tmp_path / "weights.json"
        spec.write_text(json.dumps(weights))
        with pytest.raises(DataError, match=message):
            convnet.train(
                train=str(path),
                class_names="bar0,bar1,bar2,bar3",
                class_weight=str(spec),
                out=str(tmp_path / "b"),
            )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_callbacks_and_model_shapes_are_checked_before_anything_is_made(tmp_path):
    with pytest.raises(ConfigError, match=r"^callbacks\[1\] is a int; expected a keras.callbacks"):
        convnet.train(callbacks=[convnet_callback(), 1], out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=r"input_shape must be \(height, width, channels\)"):
        convnet.create_model("seed", (0, 28, 1), 10)
    with pytest.raises(ConfigError, match="images of 4x4 pixels are too small for preset 'seed'"):
        convnet.create_model("seed", (4, 4, 1), 10)
    with pytest.raises(ConfigError, match=r"num_classes must be an integer >= 2. Received: 1"):
        convnet.create_model("seed", (28, 28, 1), 1)


def convnet_callback():
    import keras

    return keras.callbacks.Callback()


@pytest.fixture
def mislabelled_run(tmp_path, trained_run):
    """A copy of a run whose manifest names 3 classes where its model has 4 outputs."""
    run = shutil.copytree(trained_run, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["data"]["class_names"] = ["a", "b", "c"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_class_names_that_do_not_match_the_model_are_one_line(mislabelled_run, tmp_path, capsys):
    image = tmp_path / "x.npy"
    np.save(image, make_images(1).x[0])
    message = "names 3 classes, but model.keras gives 4 outputs; the record does not match"
    # In this process, but `serve`: a server that failed to refuse would serve here for ever.
    predict = run_main(capsys, "predict", mislabelled_run, image)
    export = run_main(capsys, "export", mislabelled_run)
    serve = run_cli("serve", mislabelled_run, "--port", "0")  # refused as it loads
    for done in (predict, export, serve):
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert message in done.stderr
    with pytest.raises(RunError, match=message):
        convnet.load(mislabelled_run).predict(make_images(1).x)


def test_runs_lists_a_broken_config_or_a_truncated_model_as_damaged(tmp_path, trained_run):
    broken = shutil.copytree(trained_run, tmp_path / "runs" / "broken-config")
    (broken / "config.yaml").write_text("epochs: [unclosed\n")
    truncated = shutil.copytree(trained_run, tmp_path / "runs" / "truncated-model")
    data = (truncated / "model.keras").read_bytes()
    (truncated / "model.keras").write_bytes(data[: len(data) // 2])
    shutil.copytree(trained_run, tmp_path / "runs" / "whole")
    found = {row["run"].split("/")[-1]: row["status"] for row in list_runs(tmp_path / "runs")}
    assert found == {"broken-config": "damaged", "truncated-model": "damaged", "whole": "complete"}


def test_a_value_a_hair_past_255_is_named_as_it_is():
    x = np.zeros((2, 28, 28))
    x[1, 3, 4] = 255.0000001
    with pytest.raises(DataError, match=r"\(image 1 holds 255.0000001\)"):
        convnet.train(train=(x, [0, 1]), out="never")


def test_numbers_only_unicode_calls_digits_are_refused_in_one_line(tmp_path, tiny_npz):
    """`str.isdigit()` takes "²" and 5,000 digits, which `int()` then refuses with a traceback."""
    for value in ("\u00b2", "9" * 5000):
        port = run_cli("serve", tmp_path, "--port", value)
        assert port.returncode == 2 and "Traceback" not in port.stderr, port.stderr
        train = ["train", "--train", tiny_npz, "--out", tmp_path / "run"]
        processes = run_cli(*train, env={"CONVNET_NUM_PROCESSES": value})
        assert processes.returncode == 2 and processes.stderr.count("\n") == 1, processes.stderr
        assert "$CONVNET_NUM_PROCESSES must be an integer" in processes.stderr
