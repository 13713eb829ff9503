"""Tiny data made in tmp_path, a trained run shared by the session, and the real CLI binary."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from postgres import postgres_server, postgres_url  # noqa: F401  (fixtures)

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# A suite started in the background by a script (`make test &`) inherits SIGINT ignored, and
# Python leaves it so: Ctrl-C's tests need it delivered, as from a terminal, in the tests and in
# the processes they start.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from convnet import framework  # noqa: E402
from convnet.data.dataset import Dataset  # noqa: E402
from convnet.data.sources import find_fashion_mnist  # noqa: E402

CONVNET = str(Path(sys.executable).with_name("convnet"))
# Fixtures that train a model: a test that uses one trains, and `make check` leaves it out.
TRAINING_FIXTURES = {"trained_run"}

if os.environ.get("CONVNET_CHECK"):  # `make check`: Keras' fit refuses here and in subprocesses
    CHECK_MODE = str(Path(__file__).with_name("check_mode"))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [CHECK_MODE, os.environ.get("PYTHONPATH")])
    )
    from check_mode import sitecustomize  # noqa: F401  (installs the guard here)

CLASS_NAMES = ("bar0", "bar1", "bar2", "bar3")


def make_images(n: int, seed: int = 0, side: int = 28) -> Dataset:
    """Learnable images: class k is a bright horizontal bar in band k, on dark noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASS_NAMES), n)
    x = rng.integers(0, 60, (n, side, side, 1), dtype=np.uint8)
    band = side // len(CLASS_NAMES)
    for i, label in enumerate(y):
        x[i, label * band + 1 : label * band + band - 1, 3:-3] = 220
    return Dataset(x, y.astype(np.int64), CLASS_NAMES, "synthetic")


def write_csv(path: Path, data: Dataset, header: bool = True) -> Path:
    pixels = data.x.reshape(len(data), -1)
    lines = []
    if header:
        lines.append(",".join(["label"] + [f"pixel{i + 1}" for i in range(pixels.shape[1])]))
    lines += [",".join(map(str, [label, *row])) for label, row in zip(data.y, pixels, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_npz(path: Path, train: Dataset, test: Dataset) -> Path:
    np.savez(
        path,
        x_train=train.x[..., 0],
        y_train=train.y,
        x_test=test.x[..., 0],
        y_test=test.y,
        class_names=np.array(CLASS_NAMES),
    )
    return path


# The modules that take longest, longest first (`pytest --durations=0`, 2026-12-07): `make test`
# hands each of its two workers a module at a time in the order collected
# (`--no-loadscope-reorder`), and a long module handed out last kept one worker busy for up to
# 50 s after the other had finished. Shorter modules follow, those with more tests first. A
# stale entry costs only time.
LONGEST_MODULES = (
    "test_tune.py",
    "test_resume.py",
    "test_small_images.py",
    "test_export.py",
    "test_streaming.py",
    "test_backends.py",
    "test_distributed.py",
    "test_predict_hostile.py",
    "test_runs.py",
    "test_serving_v2.py",
    "test_cli.py",
    "test_memory.py",
    "test_mlflow_model.py",
    "test_examples.py",
    "test_e2e.py",
    "test_under_training.py",
    "test_tune_hostile.py",
    "test_notebook.py",
    "test_reports.py",
    "test_predict.py",
)


def pytest_collection_modifyitems(items):
    """Marks `trains` every test that uses a training fixture (tests that train by themselves
    carry the marker where they are written), and puts the longest modules first."""
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.trains)
    tests_in = collections.Counter(item.path.name for item in items)

    def longest_first(item) -> tuple[int, int]:
        name = item.path.name
        if name in LONGEST_MODULES:
            return LONGEST_MODULES.index(name), 0
        return len(LONGEST_MODULES), -tests_in[name]

    items.sort(key=longest_first)  # stable: a module's tests keep their order


# Looked up before any test moves the cache, so tests still find a copy downloaded into it.
FASHION_MNIST = find_fashion_mnist()


@pytest.fixture(scope="session")
def xla_cache(tmp_path_factory) -> Path:
    """One JAX compilation cache for the session, shared by the xdist workers (the folder above
    each worker's own): XLA's entries are keyed by the program compiled, so no test can read
    another's by mistake, and a model compiled by one test's process is loaded by the next."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "xla"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch, xla_cache) -> Path:
    """Each test gets an empty user cache (`$XDG_CACHE_HOME`, passed on to the CLI it runs).

    The parsed-data cache answers by file content: in the user's ~/.cache, an entry written by an
    earlier run would stand in for the reader under test. Fashion-MNIST is still found where it is.
    JAX's compilations go to the session's `xla_cache`, kept as convnet keeps them by default.
    """
    if FASHION_MNIST and not os.environ.get("CONVNET_DATA"):
        monkeypatch.setenv("CONVNET_DATA", str(FASHION_MNIST))
    cache = tmp_path / "user-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(xla_cache))
    monkeypatch.setenv(
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(framework.XLA_CACHE_MIN_SECONDS)
    )
    return cache


@pytest.fixture
def tiny() -> Dataset:
    return make_images(64)


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> Path:
    """600 training and 200 test images of four classes, in one NPZ."""
    path = tmp_path_factory.mktemp("data") / "bars.npz"
    return write_npz(path, make_images(600, seed=1), make_images(200, seed=2))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_npz) -> Path:
    """A seed-preset run folder trained for 3 quick epochs on the tiny NPZ."""
    import convnet

    out = tmp_path_factory.mktemp("runs") / "seed-tiny"
    convnet.train(train=str(tiny_npz), epochs=3, batch_size=64, out=str(out), verbose=0)
    return out


class Clock:
    """Stands in for the `time` module of convnet.training.callbacks: time moves when told."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    from convnet.training import callbacks

    fake = Clock()
    monkeypatch.setattr(callbacks, "time", fake)
    return fake


def run_async(coroutine):
    """Runs a coroutine to completion in a thread of its own.

    Playwright's sync API (the session's `browser`) keeps an event loop running in the main
    thread, where `asyncio.run` refuses to start.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def wait_until(
    done: Callable[[], bool],
    process: subprocess.Popen,
    what: str,
    timeout: float = 240,
    poll: float = 0.05,
) -> None:
    """Polls `done()` until it holds; fails the test if `process` ends first, or kills it and
    fails when `timeout` seconds pass. `what` names the awaited state in the failure."""
    deadline = time.monotonic() + timeout
    while not done():
        if process.poll() is not None:
            ended = f"ended early ({process.returncode}), before {what}"
            pytest.fail(f"{ended}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(poll)


def run_cli(
    *args: str, timeout: float = 600, env: dict | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Runs the installed `convnet` binary and returns its result (never raises on exit code)."""
    return subprocess.run(
        [CONVNET, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def run_main(capsys, *args: str) -> subprocess.CompletedProcess:
    """Runs `convnet ARGS` through `convnet.cli.main` in this process and returns its result as
    `run_cli` does: the command's own code, output and exit code, without the 3 s start-up of a
    process that imports TensorFlow. `run_cli` runs the binary, for what only a process shows:
    its exit, signals, what the frameworks write to file descriptor 2."""
    from convnet.cli import main

    capsys.readouterr()
    try:
        code = main(list(map(str, args)))
    except SystemExit as exited:  # argparse's refusals
        code = exited.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess([CONVNET, *map(str, args)], code, out, err)


ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser():
    """Debian's headless Chromium driven by Playwright (no browser download)."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs the Debian package chromium")
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield instance
        instance.close()


@pytest.fixture
def artifacts() -> Path:
    """Where tests save screenshots for people to look at (test-artifacts/, git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


CLIENTS_PYTHON = Path(__file__).resolve().parent.parent / ".venv-clients" / "bin" / "python"
CLIENT_SCRIPTS = Path(__file__).resolve().parent / "clients"


def run_client(script: str, *args, timeout: float = 120) -> dict:
    """Runs `tests/clients/SCRIPT.py ARGS...` in the protocol clients' venv and returns the JSON it
    prints: the clients run as a user's would, in a process of their own (tests/clients/).

    Fails the test, with the client's stderr, if it exits non-zero or the venv is missing.
    """
    if not CLIENTS_PYTHON.exists():
        pytest.fail(f"{CLIENTS_PYTHON} is missing: `make test` builds it")
    result = subprocess.run(
        [str(CLIENTS_PYTHON), str(CLIENT_SCRIPTS / f"{script}.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    if result.returncode != 0:
        pytest.fail(f"client {script} exited {result.returncode}: {result.stderr[-3000:]}")
    return json.loads(result.stdout)
