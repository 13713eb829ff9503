"""The HTTP service against hostile or broken clients: a real uvicorn server (`build_server`, as
`convnet serve` runs it) in a thread, spoken to over raw sockets where a client misbehaves."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import socket
import statistics
import threading
import time
from pathlib import Path, PurePosixPath, PureWindowsPath

import httpx
import numpy as np
import pytest
from PIL import Image

from convnet.serving import create_app
from convnet.serving.payloads import Limits
from convnet.serving.server import build_server

BIG = 6000  # a side of the heavy images: 36 million pixels, Limits.max_pixels
HEAVY = 10  # heavy images in one request: about 3 s of decoding on one core


@contextlib.contextmanager
def running(app, **options):
    """`app` served by `build_server(app, **options)` in a thread on a free loopback port.

    Yields:
        (host, port).
    """
    listening = socket.create_server(("127.0.0.1", 0))
    # lifespan="off": the servers of this module share one app, whose batcher the fixture closes.
    server = build_server(app, log_config=None, lifespan="off", **options)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the test server did not start"
    try:
        yield listening.getsockname()[:2]
    finally:
        server.should_exit = True
        thread.join(30)
        listening.close()


@pytest.fixture(scope="module")
def app(trained_run):
    limits = Limits(body_timeout=1.0, max_request_pixels=(HEAVY + 1) * BIG * BIG)
    app = create_app(trained_run, limits=limits)
    yield app
    app.state.batcher.close()


@pytest.fixture(scope="module")
def live(app):
    """The shared server: 1 s for headers and for bodies."""
    with running(app, header_timeout=1.0) as address:
        yield address


@pytest.fixture(scope="module")
def heavy_png() -> bytes:
    """A 6000 x 6000 1-bit PNG: 4 kB that decode into 36 million pixels."""
    buffer = io.BytesIO()
    Image.new("1", (BIG, BIG)).save(buffer, "PNG")
    return buffer.getvalue()


def url(address, path: str) -> str:
    return f"http://{address[0]}:{address[1]}{path}"


def png28() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and the seconds that took.

    Raises:
        TimeoutError: the connection is still open after `timeout` seconds.
    """
    start = time.monotonic()
    sock.settimeout(timeout)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received, time.monotonic() - start


def test_healthz_answers_while_a_heavy_request_decodes(live, heavy_png):
    files = [("files", (f"{i}.png", heavy_png, "image/png")) for i in range(HEAVY)]
    outcome = {}

    def predict():
        outcome["response"] = httpx.post(url(live, "/v1/predict"), files=files, timeout=300)

    decoding = threading.Thread(target=predict)
    decoding.start()
    time.sleep(0.5)  # the upload of 40 kB is long done; the decoding has begun
    latencies = []
    with httpx.Client(timeout=60) as http:
        for _ in range(9):
            start = time.perf_counter()
            assert http.get(url(live, "/healthz")).status_code == 200
            latencies.append(time.perf_counter() - start)
            time.sleep(0.02)
    in_flight = decoding.is_alive()
    decoding.join()
    median, worst = statistics.median(latencies) * 1000, max(latencies) * 1000
    print(f"/healthz while decoding: median {median:.1f} ms, max {worst:.1f} ms")
    assert in_flight, "the heavy request ended before the probes did: they measured nothing"
    assert statistics.median(latencies) < 0.1, latencies
    assert outcome["response"].status_code == 200, outcome["response"].text
    assert len(outcome["response"].json()["predictions"]) == HEAVY


def test_too_many_pixels_in_one_request_get_413_before_decoding(live, heavy_png):
    files = [("files", (f"{i}.png", heavy_png, "image/png")) for i in range(HEAVY + 2)]
    start = time.perf_counter()
    response = httpx.post(url(live, "/v1/predict"), files=files, timeout=60)
    assert response.status_code == 413, response.text
    assert response.json()["detail"] == (
        "the images hold 432,000,000 pixels in all; the limit is 396,000,000 pixels per request."
    )
    assert time.perf_counter() - start < 2  # refused from the headers: decoding them takes ~4 s


HEADER_TIMEOUT = 1.5  # seconds: neither the default (10) nor the body timeout (1)


@pytest.fixture(scope="module")
def headers_server(app):
    """A server of its own, cutting off request headers after HEADER_TIMEOUT."""
    with running(app, header_timeout=HEADER_TIMEOUT) as address:
        yield address


@pytest.mark.parametrize("after_a_request", [False, True])
def test_slow_request_headers_are_cut_off(headers_server, after_a_request):
    with socket.create_connection(headers_server) as sock:
        if after_a_request:  # a kept-alive connection must not become a slow one either
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            response = b""
            while not response.endswith(b'{"status":"ok"}'):
                response += sock.recv(65536)
            assert response.startswith(b"HTTP/1.1 200")
        # The clock runs from the connection's opening or its last response: just now.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")  # and no blank line, ever
        received, held = read_until_closed(sock, timeout=10)
    print(f"partial headers held {held:.2f} s (header_timeout {HEADER_TIMEOUT} s)")
    assert received.startswith(b"HTTP/1.1 408 ")
    assert HEADER_TIMEOUT - 0.2 <= held <= HEADER_TIMEOUT + 0.75


def test_slow_request_body_gets_408(live):
    with socket.create_connection(live) as sock:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"pixels": [[0, 0'
        )
        received, held = read_until_closed(sock, timeout=10)
    print(f"partial body held {held:.2f} s (body_timeout 1 s)")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower()
    assert json.loads(body)["detail"] == (
        "request body incomplete after 1 s (17 bytes received); send the whole body at once."
    )


def test_v2_request_headers_cut_off_get_the_protocols_error(live):
    with socket.create_connection(live) as sock:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: test\r\n")  # never finished
        received, _ = read_until_closed(sock, timeout=10)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"application/json" in head
    assert json.loads(body) == {"error": "request headers not received in time."}


def test_slow_v2_request_body_gets_the_protocols_error(live, trained_run):
    with socket.create_connection(live) as sock:
        sock.sendall(
            b"POST /v2/models/%s/infer HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n{"
            % trained_run.name.encode()
        )
        received, _ = read_until_closed(sock, timeout=10)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert json.loads(body)["error"].startswith("request body incomplete after 1 s")


def get(address, path: str = "/healthz") -> tuple[int, bytes]:
    """The status and body of `GET path` on a new connection, which the server then closes."""
    with socket.create_connection(address) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n" % path.encode())
        received, _ = read_until_closed(sock, timeout=10)
    return int(received.split(b" ", 2)[1]), received.partition(b"\r\n\r\n")[2]


def healthz_status(address) -> int:
    return get(address)[0]


def test_connections_past_the_cap_get_503(app):
    cap = 8
    with running(app, header_timeout=20.0, max_connections=cap) as address:
        held = []
        try:
            while healthz_status(address) == 200 and len(held) < 3 * cap:
                time.sleep(0.05)  # the probe's connection is gone from the server's count
                held.append(socket.create_connection(address))
                held[-1].sendall(b"GET /healthz HTTP/1.1\r\n")  # slow headers, holding on
            print(f"{len(held)} slow connections held before a 503 (max_connections {cap})")
            assert len(held) == cap - 1
            # Refused past the cap: the Open Inference Protocol's shape on /v2, text elsewhere.
            assert get(address, "/v2/health/ready") == (
                503,
                json.dumps({"error": "too many connections; try again later."}).encode(),
            )
            assert get(address) == (503, b"too many connections; try again later.\n")
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.2)
        assert healthz_status(address) == 200  # never a hung server


def multipart(parts: int, closed: bool = True, cut_last: bool = False) -> tuple[bytes, dict]:
    """A multipart body of `parts` 28 x 28 PNGs, maybe without its closing boundary or with its
    last part cut in the middle."""
    body = b"".join(
        b"--XyZ\r\nContent-Disposition: form-data; name=files; filename=%d.png\r\n"
        b"Content-Type: image/png\r\n\r\n%s\r\n" % (i, png28())
        for i in range(parts)
    )
    if cut_last:
        body = body[: -len(png28()) // 2]
    if closed:
        body += b"--XyZ--\r\n"
    return body, {"content-type": "multipart/form-data; boundary=XyZ"}


@pytest.mark.parametrize(
    "body",
    [multipart(3, closed=False), multipart(3, closed=False, cut_last=True)],
    ids=["no closing boundary", "last part cut"],
)
def test_truncated_multipart_body_gets_400(live, body):
    content, headers = body
    response = httpx.post(url(live, "/v1/predict"), content=content, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == (
        "truncated multipart body: it ends before the closing boundary '--XyZ--'; "
        "send the whole body."
    )
    content, headers = multipart(3)
    response = httpx.post(url(live, "/v1/predict"), content=content, headers=headers)
    assert response.status_code == 200 and len(response.json()["predictions"]) == 3


@pytest.mark.parametrize(
    ("header_length", "data", "message"),
    [
        # "²" is a digit to str.isdigit(), not to int(); sent as Latin-1, as HTTP decodes it.
        (b"\xb2", None, "Inference-Header-Content-Length '\u00b2'; expected a number of bytes"),
        (b"9" * 5000, None, "Inference-Header-Content-Length '9999"),  # int() takes 4,300
        (None, [10**400] + [0] * 783, "input: data holds an integer too large for a pixel."),
    ],
    ids=["superscript two", "5000 digits", "10**400"],
)
def test_v2_numbers_no_parser_takes_get_400(live, trained_run, header_length, data, message):
    tensor = {"name": "input", "shape": [1, 28, 28, 1], "datatype": "UINT8"}
    tensor |= {"data": data} if data else {"parameters": {"binary_data_size": 784}}
    header = json.dumps({"inputs": [tensor]}).encode()
    response = httpx.post(
        url(live, f"/v2/models/{trained_run.name}/infer"),
        content=header + (b"" if data else bytes(784)),
        headers={"inference-header-content-length": header_length} if header_length else {},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(message)


def test_client_gone_mid_upload_is_one_info_line(live, caplog):
    caplog.set_level(logging.INFO)
    with socket.create_connection(live) as sock:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n" + b" " * 5000
        )
        time.sleep(0.1)
    deadline = time.monotonic() + 10
    while not caplog.records and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # for any other line the disconnection would write
    lines = [(r.name, r.levelname, r.getMessage(), r.exc_info) for r in caplog.records]
    access = [line for line in lines if line[0] == "convnet.access"]  # its own log, one line
    assert [line for line in lines if line not in access] == [
        ("convnet.serving", "INFO", "client disconnected during POST /v1/predict", None)
    ]
    assert len(access) == 1 and '"POST /v1/predict" 499' in access[0][2]


def test_model_info_names_files_and_never_a_server_path(live, trained_run, tmp_path_factory):
    response = httpx.get(url(live, "/v1/model"))
    text, info = response.text, response.json()
    for folder in {Path(trained_run).parent, Path(trained_run).resolve().parent}:
        assert str(folder) not in text and json.dumps(str(folder))[1:-1] not in text
    assert str(tmp_path_factory.getbasetemp()) not in text

    def strings(value):
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    absolute = [
        s for s in strings(info) if PurePosixPath(s).is_absolute() or PureWindowsPath(s).drive
    ]
    assert absolute == []
    manifest = json.loads((Path(trained_run) / "manifest.json").read_text())
    assert info["data"]["test"] == {
        "name": "bars.npz:test",
        "examples": 200,
        "sha256": manifest["data"]["test"]["sha256"],
    }
    assert info["data"]["train"]["sha256"] == manifest["data"]["train"]["sha256"]
    assert info["metrics"]["test_data"] == "bars.npz:test"
    model = (Path(trained_run) / "model.keras").read_bytes()
    assert info["model_file"] == {
        "name": "model.keras",
        "sha256": hashlib.sha256(model).hexdigest(),
    }


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--header-timeout", "0", "header_timeout must be above 0; received 0.0."),
        ("--body-timeout", "-1", "body_timeout must be above 0; received -1.0."),
        ("--max-connections", "0", "max_connections must be above 0; received 0."),
    ],
)
def test_serve_refuses_guards_that_are_not_positive(flag, value, message, capsys):
    from convnet.cli import main

    assert main(["serve", "some-run", flag, value]) == 2  # before looking for the run
    assert capsys.readouterr().err == f"convnet: error: {message}\n"
