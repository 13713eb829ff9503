"""Data-parallel training: two processes on 127.0.0.1, two CPU devices, a peer that never joins.

The training runs start together (the machine has few cores; they overlap), on a Fashion-MNIST
subset sized so no batch is partial (fewer JAX compilations): 5120 examples -> 3584 train and 1536
validation, 56 and 24 steps of 64. The cosine schedule anneals the rate to 0, so the final accuracy
does not swing with the order of the batches, which differs between 1 and 2 processes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CONVNET

from convnet import backend, topology
from convnet.config import TrainConfig
from convnet.data.sources import find_fashion_mnist
from convnet.errors import ConfigError, on_the_command_line
from convnet.training import distributed

DUMP_WEIGHTS = Path(__file__).with_name("dump_weights.py")
needs_jax = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="the jax extra is missing: pip install .[jax]"
)
needs_data = pytest.mark.skipif(
    find_fashion_mnist() is None, reason="Fashion-MNIST is not on this machine (make data)"
)
# The tests of the `runs` fixture, which trains on Fashion-MNIST: `-m "not slow"` skips them.
slow = pytest.mark.slow

TRAIN = ["train", "--backend", "jax", "--limit", "5120", "--epochs", "2", "--batch-size", "64"]
TRAIN += ["--schedule", "cosine", "--seed", "7", "--json"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(*args: str, dump: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    """Starts the real `convnet` command; its stdout and stderr are read by `finish`. With
    `dump`, each process saves its final weights there (tests/dump_weights.py)."""
    env = {**os.environ, **(env or {})}
    env.pop("XLA_FLAGS", None)
    command = [CONVNET]
    if dump:  # the wrapper imports Keras before the flags are read: its backend comes from here
        env["KERAS_BACKEND"] = "jax"
        command = [sys.executable, str(DUMP_WEIGHTS), str(dump)]
    return subprocess.Popen(
        [*command, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(process: subprocess.Popen, timeout: float = 400) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out, err


def result(code: int, out: str, err: str) -> dict:
    assert code == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def weights(folder: Path, process: int) -> list[np.ndarray]:
    with np.load(folder / f"weights-process{process}.npz") as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Processes 0 and 1 of a pair and one process on 1 device, at once; then one process on 2
    CPU devices on its own; all with the same global batch and seed.

    The 2-device run waits for the others: XLA's in-process all-reduce aborts after 40 s when one
    of its two device threads is starved, which three other trainings on 2 cores made happen.
    """
    root = tmp_path_factory.mktemp("distributed")
    port = free_port()
    pair = ["--num-processes", "2", "--coordinator", f"127.0.0.1:{port}", "--join-timeout", "120"]
    jobs = {
        "chief": start(*TRAIN, *pair, "--process-id", "0", "--out", root / "pair", dump=root),
        "worker": start(*TRAIN, *pair, "--process-id", "1", "--out", root / "pair", dump=root),
        "one_device": start(*TRAIN, "--out", root / "one-device"),
    }
    done = {name: finish(job) for name, job in jobs.items()}
    done["two_devices"] = finish(start(*TRAIN, "--devices", "2", "--out", root / "two-devices"))
    return {"root": root, "chief_pid": jobs["chief"].pid} | done


@needs_jax
@needs_data
@slow
def test_two_processes_end_with_identical_weights(runs):
    chief, worker = result(*runs["chief"]), result(*runs["worker"])
    first, second = weights(runs["root"], 0), weights(runs["root"], 1)
    assert len(first) == len(second) > 0
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert chief["test_accuracy"] == worker["test_accuracy"]


@needs_jax
@needs_data
@slow
def test_only_process_0_writes_the_run_folder(runs):
    chief, worker = result(*runs["chief"]), result(*runs["worker"])
    assert chief["run"] == str(runs["root"] / "pair") and worker["run"] is None
    run = runs["root"] / "pair"
    assert (run / "model.keras").is_file() and (run / "metrics.json").is_file()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["process"]["pid"] == runs["chief_pid"]  # written by process 0
    assert manifest["topology"] | {"coordinator": None} == {
        "processes": 2,
        "devices_per_process": 1,
        "devices": 2,
        "backend": "jax",
        "device_kind": "cpu",
        "engine": "keras.distribution.DataParallel",
        "coordinator": None,
    }


@needs_jax
@needs_data
@slow
def test_two_processes_match_one_process(runs):
    pair, alone = result(*runs["chief"]), result(*runs["one_device"])
    assert abs(pair["test_accuracy"] - alone["test_accuracy"]) <= 0.02, (pair, alone)


@needs_jax
@needs_data
@slow
def test_two_devices_in_one_process_give_the_same_result(runs):
    """Same batches in the same order as one device: only float rounding differs (test loss
    0.7596 against 0.7604, accuracy 0.7299 against 0.7297, when written; the pair's other
    batch order moved the loss by 0.9%)."""
    devices, alone = result(*runs["two_devices"]), result(*runs["one_device"])
    assert devices["test_loss"] == pytest.approx(alone["test_loss"], rel=5e-3), (devices, alone)
    assert abs(devices["test_accuracy"] - alone["test_accuracy"]) <= 0.005, (devices, alone)
    manifest = json.loads((runs["root"] / "two-devices" / "manifest.json").read_text())
    assert manifest["topology"]["devices"] == 2 and manifest["topology"]["processes"] == 1


@needs_jax
def test_a_peer_that_never_joins_fails_within_the_timeout(tmp_path):
    args = [
        "--num-processes",
        "2",
        "--process-id",
        "0",
        "--coordinator",
        f"127.0.0.1:{free_port()}",
    ]
    started = time.monotonic()
    code, _, err = finish(start(*TRAIN, *args, "--join-timeout", "4", "--out", tmp_path / "r"), 120)
    assert code == 2, err[-2000:]
    assert "process 0 of 2: not every process joined coordinator" in err
    assert "within 4 s" in err
    # The 4 s and a process's start (6.4 s in all when written), well before JAX's own abort
    # of a join (30 s past the timeout).
    assert time.monotonic() - started < 25
    assert not (tmp_path / "r").exists()


def test_several_processes_on_tensorflow_is_a_clear_error(tmp_path):
    args = ["--num-processes", "2", "--process-id", "0", "--coordinator", "127.0.0.1:1"]
    code, _, err = finish(start("train", "--backend", "tensorflow", *args, "--out", tmp_path), 120)
    assert code == 2, err[-2000:]
    assert err.strip().splitlines()[-1] == (
        "convnet: error: training on several processes needs the jax backend (received: "
        "tensorflow); Keras 3 cannot fit under TensorFlow's MultiWorkerMirroredStrategy. "
        "Install convnet[jax] and pass --backend jax."
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"num_processes": 2}, r"needs coordinator='HOST:PORT' .* and process_id=\.\.\. "),
        ({"coordinator": "h:1"}, r"need num_processes=\.\.\. too"),
        ({"num_processes": 2, "process_id": 2, "coordinator": "h:1"}, r"process_id must be in"),
        (
            {"num_processes": 2, "process_id": 0, "coordinator": "nohostport"},
            r"coordinator must be HOST:PORT .* Received: 'nohostport'",
        ),
        ({"num_processes": 2, "process_id": 0, "coordinator": "h:http"}, "must be HOST:PORT"),
    ],
)
def test_incomplete_topology_is_a_config_error(settings, message, monkeypatch):
    for variable in topology.ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError, match=message):
        topology.requested(TrainConfig(**settings))


def test_several_devices_on_torch_are_refused_as_the_user_asked(monkeypatch):
    for variable in topology.ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(
        topology.DistributedError, match=r"^devices=2: the torch backend .* pass backend='jax' "
    ):
        topology.check(TrainConfig(devices=2), "torch")
    with (
        on_the_command_line(),
        pytest.raises(topology.DistributedError, match=r"^--devices 2: .*--backend jax "),
    ):
        topology.check(TrainConfig(devices=2), "torch")


def test_topology_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("CONVNET_NUM_PROCESSES", "3")
    monkeypatch.setenv("CONVNET_PROCESS_ID", "2")
    monkeypatch.setenv("CONVNET_COORDINATOR", "10.0.0.1:1234")
    assert topology.requested(TrainConfig()) == (3, 2, "10.0.0.1:1234", None)
    monkeypatch.setenv("CONVNET_PROCESS_ID", "two")
    with pytest.raises(ConfigError, match=r"\$CONVNET_PROCESS_ID must be an integer"):
        topology.requested(TrainConfig())


def test_slurm_job_is_detected(monkeypatch):
    for variable in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS"):
        monkeypatch.setenv(variable, "2")
    assert topology.detect_cluster() == "slurm"
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert topology.detect_cluster() is None


def test_unknown_backend_and_uneven_batch_are_errors():
    with pytest.raises(ConfigError, match="backend must be one of tensorflow, jax, torch"):
        backend.select("theano")
    with pytest.raises(ConfigError, match=r"divisible by the 6 devices \(2 process\(es\) x 3\)"):
        distributed.Context("jax", num_processes=2, devices=3).local_batch(64)
    assert distributed.Context("jax", num_processes=2, devices=2).local_batch(64) == 32


def test_shards_are_equal_disjoint_and_split_evenly_over_devices(tiny):
    shards = [distributed.Context("jax", 2, rank, 3, engine="x").shard(tiny) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 30  # 64 // 2 = 32, trimmed to a multiple of 3
    np.testing.assert_array_equal(shards[0].y, tiny.y[0:60:2])
    np.testing.assert_array_equal(shards[1].y, tiny.y[1:60:2])
