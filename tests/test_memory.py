"""Data handed over in Python (DataFrames, arrays) and the `Run` a notebook user holds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from conftest import CLASS_NAMES, CONVNET, make_images, run_main, write_csv
from PIL import Image

import convnet
from convnet.data import read_given
from convnet.data.csv import read_csv
from convnet.data.memory import read_memory
from convnet.errors import ConfigError, ConvnetError, DataError
from convnet.reports.compare import data_differences

TRAIN = make_images(300, seed=1)
TEST = make_images(100, seed=2)
NAMES = np.array(CLASS_NAMES)


def frame(data, library=pd):
    """`data` as the Kaggle CSVs read by pandas or polars: label, pixel1, ... pixel784."""
    pixels = data.x.reshape(len(data), -1)
    columns = {"label": data.y} | {f"pixel{i + 1}": pixels[:, i] for i in range(pixels.shape[1])}
    return library.DataFrame(columns)


def nullable(data) -> pd.DataFrame:
    """`data` as pandas reads the CSVs with `dtype_backend="numpy_nullable"`: Int64 columns."""
    return frame(data).astype("Int64")


@pytest.mark.parametrize(
    "make", [frame, lambda data: frame(data, pl), nullable], ids=["pandas", "polars", "nullable"]
)
def test_a_dataframe_reads_as_its_csv_does(tmp_path, make):
    from_file = read_csv(write_csv(tmp_path / "train.csv", TRAIN))
    given = read_memory(make(TRAIN), "train")
    assert np.array_equal(given.x, from_file.x) and np.array_equal(given.y, from_file.y)
    assert given.class_names == from_file.class_names and given.pixel_range == "0,255"


@pytest.mark.parametrize(
    "layout",
    [
        lambda x: x[..., 0],  # N x H x W
        lambda x: x,  # N x H x W x C
        lambda x: x.reshape(len(x), -1),  # N x H*W
    ],
    ids=["NHW", "NHWC", "N-HW"],
)
def test_array_layouts_give_the_same_images(layout):
    given = read_memory((layout(TRAIN.x), TRAIN.y), "train")
    assert given.x.shape == (300, 28, 28, 1) and np.array_equal(given.x, TRAIN.x)
    assert given.class_names == ("0", "1", "2", "3")


def test_colour_pixel_columns_and_string_labels():
    rgb = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    labels = np.array(["cat", "dog"] * 10)
    given = read_memory((rgb.reshape(20, -1), labels), "train")
    assert np.array_equal(given.x, rgb)
    assert given.class_names == ("cat", "dog") and list(given.y[:2]) == [0, 1]


def test_floats_in_0_1_are_scaled_and_the_range_recorded():
    given = read_memory((TRAIN.x / 255.0, TRAIN.y), "train")
    assert given.pixel_range == "0,1" and np.array_equal(given.x, TRAIN.x)


def test_a_test_set_is_read_in_the_training_range(tmp_path):
    config = convnet.load_config(None, {})
    dark = TEST.x.copy()
    dark[dark > 200] = 200  # its own range would still be 0-255; 0-1 is the training data's
    sets = read_given(config, {"train": (TRAIN.x / 255.0, TRAIN.y), "test": (dark / 255.0, TEST.y)})
    assert sets["test"].pixel_range == "0,1" and np.array_equal(sets["test"].x, dark)


BAD = {
    "rank": ((np.zeros((4, 28)), [0, 1, 2, 3]), r"^train: 28 pixel values per image"),
    "rank 5": ((np.zeros((2, 1, 28, 28, 1)), [0, 1]), r"^train: x has shape \(2, 1, 28, 28, 1\)"),
    "channels first": ((np.zeros((2, 1, 28, 28)), [0, 1]), r"channels first\? move them last"),
    "lengths": ((TRAIN.x[:10], TRAIN.y[:9]), r"^train: 10 images but labels of shape \(9,\)"),
    "one-hot": ((TRAIN.x[:4], np.eye(4)), r"one-hot labels\? pass y.argmax"),
    "nan": ((np.where(np.arange(784) == 7, np.nan, 0.5).reshape(1, 28, 28), [0]), "x\\[0, 0, 7\\]"),
    "range": (
        (np.full((4, 28, 28), 300), [0, 1, 2, 3]),
        r"holds values from 300 to 300 .* such as pixel_range='0,300'\.$",
    ),
    "fraction": ((np.full((2, 28, 28), 100.5), [0, 1]), r"from 100.5 to 100.5 \(image 0 holds"),
    "text": ((np.full((2, 28, 28), "a"), [0, 1]), r"^train x: holds <U1 values; expected numbers"),
    "label": ((TRAIN.x[:3], [0, 1.5, 2]), r"^train y\[1\] = 1.5 is not a whole number"),
    "negative": ((TRAIN.x[:3], [0, -1, 2]), r"^train y\[1\] = -1; expected a class index"),
    "no images": ((np.zeros((0, 28, 28)), []), r"with no images"),
}


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
def test_bad_arrays_are_one_short_typed_error_that_shows_no_data(bad):
    value, message = bad
    with pytest.raises(DataError, match=message) as caught:
        read_memory(value, "train")
    text = str(caught.value)
    assert "\n" not in text and len(text) < 300 and "0. 0. 0." not in text and "[[" not in text


def test_a_value_outside_a_given_range_is_named_by_its_index():
    x = np.zeros((4, 28, 28), dtype=np.int64)
    x[3, 5, 7] = 300
    with pytest.raises(DataError, match=r"^train x\[3, 5, 7\] = 300 is outside the pixel range"):
        read_memory((x, [0, 1, 2, 3]), "train", pixel_range="0,255")


def test_a_bad_dataframe_cell_is_named_by_row_and_column():
    bad = frame(TRAIN).astype("float64")
    bad.loc[4, "pixel9"] = np.nan
    with pytest.raises(DataError, match=r"^train row 4, column 'pixel9' = nan"):
        read_memory(bad, "train")
    missing = nullable(TRAIN)
    missing.loc[4, "pixel9"] = pd.NA
    with pytest.raises(DataError, match=r"^train row 4, column 'pixel9' = nan"):
        read_memory(missing, "train")
    text = frame(TRAIN).astype(object)
    text.loc[6, "pixel3"] = "dark grey, as noted by hand"
    with pytest.raises(DataError, match=r"^train row 6, column 'pixel3' = 'dark grey, as note…; "):
        read_memory(text, "train")
    with pytest.raises(DataError, match=r"^train: no label column; expected one named label"):
        read_memory(bad.rename(columns={"label": "kind"}), "train")


def test_train_refuses_bad_data_in_memory_before_making_a_run(tmp_path):
    tiny = (np.zeros((10, 3, 3)), np.arange(10) % 2)
    with pytest.raises(DataError, match="images of 3x3 pixels are too small"):
        convnet.train(train=tiny, out=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="train must be a path, a DataFrame or an"):
        convnet.train(train=42, out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def array_run(tmp_path_factory) -> convnet.Run:
    """A run trained on arrays in 0-1 with string labels, tested on a DataFrame."""
    out = tmp_path_factory.mktemp("memory") / "run"
    test = frame(TEST).assign(label=NAMES[TEST.y])
    return convnet.train(
        train=(TRAIN.x[..., 0] / 255.0, NAMES[TRAIN.y]),
        test=test.assign(**{c: test[c] / 255.0 for c in test.columns[1:]}),
        epochs=2,
        batch_size=32,
        out=str(out),
        verbose=0,
    )


@pytest.mark.trains
def test_a_run_trained_in_memory_keeps_its_data_and_reads_like_a_file_run(
    array_run, tmp_path, capsys
):
    assert isinstance(array_run, convnet.Run) and array_run.test_accuracy > 0.9
    config = array_run.config
    assert config.pixel_range == "0,1"
    assert Path(config.train) == array_run.path / "data" / "train.npz"
    assert Path(config.test) == array_run.path / "data" / "test.npz"
    manifest = array_run.manifest
    # The folder moved (a copy: the fixture is shared) still reads its own data.
    moved = Path(shutil.copytree(array_run.path, tmp_path / "moved"))
    assert "train: data/train.npz" in (moved / "config.yaml").read_text()
    again = convnet.load(moved)
    assert Path(again.config.test) == moved / "data" / "test.npz"
    assert run_main(capsys, "report", moved).returncode == 0
    assert again.class_names == CLASS_NAMES
    evaluated = again.evaluate()  # the run's own test set, read back from the run folder
    assert evaluated["test_data"] == str(moved / "data" / "test.npz")  # a whole file, no ":train"
    assert evaluated["test_accuracy"] == pytest.approx(array_run.test_accuracy)
    assert evaluated["test_loss"] == pytest.approx(array_run.test_loss, rel=1e-5)
    train, _ = convnet.runs.Run(moved).load_data()
    assert train.checksum() == manifest["data"]["train"]["sha256"]
    history = again.history
    assert list(history["epoch"]) == [1, 2] and "val_accuracy" in history.columns


@pytest.mark.trains
def test_runs_on_the_same_arrays_compare_as_the_same_data(array_run, tmp_path):
    twin = convnet.train(
        train=(TRAIN.x[..., 0] / 255.0, NAMES[TRAIN.y]),
        test=(TEST.x / 255.0, NAMES[TEST.y]),
        epochs=1,
        batch_size=32,
        out=str(tmp_path / "twin"),
        verbose=0,
    )
    assert data_differences([array_run.path, twin.path]) == []
    page = convnet.compare([array_run, twin], tmp_path / "compare.html")
    assert page.is_file() and "<iframe srcdoc=" in page._repr_html_()


@pytest.mark.trains
def test_two_calibrated_runs_in_one_session_log_no_retracing_warning(tmp_path, caplog):
    for name in ("one", "two"):  # `fast` calibrates over its views: a trace each, by design
        run = convnet.train(
            preset="fast", train=(TRAIN.x, TRAIN.y), epochs=1, out=str(tmp_path / name), verbose=0
        )
        for count in range(1, 5):
            run.predict(TEST.x[:count])
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]


@pytest.mark.trains
def test_run_predict_matches_convnet_predict(array_run, tmp_path, capsys):
    files = []
    for i in range(5):
        files.append(tmp_path / f"item{i}.png")
        Image.fromarray(TEST.x[i, ..., 0]).save(files[-1])
    from_cli = json.loads(run_main(capsys, "predict", array_run.path, *files, "--json").stdout)
    from_paths = array_run.predict(files)
    from_arrays = array_run.predict(TEST.x[:5, ..., 0] / 255.0)  # the training range, 0-1
    from_images = array_run.predict([Image.open(f) for f in files])
    assert from_paths.shape == (5, 4) and np.allclose(from_paths, from_arrays, atol=1e-6)
    assert np.allclose(from_images, from_arrays, atol=1e-6)
    pixels = pd.DataFrame(TEST.x[:5].reshape(5, -1) / 255.0).astype("Float64")  # nullable
    assert np.allclose(array_run.predict(pixels), from_arrays, atol=1e-6)
    for row, probabilities in zip(from_cli, from_paths, strict=True):
        assert row["class"] == CLASS_NAMES[probabilities.argmax()]
        assert row["probability"] == pytest.approx(float(probabilities.max()), abs=1e-5)
    (one,) = convnet.predict(array_run.path, str(files[0]))  # a path, not a list of letters
    assert one["class"] == from_cli[0]["class"]
    expected = r"^x: array of shape \(5, 5\); expected images of shape \(28, 28, 1\)"
    with pytest.raises(DataError, match=expected):
        array_run.predict(np.zeros((5, 5)))
    expected = r"^x: array of shape \(2, 32, 32\); expected images of shape \(28, 28, 1\)\.$"
    with pytest.raises(DataError, match=expected):  # the shape given, no channel axis added
        array_run.predict(np.zeros((2, 32, 32)))
    with pytest.raises(DataError, match=r"^x: an array of shape \(0, 28, 28\), with no images\.$"):
        array_run.predict(np.zeros((0, 28, 28)))
    with pytest.raises(ConfigError, match=r"^batch_size must be an integer >= 1\. Received: 0\.$"):
        array_run.predict(TEST.x[:1] / 255.0, batch_size=0)


@pytest.mark.trains
def test_run_evaluate_on_arrays_and_frames(array_run):
    on_arrays = array_run.evaluate(TEST.x / 255.0, TEST.y)  # integer labels index the classes
    on_names = array_run.evaluate(TEST.x / 255.0, NAMES[TEST.y])
    assert on_arrays["test_accuracy"] == on_names["test_accuracy"] == array_run.test_accuracy
    with pytest.raises(DataError, match="class 'cat' is not one of the training data's 4"):
        array_run.evaluate(TEST.x[:2] / 255.0, ["cat", "bar0"])


@pytest.mark.trains
def test_every_api_error_is_typed_and_never_exits(tmp_path, array_run):
    calls = [
        lambda: convnet.load(tmp_path),
        lambda: convnet.train(train=(TRAIN.x, TRAIN.y[:3]), out=str(tmp_path / "r")),
        lambda: array_run.predict("missing.png"),
        lambda: array_run.predict({"not": "images"}),
        lambda: convnet.train(config=str(tmp_path / "missing.yaml")),
    ]
    for call in calls:
        with pytest.raises(ConvnetError):
            call()


@pytest.mark.trains
def test_an_array_run_killed_with_sigkill_resumes_to_the_end(tmp_path):
    run = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from conftest import make_images
        import convnet
        data = make_images(420, seed=3)
        convnet.train(train=(data.x / 255.0, data.y), epochs=4, batch_size=8, out={str(run)!r},
                      verbose=0)
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    from test_resume import wait_for_epochs

    wait_for_epochs(process, run, 1)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"
    assert (run / "data" / "train.npz").is_file() and not (run / "model.keras").exists()
    resumed = subprocess.run(
        [CONVNET, "train", "--resume", str(run), "--json"], capture_output=True, text=True, env=env
    )
    assert resumed.returncode == 0, resumed.stderr
    done = convnet.load(run)
    assert done.manifest["status"] == "complete" and len(done.history) == 4
    assert done.config.pixel_range == "0,1" and done.test_accuracy > 0.9


def test_lr_find_takes_data_in_memory_and_config_errors_show_no_data(tmp_path):
    found = convnet.lr_find(
        train=(TRAIN.x / 255.0, TRAIN.y), steps=5, batch_size=32, plot=tmp_path / "lr.png"
    )
    assert 2 <= len(found["learning_rates"]) <= 5 and (tmp_path / "lr.png").is_file()
    with pytest.raises(ConfigError, match=r"'limit' must be int or NoneType. Received: a numpy"):
        convnet.train(train=(TRAIN.x, TRAIN.y), limit=np.arange(5000), out=str(tmp_path / "r"))
