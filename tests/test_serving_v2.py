"""The Open Inference Protocol (v2), the API key, /metrics and the access log: in-process through
FastAPI's test client, and against real `convnet serve` processes with tritonclient."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import CONVNET, make_images
from fastapi.testclient import TestClient
from PIL import Image

from convnet.serving import auth, create_app

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def client(trained_run):
    with TestClient(create_app(trained_run)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def images():
    return make_images(5, seed=7)


def v1_probabilities(client, x) -> np.ndarray:
    """The /v1 answer for pixels `x` as an (N, classes) array, classes in the model's order."""
    names = client.get("/v1/model").json()["class_names"]
    predictions = client.post("/v1/predict?top_k=4", json={"pixels": x.tolist()}).json()
    return np.array(
        [
            [{t["class"]: t["probability"] for t in p["top"]}[c] for c in names]
            for p in predictions["predictions"]
        ]
    )


def infer_body(x, datatype="UINT8", nested=False, **extra) -> dict:
    data = x.tolist() if nested else x.ravel().tolist()
    tensor = {"name": "input", "shape": list(x.shape), "datatype": datatype, "data": data}
    return {"inputs": [tensor], **extra}


def test_v2_metadata_health_and_infer_agree_with_v1(client, images, trained_run):
    name = trained_run.name
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get(f"/v2/models/{name}/ready").status_code == 200
    metadata = client.get(f"/v2/models/{name}").json()
    assert metadata["name"] == name
    assert metadata["inputs"] == [{"name": "input", "datatype": "UINT8", "shape": [-1, 28, 28, 1]}]
    assert metadata["outputs"][0] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 4]}
    expected = v1_probabilities(client, images.x)
    for body in (
        infer_body(images.x, id="req-1"),
        infer_body(images.x, nested=True, id="req-1"),
        infer_body(images.x.astype(np.float32), "FP32", id="req-1"),
    ):
        response = client.post(f"/v2/models/{name}/infer", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["id"] == "req-1" and answer["model_name"] == name
        probabilities, classes = answer["outputs"]
        assert probabilities["shape"] == [5, 4] and probabilities["datatype"] == "FP32"
        got = np.array(probabilities["data"]).reshape(5, 4)
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert classes["data"] == [images.class_names[i] for i in expected.argmax(1)]
    only = infer_body(images.x[:1], outputs=[{"name": "class"}])
    outputs = client.post(f"/v2/models/{name}/infer", json=only).json()["outputs"]
    assert [o["name"] for o in outputs] == ["class"]


def test_v2_protocol_bodies_versions_and_route_errors(client, trained_run, images):
    name = trained_run.name
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    for prefix in (f"/v2/models/{name}", f"/v2/models/{name}/versions/1"):
        assert client.get(f"{prefix}/ready").json() == {"name": name, "ready": True}
        assert client.get(prefix).json()["versions"] == ["1"]
        answer = client.post(f"{prefix}/infer", json=infer_body(images.x[:1])).json()
        assert answer["model_name"] == name and answer["model_version"] == "1"
    missing = client.get(f"/v2/models/{name}/versions/2/ready")
    assert missing.status_code == 404
    assert missing.json() == {"error": f"model '{name}' has no version '2'; it has version '1'."}
    # Starlette's own refusals, in the protocol's shape under /v2 only.
    assert client.get("/v2/nothing/here").json() == {"error": "Not Found"}
    wrong_method = client.get(f"/v2/models/{name}/infer")
    assert wrong_method.status_code == 405 and wrong_method.json() == {
        "error": "Method Not Allowed"
    }
    assert client.get("/v1/nothing").json() == {"detail": "Not Found"}


def test_v2_takes_encoded_images_as_base64_bytes_like_v1(client, trained_run, images):
    files = []
    for pixels in images.x[:2]:
        buffer = io.BytesIO()
        Image.fromarray(pixels[..., 0]).save(buffer, "PNG")
        files.append(base64.b64encode(buffer.getvalue()).decode())
    body = {"inputs": [{"name": "input", "shape": [2, 1], "datatype": "BYTES", "data": files}]}
    answer = client.post(f"/v2/models/{trained_run.name}/infer", json=body)
    assert answer.status_code == 200, answer.text
    probabilities = np.array(answer.json()["outputs"][0]["data"]).reshape(2, -1)
    np.testing.assert_allclose(probabilities, v1_probabilities(client, images.x[:2]), atol=1e-6)


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"model": "nope"}, 404, r"unknown model 'nope'; this server serves 'seed-tiny'"),
        ({"name": "pixels"}, 400, r"inputs named \['pixels'\]; expected one input, 'input'"),
        ({"shape": [2, 28, 28]}, 400, r"input: shape \[2, 28, 28\]; expected \[N, 28, 28, 1\]"),
        ({"shape": [3, 28, 28, 1]}, 400, r"input: 1,568 values; shape \[3, 28, 28, 1\] needs"),
        ({"datatype": "BOOL"}, 400, r"input: datatype 'BOOL'; expected one of \['UINT8'"),
        ({"datatype": "BYTES"}, 400, r"input: BYTES shape \[2, 28, 28, 1\]; expected \[N\] or"),
        ({"data": [300] * 1568}, 400, r"input: image 0 holds 300, outside the pixel range"),
        ({"data": ["a"] * 1568}, 400, "input: data is not a rectangular array of numbers"),
        ({"outputs": [{"name": "logits"}]}, 400, r"unknown outputs \['logits'\]"),
        (
            {"outputs": [{"name": "probabilities", "parameters": {"classification": 5}}]},
            400,
            r"probabilities: classification 5; expected a whole number from 1 to 4",
        ),
        (
            {"outputs": [{"name": "class", "parameters": {"classification": 1}}]},
            400,
            r"class: classification is for the 'probabilities' output",
        ),
        (
            {"datatype": "BYTES", "shape": [2], "data": ["aGk=", "not base64!"]},
            400,
            r"input\[1\]: expected an encoded image as a base64 string",
        ),
        (
            {"datatype": "BYTES", "shape": [1], "data": ["aGk="]},
            400,
            r"input\[0\]: not a readable image \(unknown or unsupported format\)",
        ),
        ({"body": {"inputs": "x"}}, 400, "invalid inference request"),
        ({"body": b"{not json"}, 400, "invalid inference request"),
    ],
)
def test_v2_bad_requests_get_oip_errors(client, trained_run, change, status, message):
    tensor = {"name": "input", "shape": [2, 28, 28, 1], "datatype": "UINT8", "data": [0] * 1568}
    tensor.update({k: v for k, v in change.items() if k in tensor})
    body = change.get("body", {"inputs": [tensor], "outputs": change.get("outputs")})
    url = f"/v2/models/{change.get('model', trained_run.name)}/infer"
    if isinstance(body, bytes):
        response = client.post(url, content=body, headers={"content-type": "application/json"})
    else:
        response = client.post(url, json=body)
    assert response.status_code == status, response.text
    assert re.search(message, response.json()["error"]), response.json()


@pytest.mark.parametrize(
    ("header_length", "size", "message"),
    [
        ("12x", 784, r"Inference-Header-Content-Length '12x'; expected a number of bytes"),
        (None, 700, r"binary_data_size add up to 700 bytes; 784 follow the header"),
    ],
)
def test_v2_bad_binary_tensors_get_400(client, trained_run, header_length, size, message):
    tensor = {"name": "input", "shape": [1, 28, 28, 1], "datatype": "UINT8"}
    header = json.dumps({"inputs": [tensor | {"parameters": {"binary_data_size": size}}]})
    response = client.post(
        f"/v2/models/{trained_run.name}/infer",
        content=header.encode() + bytes(784),
        headers={"inference-header-content-length": header_length or str(len(header))},
    )
    assert response.status_code == 400, response.text
    assert re.search(message, response.json()["error"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "0"], "workers must be above 0; received 0."),
        (["--api-key", " "], "the API key is empty; pass a non-empty --api-key or CONVNET_API_KEY"),
    ],
)
def test_serve_refuses_bad_workers_and_empty_keys(trained_run, flags, message, capsys):
    from convnet.cli import main

    assert main(["serve", str(trained_run), *flags]) == 2
    assert capsys.readouterr().err.strip().startswith(f"convnet: error: {message}")


def test_metrics_count_requests_errors_and_batches(trained_run, images):
    with TestClient(create_app(trained_run)) as client:
        for _ in range(3):
            client.post("/v1/predict", json={"pixels": images.x[:2].tolist()})
        client.post("/v1/predict", json={})
        client.get("/no/such/page")
        text = client.get("/metrics").text
    assert 'convnet_requests_total{method="POST",route="/v1/predict",status="200"} 3.0' in text
    assert 'convnet_requests_total{method="POST",route="/v1/predict",status="422"} 1.0' in text
    assert 'convnet_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'convnet_errors_total{status="422"} 1.0' in text
    assert 'convnet_request_duration_seconds_count{route="/v1/predict"} 4.0' in text
    assert 'convnet_batch_images_bucket{le="2.0"} 3.0' in text
    assert 'convnet_batch_images_bucket{le="1.0"} 0.0' in text


def test_access_log_has_one_line_per_request_without_the_key(trained_run, caplog):
    with TestClient(create_app(trained_run, api_key=KEY)) as client, caplog.at_level("INFO"):
        client.get("/v1/model?token=abc", headers={"x-api-key": KEY})
        client.get("/v1/model", headers={"authorization": "Bearer wrong"})
    lines = [r.getMessage() for r in caplog.records if r.name == "convnet.access"]
    assert len(lines) == 2
    assert re.fullmatch(r'testclient:\d+ "GET /v1/model" 200 [\d.]+ ms', lines[0]), lines
    assert re.fullmatch(r'testclient:\d+ "GET /v1/model" 401 [\d.]+ ms', lines[1]), lines
    assert not any(KEY in line or "wrong" in line or "abc" in line for line in lines)


def test_api_key_is_required_and_compared_in_constant_time(trained_run, images, monkeypatch):
    compared = []
    real = auth.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    body = {"pixels": images.x[:1].tolist()}
    with TestClient(create_app(trained_run, api_key=KEY)) as client:
        refused = client.post("/v1/predict", json=body)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Bearer realm="convnet"'
        assert "missing or wrong API key" in refused.json()["detail"]
        wrong = client.post("/v1/predict", json=body, headers={"x-api-key": KEY + "x"})
        assert wrong.status_code == 401
        v2 = client.get(f"/v2/models/{trained_run.name}")
        assert v2.status_code == 401 and "API key" in v2.json()["error"]
        assert client.get("/metrics").status_code == 401
        bearer = {"authorization": f"Bearer {KEY}"}
        assert client.post("/v1/predict", json=body, headers=bearer).status_code == 200
        assert client.get("/v1/model", headers={"x-api-key": KEY}).status_code == 200
        for open_path in ("/healthz", "/v2/health/live", "/v2/health/ready", "/", "/static/app.js"):
            assert client.get(open_path).status_code == 200, open_path
    assert (KEY.encode() + b"x", KEY.encode()) in compared  # the wrong key went through hmac
    assert (KEY.encode(), KEY.encode()) in compared


# Real processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `convnet serve` process; its output (stdout and stderr) is collected in a thread."""

    def __init__(self, *args: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [CONVNET, "serve", *args, "--port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)

    def wait_ready(self, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"convnet serve exited: {''.join(self.output)[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        pytest.fail("convnet serve did not answer within the time")

    def stop(self, sig=signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def test_tritonclient_against_a_real_server_agrees_with_v1(trained_run, images):
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    server = Server(str(trained_run), "--engine", "keras")
    try:
        server.wait_ready()
        client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        name = trained_run.name
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(name)
        metadata = client.get_model_metadata(name)
        assert metadata["inputs"][0]["shape"] == [-1, 28, 28, 1]
        with httpx.Client(base_url=server.url) as http:
            expected = v1_probabilities(http, images.x)
        for binary in (False, True):  # the OIP's JSON tensors, and Triton's binary extension
            tensor = triton.InferInput("input", list(images.x.shape), "UINT8")
            tensor.set_data_from_numpy(images.x, binary_data=binary)
            outputs = [triton.InferRequestedOutput("probabilities", binary_data=False)]
            result = client.infer(name, [tensor], outputs=outputs, request_id="42")
            assert result.get_response()["id"] == "42"
            np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)
        with pytest.raises(InferenceServerException, match="unknown model 'other'"):
            client.infer("other", [tensor])
        wrong = triton.InferInput("input", [1, 28, 28], "UINT8")
        wrong.set_data_from_numpy(images.x[:1, ..., 0], binary_data=False)
        with pytest.raises(InferenceServerException, match=r"shape \[1, 28, 28\]; expected"):
            client.infer(name, [wrong])
        client.close()
    finally:
        server.stop()
    log = "".join(server.output)
    assert re.search(rf'\[\d+\] 127\.0\.0\.1:\d+ "POST /v2/models/{name}/infer" 200 ', log), log


def test_non_loopback_address_needs_a_key_or_insecure(trained_run):
    refused = subprocess.run(
        [CONVNET, "serve", str(trained_run), "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "CONVNET_API_KEY"},
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "convnet: error: 0.0.0.0 is reachable from other machines: pass --api-key KEY (or set "
        "CONVNET_API_KEY), or --insecure to serve everyone without a key."
    ], refused.stderr
    # Bound to every address, reached over loopback only.
    server = Server(str(trained_run), "--host", "0.0.0.0", env={"CONVNET_API_KEY": KEY})
    try:
        server.wait_ready()
        assert httpx.get(f"{server.url}/v1/model").status_code == 401
        ok = httpx.get(f"{server.url}/v1/model", headers={"authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json()["run"] == trained_run.name
    finally:
        server.stop()
    assert "(API key required)" in server.output[0]


def raw_get(port: int, target: bytes) -> bytes:
    """The whole answer to `GET target`, sent as written (no client re-encodes it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n" % target)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


# A whole access-log line of the server's format, after a CR LF, in the path of a keyless request.
FORGED = (
    b"/v1/model%0d%0a2026-12-06%2017:00:00,000%20[1]%2010.0.0.9:4444%20%22POST%20/v1/predict"
    b"%22%20200%203.0%20ms"
)


def test_access_log_escapes_what_the_client_sent(trained_run):
    server = Server(str(trained_run), "--api-key", KEY)
    try:
        server.wait_ready()
        forged = raw_get(server.port, FORGED)
        # ESC (a terminal's colour), a quote, a backslash and U+2028 (a line break to many readers)
        colored = raw_get(server.port, b"/v1/%1b%5b31mred%22%5c%e2%80%a8")
    finally:
        server.stop()
    assert forged.startswith(b"HTTP/1.1 401 ") and colored.startswith(b"HTTP/1.1 401 ")
    log = "".join(server.output)
    lines = log.splitlines()  # also splits at U+2028
    assert not [line for line in lines if line.startswith("2026-12-06 17:00:00,000")], log
    assert "\x1b" not in log
    entry = r"\S+ \S+ \[\d+\] 127\.0\.0\.1:\d+ \"GET {}\" 401 [\d.]+ ms"
    forged_path = re.escape(
        r"/v1/model\x0d\x0a2026-12-06 17:00:00,000 [1] 10.0.0.9:4444 \x22POST /v1/predict\x22 "
        r"200 3.0 ms"
    )
    colored_path = re.escape(r"/v1/\x1b[31mred\x22\x5c\u2028")
    assert len([line for line in lines if re.fullmatch(entry.format(forged_path), line)]) == 1
    assert len([line for line in lines if "10.0.0.9" in line]) == 1, log
    assert len([line for line in lines if re.fullmatch(entry.format(colored_path), line)]) == 1
    assert len([line for line in lines if "31mred" in line]) == 1, log


@pytest.mark.parametrize("key", [" k ", "k\n", "\tk"])
def test_serve_refuses_a_key_with_spaces_at_its_ends(trained_run, key):
    """HTTP drops the spaces at a header value's ends: the server would refuse every request."""
    refused = subprocess.run(
        [CONVNET, "serve", str(trained_run), "--api-key", key, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "convnet: error: the API key has spaces at its ends, which no request can carry; pass "
        "--api-key or CONVNET_API_KEY without them."
    ], refused.stderr


def test_api_and_app_refuse_a_key_with_spaces_at_its_ends(trained_run, monkeypatch):
    from convnet import api
    from convnet.errors import ConfigError
    from convnet.serving import server

    started = []  # a key taken would serve for ever: fail instead
    monkeypatch.setattr(server, "run_server", lambda *args, **kwargs: started.append(args))
    with pytest.raises(ConfigError, match=r"^the API key has spaces at its ends, which no"):
        api.serve(trained_run, port=0, api_key=" k ")
    monkeypatch.setenv("CONVNET_API_KEY", "k\n")  # as a secret file read into a variable holds it
    with pytest.raises(ConfigError, match=r"^the API key has spaces at its ends"):
        api.serve(trained_run, port=0)
    # At once, not on the first request: Starlette makes its middleware only then.
    with pytest.raises(ConfigError, match=r"^The API key has spaces at its ends"):
        create_app(trained_run, api_key="k ")
    with pytest.raises(ConfigError, match=r"^The API key must not be empty"):
        create_app(trained_run, api_key="")
    assert started == []


def test_two_workers_share_the_port_and_stop_together(trained_run, images):
    metrics_dirs = set(Path(tempfile.gettempdir()).glob("convnet-metrics-*"))
    server = Server(str(trained_run), "--workers", "2", "--header-timeout", "1")
    try:
        server.wait_ready(180)
        pids = set()
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:
            # A new connection each time: the kernel hands them to either process.
            response = httpx.post(
                f"{server.url}/v1/predict", json={"pixels": images.x[:1].tolist()}
            )
            assert response.status_code == 200
            time.sleep(0.05)
            pids = set(re.findall(r'\[(\d+)\] \S+ "POST /v1/predict" 200', "".join(server.output)))
        assert len(pids) == 2, "".join(server.output)
        metrics = httpx.get(f"{server.url}/metrics").text  # every worker's counts, added up
        answered = re.search(
            r'convnet_requests_total\{method="POST",route="/v1/predict",status="200"\} (\S+)',
            metrics,
        )
        assert answered and float(answered.group(1)) == len(
            re.findall(r'"POST /v1/predict" 200', "".join(server.output))
        )
        with socket.create_connection(("127.0.0.1", server.port)) as slow:  # issue 24's guard
            slow.settimeout(10)
            slow.sendall(b"GET /healthz HTTP/1.1\r\n")
            assert slow.recv(100).startswith(b"HTTP/1.1 408")
    finally:
        code = server.stop()
    assert code == 0
    assert set(Path(tempfile.gettempdir()).glob("convnet-metrics-*")) == metrics_dirs
    for pid in map(int, pids):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_web_page_asks_for_the_key(trained_run, images, browser, artifacts, tmp_path):
    image = tmp_path / "bar.png"
    Image.fromarray(images.x[0, ..., 0]).save(image)
    server = Server(str(trained_run), "--api-key", KEY)
    page = browser.new_page(viewport={"width": 1180, "height": 620})
    try:
        server.wait_ready()
        page.goto(server.url)
        page.wait_for_selector("#key-form", state="visible")
        assert page.text_content("#model") == "the server needs an API key"
        page.fill("#api-key", "wrong")
        page.click("#key-form button")
        page.wait_for_function(
            "document.getElementById('model').textContent === 'the server refused this API key'"
        )
        page.screenshot(path=str(artifacts / "serving-api-key-form.png"))
        page.fill("#api-key", KEY)
        page.click("#key-form button")
        page.wait_for_function("document.getElementById('model').textContent.includes('seed')")
        assert page.is_hidden("#key-form")
        assert page.evaluate("sessionStorage.getItem('convnet-api-key')") == KEY
        page.set_input_files("#file", str(image))
        page.wait_for_function("document.querySelectorAll('#bars li').length === 3")
        assert page.text_content("#top-class") in images.class_names
        page.screenshot(path=str(artifacts / "serving-api-key.png"))
    finally:
        page.close()
        server.stop()
    log = "".join(server.output)
    assert '"GET /v1/model" 401' in log and '"POST /v1/predict" 200' in log


def test_insecure_serves_every_address_without_a_key(trained_run, monkeypatch):
    """--insecure gets past the refusal; what is served then is the same app (see above), so
    the server itself is left out here."""
    from convnet import api
    from convnet.serving import server

    started = []
    monkeypatch.setattr(server, "run_server", lambda *args, **kwargs: started.append(args))
    monkeypatch.delenv("CONVNET_API_KEY", raising=False)
    api.serve(trained_run, "0.0.0.0", 0, insecure=True)
    factory, listening, workers = started[0]
    assert listening.getsockname()[0] == "0.0.0.0" and workers == 1
    assert factory.keywords["api_key"] is None
    listening.close()


def test_a_killed_worker_is_replaced_quietly_and_workers_end_with_their_supervisor(
    trained_run, images
):
    """A worker killed is replaced by uvicorn's supervisor; neither writes TensorFlow's start-up
    lines, with no log level set (conftest's would hide them whatever convnet did). The
    supervisor killed outright, its workers end too: they would serve on, holding the port."""
    server = Server(str(trained_run), "--workers", "2", env={"TF_CPP_MIN_LOG_LEVEL": ""})
    try:
        server.wait_ready(180)
        workers = serving_workers(server.process.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while not (started := set(serving_workers(server.process.pid)) - set(workers)):
            assert time.monotonic() < deadline, "".join(server.output)
            time.sleep(0.2)
        (replacement,) = started
        # Once the replacement has answered (its access line names its process), it has
        # started up and loaded its model: whatever that writes is in the output.
        while f"[{replacement}]" not in "".join(server.output):
            assert time.monotonic() < deadline, "".join(server.output)
            response = httpx.post(
                f"{server.url}/v1/predict", json={"pixels": images.x[:1].tolist()}
            )
            assert response.status_code == 200
            time.sleep(0.05)
        workers = serving_workers(server.process.pid)
        assert len(workers) == 2 and replacement in workers
        server.process.kill()
        server.process.wait()
        while alive := [pid for pid in workers if running(pid)]:
            assert time.monotonic() < deadline, f"workers {alive} outlived their supervisor"
            time.sleep(0.1)
    finally:
        server.stop()
    log = "".join(server.output)
    assert not re.search(r"oneDNN|cuInit|^[IWE]\d{4} ", log, re.M), log[-3000:]


def running(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (a zombie has; Linux)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def serving_workers(pid: int) -> list[int]:
    """The worker processes the server `pid` spawned that are alive (Linux): not the
    resource tracker that multiprocessing starts beside them, first."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(FileNotFoundError):  # reaped since: not alive
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found
