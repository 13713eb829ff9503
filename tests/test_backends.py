"""Every Keras backend trains, evaluates, predicts, reports and serves, with the other frameworks
made unimportable in its processes (tests/without_frameworks.py), and never even asked for."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images, run_main
from without_frameworks import END

from convnet.backend import not_installed

WRAPPER = Path(__file__).with_name("without_frameworks.py")
FRAMEWORKS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def convnet_without_others(backend: str, *commands: list) -> list[subprocess.CompletedProcess]:
    """Runs the `convnet` `commands` one after the other in one process, with every framework
    but `backend`'s blocked, and no $KERAS_BACKEND: evaluate, predict and report take the
    backend the run recorded. Returns each command's result; fails unless each exits 0.

    Keras seeds TensorFlow wherever it is installed, and TensorFlow (and Keras on torch) imports
    JAX wherever that is; convnet keeps them out (`backend.not_installed`), so no import of a
    blocked framework is even tried: installed, it would have been imported for nothing."""
    others = ",".join(f for b, f in FRAMEWORKS.items() if b != backend)
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    arguments = [arg for command in commands for arg in ["--", *map(str, command)]]
    done = subprocess.run(
        [sys.executable, str(WRAPPER), others, *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.stderr.strip().endswith(
        "blocked frameworks asked for: []\nblocked frameworks loaded: []"
    ), done.stderr[-2000:]
    ends = "^" + END.format(r"(\d+)") + "\n"  # each command's last line: its exit code
    outputs = re.split(ends, done.stdout, flags=re.MULTILINE)
    results = [
        subprocess.CompletedProcess(command, int(code), out, done.stderr)
        for command, out, code in zip(commands, outputs[0::2], outputs[1::2], strict=False)
    ]
    assert [r.returncode for r in results] == [0] * len(commands), done.stderr[-3000:]
    return results


@pytest.mark.parametrize("backend", list(FRAMEWORKS))
@pytest.mark.trains
def test_train_evaluate_predict_and_report_on_each_backend(
    backend, tmp_path, tiny_npz, private_cache, monkeypatch, capsys
):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")  # the cache convnet keeps by default
    if importlib.util.find_spec(FRAMEWORKS[backend]) is None:
        pytest.fail(f"{backend} is not installed: make test installs convnet[jax,torch]")
    run = tmp_path / "run"
    (trained,) = convnet_without_others(
        backend,
        ["train", "--backend", backend, "--train", tiny_npz, "--preset", "seed", "--epochs", "3",
         "--batch-size", "64", "--out", run, "--json"],
    )  # fmt: skip
    result = json.loads(trained.stdout.strip().splitlines()[-1])
    assert result["test_accuracy"] > 0.5  # four classes: chance is 0.25
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["versions"]["keras_backend"] == backend
    assert manifest["topology"]["backend"] == backend

    def last_read() -> dict[str, bytes]:  # JAX stamps an entry's "-atime" file at each use
        return {p.name: p.read_bytes() for p in (private_cache / "convnet" / "xla").glob("*-atime")}

    compiled = last_read()
    image = make_images(1, seed=5).x[0]
    np.save(tmp_path / "one.npy", image)
    (run / "report.html").unlink()
    # The commands a user runs next, in a process of their own, which evaluate starts.
    evaluated, predicted, reported = convnet_without_others(
        backend,
        ["evaluate", run, "--json"],
        ["predict", run, tmp_path / "one.npy", "--json"],
        ["report", run],
    )
    if backend == "jax":  # they loaded code that training compiled from the cache
        used = last_read()
        assert compiled and any(used[name] != stamp for name, stamp in compiled.items())
    assert json.loads(evaluated.stdout)["test_accuracy"] == pytest.approx(
        result["test_accuracy"], abs=1e-6
    )
    assert json.loads(predicted.stdout)[0]["class"].startswith("bar")
    assert (run / "report.html").stat().st_size > 10_000 and "report:" in reported.stdout

    # Exports load the model on TensorFlow, whichever backend trained it: the suite's own.
    exported = run_main(capsys, "export", run, "--format", "onnx")
    assert exported.returncode == 0, exported.stderr[-2000:]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(run / "model.onnx"))
    feed = {session.get_inputs()[0].name: image[np.newaxis]}
    probabilities = session.run(None, feed)[0][0]
    assert json.loads(predicted.stdout)[0]["probability"] == pytest.approx(
        float(probabilities.max()), abs=1e-4
    )


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_run_serves_alike_on_every_backend(backend, trained_run):
    """A run's model.keras is the same on every backend: served on JAX or torch, it answers as
    on TensorFlow."""
    from fastapi.testclient import TestClient

    code = (
        "import sys, json\nfrom fastapi.testclient import TestClient\n"
        "from convnet import framework\nframework.load(sys.argv[2])\n"
        "from convnet.serving import create_app\n"
        "client = TestClient(create_app(sys.argv[1]))\n"
        "pixels = [[[0] * 28] * 28]\n"
        "answer = client.post('/v1/predict', json={'pixels': pixels})\n"
        "print(answer.status_code, json.dumps(answer.json()['predictions'][0]['top']))\n"
    )
    others = [f for b, f in FRAMEWORKS.items() if b != backend]
    blocker = (
        f"import sys\nsys.path.insert(0, {str(WRAPPER.parent)!r})\n"
        "from without_frameworks import Blocker\n"
        f"sys.meta_path.insert(0, Blocker({set(others)!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", blocker + code, str(trained_run), backend],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    status, top = done.stdout.strip().splitlines()[-1].split(" ", 1)
    from convnet.serving import create_app

    expected = TestClient(create_app(trained_run)).post(
        "/v1/predict", json={"pixels": [[[0] * 28] * 28]}
    )
    assert status == "200"
    for theirs, ours in zip(json.loads(top), expected.json()["predictions"][0]["top"], strict=True):
        assert theirs["class"] == ours["class"]
        assert theirs["probability"] == pytest.approx(ours["probability"], abs=1e-5)


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN's switch is for x86-64"
)
def test_tensorflow_runs_its_onednn_kernels_whatever_the_cpu():
    """TensorFlow turns oneDNN on by itself only on CPUs with AVX-512 VNNI, bfloat16 or AMX;
    convnet asks for it everywhere on x86-64 (on this AVX2 machine, a `fast` step 1.5x faster)."""
    code = (
        "from convnet import framework; framework.load('tensorflow'); "
        "from tensorflow.python.util import _pywrap_util_port as port; print(port.IsMklEnabled())"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.stdout.strip() == "True", done.stderr[-2000:]


def test_not_installed_hides_a_package_only_while_the_block_runs(tmp_path, monkeypatch):
    (tmp_path / "unused_framework").mkdir()
    (tmp_path / "unused_framework" / "__init__.py").write_text("NAME = 'unused'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with not_installed("unused_framework", "json"):
        with pytest.raises(ImportError):
            import unused_framework  # noqa: F401
        import json as already  # imported before the block: left alone

        assert already.dumps(1) == "1"
    import unused_framework

    assert unused_framework.NAME == "unused"
    with not_installed("unused_framework", hidden=False):
        assert importlib.import_module("unused_framework") is unused_framework
