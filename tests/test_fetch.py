"""Datasets by name (`convnet fetch NAME`, `--train NAME`) against a real HTTP server on loopback
that serves small files of the published layouts, as the mirror `$CONVNET_DATASETS_URL` names."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import io
import json
import os
import re
import threading
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import run_main

from convnet import api
from convnet.cli import main
from convnet.config import make_config
from convnet.data import HeldOutTestWarning, catalogue, load_source, load_train_test, sources
from convnet.data.settings import is_dataset_name
from convnet.errors import ConfigError, DataError
from convnet.runs import Run

MNIST_FILES = {
    "train-images-idx3-ubyte.gz": 30,
    "train-labels-idx1-ubyte.gz": 30,
    "t10k-images-idx3-ubyte.gz": 10,
    "t10k-labels-idx1-ubyte.gz": 10,
}


class Mirror(http.server.BaseHTTPRequestHandler):
    """Serves `files` by URL path: byte ranges when `ranges`, 404 for anything else; cuts the
    body of a file named in `cuts` in half (and closes the connection) that many times."""

    files: dict[str, bytes] = {}
    cuts: Counter = Counter()
    ranges = True
    asked: list[tuple[str, str | None]] = []

    def do_GET(self):  # noqa: N802 (the name http.server calls)
        asked = self.headers.get("Range")
        Mirror.asked.append((self.path, asked))
        if self.path not in Mirror.files:
            self.send_error(404, "Not Found")
            return
        body, start = Mirror.files[self.path], 0
        if asked and Mirror.ranges:
            start = int(re.fullmatch(r"bytes=(\d+)-", asked)[1])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if Mirror.cuts[self.path]:
            Mirror.cuts[self.path] -= 1
            self.wfile.write(body[start : start + (len(body) - start) // 2])
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Relative paths (`--data-dir mine`) land in the test's own folder."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mirror)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def mirror(server, monkeypatch) -> type[Mirror]:
    """The server, empty, as the datasets' mirror; back-off waits are skipped."""
    Mirror.files, Mirror.cuts, Mirror.ranges, Mirror.asked = {}, Counter(), True, []
    monkeypatch.setenv(sources.MIRROR_ENV, server + "/")
    monkeypatch.setattr(sources.time, "sleep", lambda seconds: None)
    return Mirror


def idx(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes, gzipped, as MNIST publishes them."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def publish(monkeypatch, name: str, files: dict[str, bytes], folder: str | None = None) -> None:
    """Serves `files` as the dataset `name`'s, with their MD5s as its published ones."""
    for file, content in files.items():
        Mirror.files[f"/{folder or name}/{file}"] = content
    md5 = {file: hashlib.md5(content).hexdigest() for file, content in files.items()}
    entry = dataclasses.replace(catalogue.IDX_SETS[name], md5=md5)
    monkeypatch.setitem(catalogue.IDX_SETS, name, entry)


def mnist_files(seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    files = {}
    for name, n in MNIST_FILES.items():
        shape = (n, 28, 28) if "images" in name else (n,)
        files[name] = idx(np.arange(n) % 10 if "labels" in name else rng.integers(0, 256, shape))
    return files


def fetch_cli(*args: str, capsys) -> tuple[int, str, str]:
    """The exit code, stdout, and the last line of stderr (after any progress bars)."""
    code = main(["fetch", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and err.count("convnet: error:") == int(code == 2), err
    return code, out.strip(), (err.strip().splitlines() or [""])[-1]


@pytest.mark.parametrize("name", ["mnist", "kmnist"])
def test_an_idx_set_is_fetched_once_checked_and_trained_on_by_name(
    name, mirror, monkeypatch, private_cache, capsys
):
    publish(monkeypatch, name, mnist_files())
    code, out, _ = fetch_cli(name, capsys=capsys)
    folder = private_cache / "convnet" / name
    assert (code, out) == (0, f"{name}: {folder}")
    assert sorted(p.name for p in folder.iterdir()) == sorted(MNIST_FILES)
    mirror.asked.clear()
    train, test = load_train_test(train=name)  # the cache, checked again; no download
    assert mirror.asked == []
    assert (len(train), len(test), train.image_shape) == (30, 10, (28, 28, 1))
    assert train.class_names == catalogue.IDX_SETS[name].class_names
    assert test.source == str(folder / "t10k-images-idx3-ubyte.gz")


def test_emnist_letters_are_taken_out_of_the_archive_upright_and_from_0(
    mirror, monkeypatch, private_cache
):
    letters = np.zeros((26, 28, 28), np.uint8)
    letters[:, 3, :] = 255  # stored column by column: a bar along row 3 is column 3 upright
    labels = np.arange(1, 27)  # EMNIST numbers the letters from 1
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for split in ("train", "test"):
            zipped.writestr(f"gzip/emnist-letters-{split}-images-idx3-ubyte.gz", idx(letters))
            zipped.writestr(f"gzip/emnist-letters-{split}-labels-idx1-ubyte.gz", idx(labels))
        zipped.writestr("gzip/emnist-digits-train-images-idx3-ubyte.gz", idx(letters))
    publish(monkeypatch, "emnist-letters", {"gzip.zip": archive.getvalue()}, folder="emnist")
    folder = api.fetch("emnist-letters", progress=False)
    files = [name for pair in catalogue.IDX_SETS["emnist-letters"].files.values() for name in pair]
    assert sorted(p.name for p in folder.iterdir()) == sorted([sources.RECORD, *files])
    for line in (folder / sources.RECORD).read_text().splitlines():  # as sha256sum -c reads
        digest, name = line.split("  ")
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    splits = load_source("emnist-letters")
    assert splits["train"].class_names == tuple("abcdefghijklmnopqrstuvwxyz")
    assert splits["train"].y.tolist() == list(range(26)) and len(splits["test"]) == 26
    assert (splits["train"].x[0, :, 3, 0] == 255).all() and splits["train"].x[0, 3, 0, 0] == 0


def npy(rows: int, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(seed).integers(0, 256, (rows, 784), dtype=np.uint8))
    return buffer.getvalue()


def test_quickdraw_classes_land_as_a_folder_of_class_files(mirror, private_cache, capsys):
    mirror.files |= {"/quickdraw/cat.npy": npy(5), "/quickdraw/dog.npy": npy(7, seed=1)}
    mirror.files["/quickdraw/alarm%20clock.npy"] = npy(3, seed=2)
    code, out, _ = fetch_cli("quickdraw:dog, cat,alarm clock", capsys=capsys)
    root = private_cache / "convnet" / "quickdraw"
    chosen = root / "alarm clock,cat,dog"
    assert (code, out) == (0, f"quickdraw:dog, cat,alarm clock: {chosen}")
    assert sorted(p.name for p in chosen.iterdir()) == ["alarm clock.npy", "cat.npy", "dog.npy"]
    for cls in ("alarm clock", "cat", "dog"):  # the same file, not a copy
        assert os.path.samefile(chosen / f"{cls}.npy", root / "numpy_bitmap" / f"{cls}.npy")
        served = mirror.files[f"/quickdraw/{cls.replace(' ', '%20')}.npy"]
        assert (chosen / f"{cls}.npy").read_bytes() == served
    recorded = (root / sources.RECORD).read_text()
    assert f"{hashlib.sha256(npy(5)).hexdigest()}  numpy_bitmap/cat.npy\n" in recorded
    with pytest.warns(HeldOutTestWarning):  # Quick, Draw! has no test split of its own
        train, test = load_train_test(train="quickdraw:cat,dog,alarm clock", test_split=0.4)
    assert train.class_names == ("alarm clock", "cat", "dog") and train.image_shape == (28, 28, 1)
    assert (len(train), len(test)) == (9, 6)
    mirror.asked.clear()
    assert api.fetch("quickdraw:cat", progress=False) == root / "cat"  # downloaded before
    assert mirror.asked == []
    assert [p.name for p in (root / "cat").iterdir()] == ["cat.npy"]


def test_a_quickdraw_file_changed_since_its_download_is_refused(mirror, private_cache, capsys):
    mirror.files["/quickdraw/cat.npy"] = npy(5)
    mirror.files["/quickdraw/dog.npy"] = npy(5, seed=1)
    api.fetch("quickdraw:cat,dog", progress=False)
    stored = private_cache / "convnet" / "quickdraw" / "numpy_bitmap" / "cat.npy"
    stored.write_bytes(stored.read_bytes()[:-1] + b"\x00")
    code, _, err = fetch_cli("quickdraw:cat,dog", capsys=capsys)
    assert code == 2
    assert re.search(r"cat\.npy: checksum mismatch \(SHA256 \w+, expected \w+\); .*Delete it", err)
    stored.unlink()  # as it says: the next use downloads it again, and links that one
    chosen = api.fetch("quickdraw:cat,dog", progress=False)
    assert os.path.samefile(chosen / "cat.npy", stored) and stored.read_bytes() == npy(5)


def test_a_file_failing_its_checksum_is_refused_and_nothing_kept(mirror, monkeypatch, capsys):
    publish(monkeypatch, "mnist", mnist_files())
    mirror.files["/mnist/train-labels-idx1-ubyte.gz"] = idx(np.zeros(30))  # not as published
    code, _, err = fetch_cli("mnist", "--data-dir", "mine", capsys=capsys)
    assert code == 2
    assert "could not download train-labels-idx1-ubyte.gz" in err
    assert "corrupt download: checksum mismatch (MD5" in err
    assert not Path("mine", "train-labels-idx1-ubyte.gz").exists()
    assert not list(Path("mine").glob(".*"))  # no partial file either


def test_a_download_cut_short_goes_on_from_where_it_stopped(mirror, monkeypatch):
    publish(monkeypatch, "mnist", mnist_files())
    name = "/mnist/train-images-idx3-ubyte.gz"
    mirror.cuts[name] = 1
    folder = api.fetch("mnist", "here", progress=False)
    size = len(mirror.files[name])
    assert [r for p, r in mirror.asked if p == name] == [None, f"bytes={size // 2}-"]
    assert (folder / "train-images-idx3-ubyte.gz").read_bytes() == mirror.files[name]


def test_an_interrupted_fetch_resumes_on_the_next(mirror, monkeypatch):
    publish(monkeypatch, "mnist", mnist_files())
    name = "/mnist/t10k-images-idx3-ubyte.gz"
    mirror.cuts[name] = 3  # every attempt of the first fetch
    with pytest.raises(DataError, match=r"t10k-images.*truncated download"):
        api.fetch("mnist", "here", progress=False)
    assert not Path("here", "t10k-images-idx3-ubyte.gz").exists()  # never named as if whole
    part = Path("here", ".t10k-images-idx3-ubyte.gz.part")
    have = 0
    for _ in range(3):  # each attempt went on from where the last stopped
        have += (len(mirror.files[name]) - have) // 2
    assert part.stat().st_size == have
    mirror.asked.clear()
    api.fetch("mnist", "here", progress=False)
    assert mirror.asked[0] == (name, f"bytes={have}-")
    assert Path("here", "t10k-images-idx3-ubyte.gz").read_bytes() == mirror.files[name]
    assert not part.exists()
    assert len(load_source("mnist", data_dir="here")["test"]) == 10


def test_a_server_without_ranges_sends_it_again_whole(mirror, monkeypatch):
    publish(monkeypatch, "mnist", mnist_files())
    name = "/mnist/train-labels-idx1-ubyte.gz"
    mirror.cuts[name], mirror.ranges = 1, False
    folder = api.fetch("mnist", "here", progress=False)
    assert (folder / "train-labels-idx1-ubyte.gz").read_bytes() == mirror.files[name]
    # The second answer, whole, replaced the half kept: no third try was needed.
    size = len(mirror.files[name])
    assert [r for p, r in mirror.asked if p == name] == [None, f"bytes={size // 2}-"]


@pytest.mark.parametrize("command", ["api", "cli"])
def test_an_unknown_name_is_refused_listing_the_known_ones(command, mirror, capsys):
    known = "fashion-mnist, mnist, kmnist, emnist-letters, quickdraw:CLASS,CLASS"
    if command == "api":
        with pytest.raises(ConfigError, match=f"unknown dataset 'mnits'; expected one of {known}"):
            api.fetch("mnits")
    else:
        code, _, err = fetch_cli("mnits", capsys=capsys)
        assert (
            code == 2
            and err == f"convnet: error: unknown dataset 'mnits'; expected one of {known}."
        )
    assert mirror.asked == []


@pytest.mark.parametrize(
    "name, error, message",
    [
        ("quickdraw", ConfigError, r"'quickdraw' names no Quick, Draw! class; expected quickdraw:"),
        ("quickdraw: ,", ConfigError, r"names no Quick, Draw! class"),
        ("quickdraw:../cat", ConfigError, r"class '../cat' cannot be a file name"),
        ("quickdraw:cat,dgo", DataError, r"Quick, Draw! has no class 'dgo' \(.*404 Not Found"),
    ],
)
def test_quickdraw_classes_that_cannot_be_fetched_are_named(name, error, message, mirror):
    mirror.files["/quickdraw/cat.npy"] = npy(2)
    with pytest.raises(error, match=message):
        api.fetch(name, progress=False)
    assert [p for p, _ in mirror.asked].count("/quickdraw/dgo.npy") <= 1  # a 404 is not retried


def test_data_dir_holds_the_named_set_and_runs_keep_the_name(mirror, monkeypatch, private_cache):
    publish(monkeypatch, "mnist", mnist_files())
    api.fetch("mnist", "mine", progress=False)
    mirror.asked.clear()
    train, test = load_train_test(train="mnist", test="mnist", data_dir="mine")
    assert mirror.asked == [] and not (private_cache / "convnet" / "mnist").exists()
    assert train.source == str(Path("mine", "train-images-idx3-ubyte.gz"))
    run = Run.begin(Path("run"), make_config({"train": "mnist", "test": "./mnist"}))
    assert (run.config().train, run.config().test) == ("mnist", str(Path("mnist").absolute()))


def test_names_are_strings_and_paths_stay_paths():
    assert is_dataset_name("mnist") and is_dataset_name("quickdraw:cat")
    assert not is_dataset_name("./mnist") and not is_dataset_name(Path("mnist"))
    assert set(catalogue.IDX_SETS) == set(catalogue.KNOWN[:-1])


def bars(rows: int, vertical: bool) -> bytes:
    """Doodles a model tells apart: a bar across or down, on faint noise, as N x 784."""
    x = np.random.default_rng(rows).integers(0, 40, (rows, 28, 28), dtype=np.uint8)
    x[:, 12:16, 4:-4] = 255
    buffer = io.BytesIO()
    np.save(buffer, (x.swapaxes(1, 2) if vertical else x).reshape(rows, 784))
    return buffer.getvalue()


@pytest.mark.trains
def test_the_cli_trains_on_a_name_and_evaluates_the_run_from_the_cache(
    mirror, server, monkeypatch, capsys
):
    mirror.files |= {"/quickdraw/cat.npy": bars(60, False), "/quickdraw/dog.npy": bars(60, True)}
    train = ["train", "--train", "quickdraw:cat,dog", "--preset", "fast", "--epochs", "2"]
    monkeypatch.setenv(sources.MIRROR_ENV, server)
    result = run_main(capsys, *train, "--json", "--out", "run")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["test_accuracy"] > 0.9
    assert "train: quickdraw:cat,dog\n" in Path("run", "config.yaml").read_text()
    # Nothing listens there: the cache must do.
    monkeypatch.setenv(sources.MIRROR_ENV, "http://127.0.0.1:9/")
    result = run_main(capsys, "evaluate", "run", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["test_examples"] == 24


def test_fetches_at_once_download_each_file_once(mirror, monkeypatch):
    publish(monkeypatch, "mnist", mnist_files())
    errors = []

    def fetch():
        try:
            api.fetch("mnist", "shared", progress=False)
        except Exception as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=fetch) for _ in range(4)]  # each its own lock, as processes
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Counter(path for path, _ in mirror.asked) == {f"/mnist/{f}": 1 for f in MNIST_FILES}
