"""The Open Inference Protocol's REST side driven by its own clients, KServe's and Triton's, each
in the clients' venv (tests/clients/) against a real `convnet serve` process."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_images, run_client
from PIL import Image
from test_serving_v2 import Server

import convnet


@pytest.fixture(scope="module")
def live(trained_run):
    server = Server(str(trained_run))
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sample(tmp_path_factory, trained_run):
    """Three images as a .npy, the first also as a PNG file, and the run's own probabilities."""
    folder = tmp_path_factory.mktemp("client-inputs")
    x = make_images(3, seed=11).x
    np.save(folder / "x.npy", x)
    Image.fromarray(x[0, ..., 0]).save(folder / "first.png")
    expected = convnet.load(trained_run).predict(x)
    return folder / "x.npy", folder / "first.png", expected


def check_classification(rows, expected: np.ndarray, names: list[str]) -> None:
    """Triton's classification output: per image its top 2 as `score:index:label`, best first."""
    for row, p in zip(rows, expected, strict=True):
        indexes = np.argsort(-p)[:2]
        assert [int(entry.split(":")[1]) for entry in row] == indexes.tolist()
        for entry, i in zip(row, indexes, strict=True):
            score, _, label = entry.split(":", 2)
            assert abs(float(score) - p[i]) < 1e-5 and label == names[i]


def test_kserve_rest_client_runs_health_and_every_kind_of_infer(live, trained_run, sample):
    npy, png, expected = sample
    names = convnet.load(trained_run).class_names
    got = run_client("kserve_rest", live.url, trained_run.name, npy, png)
    # KServe's client reads {"live": true} and {"ready": true}: empty bodies failed it.
    assert got["live"] is True and got["ready"] is True and got["model_ready"] is True
    for kind in ("json", "binary"):
        assert got[kind]["id"] == "k1"
        probabilities = np.array(got[kind]["outputs"]["probabilities"])
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert got["json"]["outputs"]["class"] == [names[i] for i in expected.argmax(1)]
    np.testing.assert_allclose(got["png"]["outputs"]["probabilities"], expected[:1], atol=1e-5)
    check_classification(got["classification"], expected, names)
    assert got["bad_shape"]["status"] == 400
    assert "input: shape [3, 5, 28, 1]; expected [N, 28, 28, 1]" in got["bad_shape"]["message"]


def test_triton_http_client_runs_versions_datatypes_binary_and_classification(
    live, trained_run, sample
):
    npy, png, expected = sample
    names = convnet.load(trained_run).class_names
    got = run_client("triton_http", f"127.0.0.1:{live.port}", trained_run.name, npy, png)
    assert got["live"] and got["ready"] and got["model_ready"] and got["versioned_ready"]
    assert {"binary_tensor_data", "classification"} <= set(got["server"]["extensions"])
    assert got["model"]["versions"] == ["1"]
    for binary in ("binary_False", "binary_True"):
        np.testing.assert_allclose(got[binary]["probabilities"], expected, atol=1e-5)
        assert got[binary]["class"] == [names[i] for i in expected.argmax(1)]
    for datatype in ("FP16", "INT16"):
        np.testing.assert_allclose(got[datatype], expected, atol=1e-5)
    np.testing.assert_allclose(got["png"], expected[:1], atol=1e-5)
    check_classification(got["classification"], expected, names)
    assert "has no version '7'; it has version '1'" in got["bad_version"]
