"""Data bigger than memory: images left in their files (`convnet.data.streamed`), split by index,
fed a batch at a time, the same batches as in memory, after a resume, and shard by shard."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytest
from conftest import CONVNET, make_images, run_cli, write_csv
from PIL import Image
from record_feed import read_log
from test_data import write_idx
from test_distributed import free_port
from test_resume import kill, wait_for_epochs

from convnet.config import make_config
from convnet.data import load_source, load_training_data, streamed
from convnet.data.dataset import Dataset
from convnet.data.streamed import STREAM_BYTES, ImageFile, StreamedImages, streams
from convnet.errors import DataError
from convnet.training import feed

RECORD_FEED = Path(__file__).with_name("record_feed.py")
needs_jax = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="the jax extra is missing: pip install .[jax]"
)


def write_classes(folder: Path, data: Dataset) -> Path:
    """`data` as a folder of `<class>.npy` files of N x H*W rows, Quick, Draw!'s layout."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(data.class_names):
        rows = data.x[data.y == index]
        np.save(folder / f"{name}.npy", rows.reshape(len(rows), -1))
    return folder


@pytest.fixture(scope="module")
def bars(tmp_path_factory) -> Path:
    """600 images of four classes as a per-class .npy folder: 480 to train on once 20% is held
    out to test on."""
    return write_classes(tmp_path_factory.mktemp("bars") / "bars", make_images(600, seed=1))


def loaded(settings: dict):
    with warnings.catch_warnings():  # the held-out test set is announced
        warnings.simplefilter("ignore")
        return load_training_data(make_config(settings))


# --- reading -------------------------------------------------------------------------------------


def test_streamed_images_index_like_the_array_they_stand_for(tmp_path):
    whole = np.arange(11 * 16, dtype=np.uint8).reshape(11, 4, 4, 1)
    first, second = tmp_path / "a.bin", tmp_path / "b.bin"
    first.write_bytes(b"header" + whole[:4].tobytes())
    second.write_bytes(b"longer header" + whole[4:].tobytes())
    images = StreamedImages([ImageFile(str(first), 6, 4), ImageFile(str(second), 13, 7)], (4, 4, 1))
    assert images.shape == (11, 4, 4, 1) and len(images) == 11 and images.nbytes == whole.nbytes
    mask = np.arange(11) % 3 == 0
    for key in (3, -1, slice(2, 9, 3), [7, 0, 7, 5], np.array([10, 1]), mask, (slice(None), 1)):
        np.testing.assert_array_equal(images[key], whole[key])
    view = images.select(np.array([9, 2, 5, 4, 3]))  # nothing read until indexed
    assert view.rows().tolist() == [9, 2, 5, 4, 3]
    np.testing.assert_array_equal(view.select(slice(1, 4))[::-1], whole[[4, 5, 2]])
    np.testing.assert_array_equal(np.asarray(view), whole[[9, 2, 5, 4, 3]])
    with pytest.raises(IndexError, match="out of range for 5 images"):
        view[5]
    second.write_bytes(b"longer header" + whole[4:6].tobytes())  # cut short once opened
    with pytest.raises(DataError, match=r"b.bin: the file ends before byte 77; it was cut short"):
        images[8]


@pytest.mark.parametrize("kind", ["npy folder", "raw IDX", "NPZ stored"])
def test_streamed_and_in_memory_reads_agree(tmp_path, kind):
    data = make_images(60, seed=3)
    if kind == "npy folder":
        path = write_classes(tmp_path / "bars", data)
    elif kind == "raw IDX":
        path = write_idx(tmp_path / "train-images-idx3-ubyte", data.x[..., 0])
        write_idx(tmp_path / "train-labels-idx1-ubyte", data.y)
    else:
        path = tmp_path / "bars.npz"
        np.savez(path, x_train=data.x, y_train=data.y, x_test=data.x[:9], y_test=data.y[:9])
    for limit in (None, 25):
        streamed_splits = load_source(path, limit=limit, stream=True)
        in_memory = load_source(path, limit=limit, stream=False)
        assert streamed_splits.keys() == in_memory.keys()
        for split, read in streamed_splits.items():
            kept = in_memory[split]
            assert (read.feed, kept.feed) == ("streamed", "memory")
            assert isinstance(read.x, StreamedImages) and len(read) == len(kept)
            np.testing.assert_array_equal(np.asarray(read.x), kept.x)
            np.testing.assert_array_equal(read.y, kept.y)
            assert read.checksum() == kept.checksum()
            assert (read.class_names, read.pixel_range) == (kept.class_names, kept.pixel_range)


def test_sources_that_cannot_stream_are_refused_with_stream(tmp_path):
    data = make_images(20)
    images = write_idx(tmp_path / "train-images-idx3-ubyte.gz", data.x[..., 0], compress=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", data.y, compress=True)
    np.savez_compressed(tmp_path / "packed.npz", x_train=data.x, y_train=data.y)
    np.savez(tmp_path / "floats.npz", x_train=data.x / 255, y_train=data.y)
    (tmp_path / "pngs" / "a").mkdir(parents=True)
    Image.fromarray(data.x[0, :, :, 0]).save(tmp_path / "pngs" / "a" / "0.png")
    tail = (
        "so it cannot be streamed (per-class .npy folders, raw IDX files and NPZ archives stored "
        "uncompressed can); drop stream=True."  # in Python's terms: load_source is called
    )
    for path, why in [
        (write_csv(tmp_path / "t.csv", data), "a CSV file holds its pixels as text"),
        (images, "a gzipped IDX file holds its images compressed"),
        (
            tmp_path / "packed.npz",
            "'x_train' is compressed in the archive (np.savez stores arrays uncompressed)",
        ),
        (tmp_path / "floats.npz", "'x_train' holds float64, not uint8 rows"),
        (tmp_path / "pngs", "a folder of image files holds them compressed (PNG, JPEG)"),
    ]:
        with pytest.raises(DataError) as refused:
            load_source(path, stream=True)
        assert str(refused.value) == f"{path}: {why}, {tail}"
        assert load_source(path)["train"].feed == "memory"  # unasked, they are read in memory


def test_small_uint8_values_are_not_streamed_unscaled(tmp_path):
    bitmaps = (make_images(30).x > 127).astype(np.uint8)  # 0/1 values
    path = write_idx(tmp_path / "bits-images-idx3-ubyte", bitmaps[..., 0])
    write_idx(tmp_path / "bits-labels-idx1-ubyte", np.zeros(30, np.uint8))
    with pytest.raises(
        DataError, match=r"holds values 0-1, which streamed pixels cannot be scaled"
    ):
        load_source(path, stream=True)
    taken = load_source(path, stream=True, pixel_range="0,255")["train"]
    assert taken.feed == "streamed" and taken.x[0].max() == 1


def test_streaming_is_chosen_by_size_unless_set(tmp_path, monkeypatch):
    monkeypatch.setattr(streamed, "available_memory", lambda: None)
    assert streams(STREAM_BYTES + 1, None) and not streams(STREAM_BYTES, None)
    assert streams(1, True) and not streams(10 * STREAM_BYTES, False)
    monkeypatch.setattr(streamed, "available_memory", lambda: 2**30)  # 1 GiB free: a quarter
    assert streams(2**28 + 1, None) and not streams(2**28, None)
    folder = write_classes(tmp_path / "bars", make_images(40))
    monkeypatch.setattr(streamed, "STREAM_BYTES", 40 * 784 - 1)
    assert load_source(folder)["train"].feed == "streamed"
    assert load_source(folder, limit=39)["train"].feed == "memory"  # the rows read count


def test_splits_limit_and_test_set_of_streamed_data_are_views(bars):
    settings = {"train": str(bars), "preset": "fast", "seed": 5, "limit": 300}
    on_disk, in_memory = loaded(settings | {"stream": True}), loaded(settings | {"stream": False})
    parts = {"train": on_disk.train, "validation": on_disk.validation, "test": on_disk.test}
    assert all(isinstance(part.x, StreamedImages) for part in parts.values())
    rows = {name: set(part.x.rows().tolist()) for name, part in parts.items()}
    assert len(rows["train"]) + len(rows["validation"]) == on_disk.record.examples == 300
    assert not rows["train"] & rows["validation"] and not rows["test"] & rows["train"]
    assert len(on_disk.test) == 120  # 20% of all 600, held out before the limit
    for name, part in parts.items():  # the same examples as in memory, in the same order
        assert part.checksum() == getattr(in_memory, name).checksum()
        # What grows with the examples is kept small: 2-byte labels, 4-byte row indexes.
        assert part.y.dtype == np.int16 and part.x.rows().dtype == np.int32
        assert getattr(in_memory, name).y.dtype == np.int64


def test_a_refused_class_file_exits_2_with_one_line(tmp_path):
    folder = write_classes(tmp_path / "bars", make_images(20))
    (folder / "bar1.npy").write_bytes(b"\x93NUMPY\x09\x00 not a header")
    result = run_cli("train", "--train", folder, "--stream")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"convnet: error: {folder / 'bar1.npy'}: not an NPY file (version 9.0, which NumPy "
        "cannot read); expected a NumPy .npy array (np.save)."
    )


# --- feeding -------------------------------------------------------------------------------------


def test_streamed_batches_are_the_in_memory_batches(bars):
    """Through the backend's pipeline (tf.data here) and through `EpochBatches` (JAX, torch)."""
    settings = {"train": str(bars), "preset": "fast", "seed": 5}
    on_disk, in_memory = loaded(settings | {"stream": True}), loaded(settings | {"stream": False})
    fed = {}
    for name, data in (("streamed", on_disk), ("memory", in_memory)):
        pipeline, steps = feed.batches(data.train, 64, shuffle_seed=5, first_epoch=1)
        by_index = feed.EpochBatches(data.train, 64, 5, first_epoch=1)
        fed[name] = [
            [batch for _, batch in zip(range(2 * steps + 1), pipeline, strict=False)],
            [by_index[i] for i in range(2 * steps + 1)],
        ]
    for streamed_batches, kept_batches in zip(fed["streamed"], fed["memory"], strict=True):
        for (x, y), (x0, y0) in zip(streamed_batches, kept_batches, strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(x0))
            np.testing.assert_array_equal(np.asarray(y), np.asarray(y0))


def train_flags(folder: Path, out: Path, *more: str) -> list[str]:
    flags = ["train", "--train", folder, "--preset", "fast", "--batch-size", "8", "--seed", "7"]
    return [*flags, "--deterministic", "--out", out, "--json", *more]


def start(*args, log: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    """The real `convnet` command; with `log`, under tests/record_feed.py, logging its batches."""
    command = [sys.executable, str(RECORD_FEED), str(log)] if log else [CONVNET]
    return subprocess.Popen(
        [*command, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def without_times(run: Path) -> list[str]:
    lines = (run / "history.csv").read_text().splitlines()
    keep = [i for i, name in enumerate(lines[0].split(",")) if not name.endswith("seconds")]
    return [",".join(line.split(",")[i] for i in keep) for line in lines]


@pytest.mark.trains
def test_streamed_training_gives_the_in_memory_result(bars, tmp_path):
    runs = {feed: tmp_path / feed for feed in ("streamed", "memory")}
    flag = {"streamed": "--stream", "memory": "--no-stream"}
    jobs = {
        feed: start(*train_flags(bars, run, "--epochs", "2", flag[feed]))
        for feed, run in runs.items()
    }
    scores = {feed: finish(job) for feed, job in jobs.items()}
    assert scores["streamed"]["test_loss"] == scores["memory"]["test_loss"]
    assert without_times(runs["streamed"]) == without_times(runs["memory"])
    manifests = {
        feed: json.loads((run / "manifest.json").read_text()) for feed, run in runs.items()
    }
    assert {feed: m["data"]["feed"] for feed, m in manifests.items()} == {
        "streamed": "streamed",
        "memory": "memory",
    }
    assert manifests["streamed"]["data"]["train"] == manifests["memory"]["data"]["train"]


# A subprocess: it trains one epoch of a small convolutional net on the folder `argv[1]`, streamed,
# and prints its resident memory before training and its peak (VmHWM) at the end, in MB. A test
# set of 5% is predicted in one call of 29 MB; of 20%, it would be in calls of 64 MB.
PEAK_PROBE = """
import json, sys
from convnet import framework
framework.load()
import keras
import convnet
from convnet.models.registry import register_preset

def status(key):
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1]) / 1024

@register_preset("peak-probe", "a small net", epochs=1, batch_size=2048, optimizer="adam")
def build(input_shape, num_classes):
    inputs = keras.Input(input_shape, dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))

before = status("VmRSS")
run = convnet.train(
    preset="peak-probe", train=sys.argv[1], stream=True, test_split=0.05, out=sys.argv[2], verbose=0
)
print(json.dumps({"before": before, "peak": status("VmHWM"), "feed": run.manifest["data"]["feed"],
                  "trained": run.manifest["data"]["train"]["examples"]}))
"""


@pytest.mark.trains
def test_peak_memory_stays_far_below_the_data_while_training_streamed(tmp_path):
    """One epoch over 588 MB of images adds less than half their size to the process's peak
    memory (185 MB when written: the framework's own, and chunks of 16 to 64 MB read at a
    time); held in memory, the same run adds about three times their size (docs/data.md)."""
    per_class, rng = 93_750, np.random.default_rng(0)
    folder = tmp_path / "doodles"
    folder.mkdir()
    for name in ("a", "b", "c", "d", "e", "f", "g", "h"):
        rows = np.zeros((per_class, 784), np.uint8)
        rows[:, rng.integers(0, 784, 40)] = 255  # a class's own strokes
        np.save(folder / f"{name}.npy", rows)
    nbytes = 8 * per_class * 784
    done = subprocess.run(
        [sys.executable, "-c", PEAK_PROBE, str(folder), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["feed"] == "streamed" and found["trained"] == 712_500  # 5% held out to test
    assert found["peak"] - found["before"] < nbytes / 2 / 2**20, found


@pytest.mark.trains
def test_the_training_sets_are_let_go_before_the_test_pass(bars, tmp_path, monkeypatch):
    """Streamed, what a run holds per example is its sets' indexes and labels; the training
    and validation sets' are let go once calibration is done, so the test pass and the report
    hold only the test set's (bench.scale: the 8 GB run's peak). The report's sample grid is
    still drawn, from the examples picked before."""
    import convnet
    from convnet.training import trainer

    alive, session = {}, trainer._session

    def watched(config, data, context):
        alive["sets"] = [weakref.ref(data.train), weakref.ref(data.validation)]
        return session(config, data, context)

    def tallied(model, test, **settings):
        alive["at the test pass"] = [ref() is not None for ref in alive["sets"]]
        return tally(model, test, **settings)

    tally = trainer.predicted_tally
    monkeypatch.setattr(trainer, "_session", watched)
    monkeypatch.setattr(trainer, "predicted_tally", tallied)
    run = convnet.train(
        train=str(bars), stream=True, preset="fast", epochs=1, out=str(tmp_path / "run"), verbose=0
    )
    assert run.manifest["data"]["feed"] == "streamed"
    assert alive["at the test pass"] == [False, False]
    grid = Image.open(run.path / "plots" / "samples.png")
    assert grid.size[0] > 200  # drawn, a row of training images for each class


# --- resuming and sharding -----------------------------------------------------------------------


@pytest.mark.trains
def test_a_streamed_run_resumed_after_sigkill_feeds_the_same_batches(bars, tmp_path):
    flags = ["--epochs", "3", "--stream"]
    whole = start(*train_flags(bars, tmp_path / "whole", *flags), log=tmp_path / "whole.log")
    run = tmp_path / "resumed"
    killed = start(*train_flags(bars, run, *flags), log=tmp_path / "killed.log")
    wait_for_epochs(killed, run, 1)
    assert kill(killed)[0] == -signal.SIGKILL
    epoch = json.loads((run / "backup" / "state.json").read_text())["epoch"]
    assert 1 <= epoch < 3
    resumed = start("train", "--resume", run, "--json", log=tmp_path / "resumed.log")
    finish(resumed)
    finish(whole)
    examples = json.loads((run / "manifest.json").read_text())["data"]["train"]["examples"]
    trained = examples - math.ceil(0.1 * examples)  # fast validates on 10%
    steps = math.ceil(trained / 8)
    uninterrupted = read_log(tmp_path / "whole.log", trained)
    before, after = (
        read_log(tmp_path / "killed.log", trained),
        read_log(tmp_path / "resumed.log", trained),
    )
    assert len(uninterrupted) >= 3 * steps and len(after) >= (3 - epoch) * steps
    assert before[: epoch * steps] == uninterrupted[: epoch * steps]
    assert after[: (3 - epoch) * steps] == uninterrupted[epoch * steps : 3 * steps]
    assert without_times(run) == without_times(tmp_path / "whole")
    resumes = json.loads((run / "manifest.json").read_text())["resumes"]
    assert [entry["feed"] for entry in resumes] == ["streamed"]


@needs_jax
@pytest.mark.trains
def test_two_jax_processes_read_disjoint_shards_that_cover_the_data(bars, tmp_path):
    flags = ["train", "--backend", "jax", "--train", bars, "--preset", "seed", "--epochs", "1"]
    flags += ["--batch-size", "64", "--stream", "--seed", "7", "--json"]
    pair = ["--num-processes", "2", "--coordinator", f"127.0.0.1:{free_port()}"]
    env = {"KERAS_BACKEND": "jax", "XLA_FLAGS": ""}
    jobs = [
        start(*flags, *pair, "--process-id", rank, "--out", tmp_path / "run",
              log=tmp_path / f"process{rank}.log", env=env)
        for rank in (0, 1)
    ]  # fmt: skip
    for job in jobs:
        finish(job, timeout=400)
    data = loaded({"train": str(bars), "preset": "seed", "seed": 7, "stream": True})
    for part in (data.train, data.validation):  # each process's share: half of each
        shards = [read_log(tmp_path / f"process{rank}.log", len(part) // 2) for rank in (0, 1)]
        read = [{row for batch in shard for row in batch} for shard in shards]
        assert all(shard for shard in shards)
        assert not read[0] & read[1]
        assert read[0] | read[1] == set(part.x.rows().tolist())
