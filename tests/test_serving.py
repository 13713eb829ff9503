"""The HTTP service: the API through FastAPI's test client, a real `convnet serve` process under a
short load test, and the web page in headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import io
import shutil
import socket
import struct
import subprocess
import time
import zlib

import httpx
import numpy as np
import pytest
from conftest import CLASS_NAMES, CONVNET, make_images, run_async
from fastapi.testclient import TestClient
from PIL import Image

from convnet.models.factory import load_model
from convnet.serving import create_app
from convnet.serving.engines import MicroBatcher
from convnet.serving.payloads import Limits


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze()).save(buffer, "PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims to be `width` x `height` pixels: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))


def npy_header(shape: tuple) -> bytes:
    """A .npy file whose header declares `shape` float64 values and holds none of them."""
    buffer = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def lab_tiff() -> bytes:
    """A TIFF in the LAB colour mode, which Pillow reads but cannot convert to greyscale."""
    buffer = io.BytesIO()
    Image.new("LAB", (28, 28)).save(buffer, format="TIFF")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(trained_run):
    with TestClient(create_app(trained_run, limits=Limits(max_bytes=200_000))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def images():
    return make_images(8, seed=5)


def test_multipart_images_get_their_classes(client, images):
    files = [("files", (f"{i}.png", png(x), "image/png")) for i, x in enumerate(images.x)]
    response = client.post("/v1/predict?top_k=2&return_input=true", files=files)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["file"] for p in predictions] == [f"{i}.png" for i in range(8)]
    assert all(
        len(p["top"]) == 2 and p["input_png"].startswith("data:image/png") for p in predictions
    )
    classes = [images.class_names[y] for y in images.y]
    assert sum(p["class"] == c for p, c in zip(predictions, classes, strict=True)) >= 6
    seen = Image.open(io.BytesIO(base64.b64decode(predictions[0]["input_png"].split(",")[1])))
    np.testing.assert_array_equal(np.asarray(seen), images.x[0, ..., 0])  # already 28x28, dark


def test_json_pixels_and_base64_agree_with_the_model(client, images, trained_run):
    from convnet.runs import Run

    body = {
        "pixels": images.x[:3].tolist(),
        "images": [base64.b64encode(png(images.x[0])).decode()],
    }
    response = client.post("/v1/predict?top_k=4", json=body)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["file"] for p in predictions] == ["images[0]", "pixels[0]", "pixels[1]", "pixels[2]"]
    expected = load_model(Run(trained_run).model_file).predict(images.x[:3], verbose=0)
    names = images.class_names
    got = np.array(
        [
            [dict((t["class"], t["probability"]) for t in p["top"])[c] for c in names]
            for p in predictions[1:]
        ]
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert predictions[0]["top"] == predictions[1]["top"]


def test_model_health_and_docs(client):
    info = client.get("/v1/model").json()
    assert info["preset"] == "seed" and info["class_names"] == ["bar0", "bar1", "bar2", "bar3"]
    assert info["input_shape"] == [28, 28, 1] and "test_accuracy" in info["metrics"]
    assert (info["flip"], info["shift_tta"]) == (False, 0)  # the seed recipe averages no views
    assert info["versions"]["keras"]
    assert client.get("/healthz").json() == {"status": "ok"}
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
    assert "<canvas" in client.get("/").text
    assert client.get("/static/app.js").status_code == 200


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [
        ({"files": {"files": ("big.png", b"\0" * 300_000, "image/png")}}, 413, "limit is 200,000"),
        ({"files": {"files": ("notes.txt", b"hello", "text/plain")}}, 415, "is not an image"),
        ({"files": {"files": ("x.png", b"not a png", "image/png")}}, 422, "not a readable image"),
        (
            {"files": {"files": ("bomb.png", png_header_only(60_000, 60_000), "image/png")}},
            422,
            "image too large",
        ),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "content type"),
        ({"json": {"images": ["***"]}}, 422, r"images\[0\]: not valid base64"),
        ({"json": {"pixels": [[1, 2], [3, 4]]}}, 422, r"shape \(2, 2\); expected"),
        (
            {"json": {"pixels": [[[300] * 28] * 28]}},
            422,
            r"image 0 holds 300, outside the pixel range 0 to 255 .*trained on, 0,255\.$",
        ),
        (
            {"json": {"pixels": [[[0.8] * 28] * 28]}},
            422,
            r"fractions \(they look scaled to \[0, 1\]: multiply by 255\)",
        ),
        ({"json": {"images": ["data:image/png;base64"]}}, 422, "data: URL without a comma"),
        (
            {"files": {"files": ("huge.npy", npy_header((10**11,)), "application/octet-stream")}},
            422,
            r"huge.npy: (the header declares more data|not a plain .npy array)",
        ),
        ({"files": {"files": ("lab.tif", lab_tiff(), "image/tiff")}}, 422, "lab.tif: cannot read"),
        ({"json": {"pixels": "nope"}}, 422, "invalid JSON request"),
        ({"json": {"pixels": [[1, 2], [3]]}}, 422, "pixels: not a rectangular array of numbers"),
        (  # chunked, so no Content-Length to refuse it by
            {
                "content": iter([b" " * 100_000] * 3),
                "headers": {"content-type": "application/json"},
            },
            413,
            "request body over the limit of 200,000 bytes",
        ),
        ({"json": {}}, 422, "no images in the request"),
    ],
)
def test_bad_requests_get_json_errors(client, request_kwargs, status, message):
    import re

    response = client.post("/v1/predict", **request_kwargs)
    assert response.status_code == status, response.text
    assert re.search(message, response.json()["detail"])
    assert client.get("/healthz").status_code == 200


def test_too_many_images_in_one_request_are_refused(trained_run):
    with TestClient(create_app(trained_run, limits=Limits(max_images=2))) as client:
        pixels = np.zeros((3, 28, 28), np.uint8).tolist()
        response = client.post("/v1/predict", json={"pixels": pixels})
        assert response.status_code == 413
        assert response.json()["detail"] == "over 2 images in one request."
        assert client.post("/v1/predict", json={"pixels": pixels[:2]}).status_code == 200


def test_micro_batcher_gathers_waiting_requests():
    sizes = []

    def predict(x):
        sizes.append(len(x))
        return x.reshape(len(x), -1).astype(np.float32)

    batcher = MicroBatcher(predict, max_batch=8)

    async def many():
        inputs = [np.full((1, 2), i) for i in range(20)]
        return inputs, await asyncio.gather(*(batcher.predict(x) for x in inputs))

    inputs, outputs = run_async(many())
    batcher.close()
    assert all(np.array_equal(x, y) for x, y in zip(inputs, outputs, strict=True))
    assert sizes == [8, 8, 4]  # all 20 were waiting when the first batch was made


def test_micro_batcher_failure_reaches_every_waiting_request():
    def predict(x):
        raise RuntimeError(f"model failed on {len(x)} images")

    batcher = MicroBatcher(predict, max_batch=8)

    async def many():
        requests = (batcher.predict(np.zeros((1, 2))) for _ in range(10))
        return await asyncio.gather(*requests, return_exceptions=True)

    results = run_async(many())
    batcher.close()
    assert [str(r) for r in results] == ["model failed on 8 images"] * 8 + [
        "model failed on 2 images"
    ] * 2


@pytest.fixture(scope="module")
def served(trained_run, tmp_path_factory):
    """A copy of the session's seed run (the server's own), and a test image it gets right."""
    from convnet.runs import Run

    run = shutil.copytree(trained_run, tmp_path_factory.mktemp("served") / "seed-bars")
    test = make_images(200, seed=2)  # the test split of `tiny_npz`
    probabilities = load_model(Run(run).model_file).predict(test.x, verbose=0)
    right = np.flatnonzero(probabilities.argmax(1) == test.y)
    best = right[probabilities[right, test.y[right]].argmax()]
    image = run.parent / "test-image.png"
    image.write_bytes(png(test.x[best]))
    return run, image, CLASS_NAMES[test.y[best]]


@pytest.fixture(scope="module")
def server(served):
    """The real `convnet serve` binary (ONNX engine) on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [CONVNET, "serve", str(served[0]), "--port", str(port), "--engine", "onnx"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if process.poll() is not None:
                pytest.fail(f"convnet serve exited: {process.stdout.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail("convnet serve did not answer /healthz within 120 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_real_server_survives_a_short_load_test(server, served):
    _, image, expected = served
    data = image.read_bytes()

    async def load(requests: int = 300, clients: int = 8) -> list[int]:
        statuses = []
        async with httpx.AsyncClient(base_url=server, timeout=10) as http:

            async def one_client():
                for _ in range(requests // clients):
                    response = await http.post("/v1/predict", files={"files": ("x.png", data)})
                    statuses.append(response.status_code)
                    assert response.json()["predictions"][0]["class"] == expected

            await asyncio.wait_for(asyncio.gather(*(one_client() for _ in range(clients))), 60)
        return statuses

    statuses = run_async(load())
    assert statuses == [200] * 296
    assert httpx.get(f"{server}/v1/model").json()["engine"] == "onnx"


def test_web_page_upload_and_drawing(server, served, browser, artifacts):
    _, image, expected = served
    page = browser.new_page(viewport={"width": 1180, "height": 620})
    try:
        page.goto(server)
        page.wait_for_function("document.getElementById('model').textContent.includes('seed')")
        page.set_input_files("#file", str(image))
        page.wait_for_function(f"document.getElementById('top-class').textContent === {expected!r}")
        assert page.locator("#bars li").count() == 3
        assert page.get_attribute("#preview", "src").startswith("data:image/png;base64,")
        page.screenshot(path=str(artifacts / "serving-upload.png"))

        page.click("#clear")
        assert page.text_content("#top-class") == "—"
        box = page.locator("#canvas").bounding_box()
        page.mouse.move(box["x"] + 90, box["y"] + 50)
        page.mouse.down()
        for x, y in ((190, 50), (190, 230), (90, 230), (90, 50)):
            page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
        page.mouse.up()
        page.wait_for_function("document.querySelectorAll('#bars li').length === 3")
        assert page.text_content("#top-class") in CLASS_NAMES
        # What the model got: the drawn outline, light on black, its height filling the frame.
        png = base64.b64decode(page.get_attribute("#preview", "src").split(",", 1)[1])
        drawn = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
        assert drawn.shape == (28, 28)
        assert max(drawn[0, 0], drawn[0, -1], drawn[-1, 0], drawn[-1, -1]) < 64
        rows, cols = np.nonzero(drawn > 128)
        assert rows.min() <= 1 and rows.max() >= 26  # 180 px high: the longest side
        assert 10 <= cols.max() - cols.min() <= 20  # 100 px wide: about 28 * 100 / 180
        assert drawn[14, 14] < 64  # an outline: its inside stays dark
        page.screenshot(path=str(artifacts / "serving-drawing.png"))
    finally:
        page.close()
