"""The Open Inference Protocol over gRPC (`convnet serve --grpc-port`): a real server driven by the
protocol's own clients, tritonclient.grpc and KServe's InferenceGRPCClient, each in the clients'
venv (tests/clients/); the app's gRPC server in process through convnet's generated stubs; and
serve's refusals of the gRPC port."""

from __future__ import annotations

import importlib.util
import io
import re
import socket
import struct
import time

import grpc
import numpy as np
import pytest
from conftest import make_images, run_client
from fastapi.testclient import TestClient
from PIL import Image
from test_serving_v2 import Server, free_port

import convnet
from convnet.errors import ConfigError
from convnet.serving import create_app
from convnet.serving.grpc import grpc_predict_v2_pb2 as pb
from convnet.serving.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

KEY = "s3cret-key"
KEY_REFUSED = (
    "missing or wrong API key; send it as metadata 'authorization: Bearer KEY' or 'x-api-key: KEY'."
)


@pytest.fixture(scope="module")
def sample(tmp_path_factory, trained_run):
    """Five images as a .npy, the run's own probabilities for them and its class names."""
    x = make_images(5, seed=7).x
    path = tmp_path_factory.mktemp("grpc-inputs") / "x.npy"
    np.save(path, x)
    run = convnet.load(trained_run)
    return path, x, run.predict(x), list(run.class_names)


@pytest.fixture(scope="module")
def served(trained_run):
    """A `convnet serve` with gRPC and an API key; the address of its gRPC port."""
    # uvicorn runs its app, and so the gRPC server, on uvloop when uvloop is installed.
    assert importlib.util.find_spec("uvloop") is not None
    grpc_port = free_port()
    server = Server(str(trained_run), "--grpc-port", str(grpc_port), "--api-key", KEY)
    try:
        server.wait_ready()  # HTTP answers once the app's lifespan has started gRPC
        yield server, f"127.0.0.1:{grpc_port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def triton(served, trained_run, sample):
    return run_client("triton_grpc", served[1], trained_run.name, sample[0], KEY)


@pytest.fixture(scope="module")
def kserve(served, trained_run, sample):
    return run_client("kserve_grpc", served[1], trained_run.name, sample[0], KEY)


def check_metadata(got: dict, name: str) -> None:
    assert got["live"] is True and got["ready"] is True and got["model_ready"] is True
    assert got["server_metadata"]["name"] == "convnet"
    assert {"binary_tensor_data", "classification"} <= set(got["server_metadata"]["extensions"])
    assert got["model_metadata"] == {
        "name": name,
        "versions": ["1"],
        "platform": "keras",
        "inputs": [{"name": "input", "datatype": "UINT8", "shape": [-1, 28, 28, 1]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "class", "datatype": "BYTES", "shape": [-1]},
        ],
    }


def test_triton_grpc_client_gets_metadata_and_the_runs_predictions(triton, trained_run, sample):
    _, _, expected, names = sample
    check_metadata(triton, trained_run.name)
    for kind, raw_outputs in (("raw", 2), ("typed", 0)):
        got = triton[kind]
        assert got["id"] == f"{kind}-1"
        # Raw inputs get raw outputs, the only numbers tritonclient reads; typed get typed.
        assert got["raw_outputs"] == raw_outputs
        np.testing.assert_allclose(got["probabilities"], expected, atol=1e-5)
        assert got["class"] == [names[i] for i in expected.argmax(1)]


def test_kserve_grpc_client_gets_metadata_and_the_runs_predictions(kserve, trained_run, sample):
    _, _, expected, names = sample
    check_metadata(kserve, trained_run.name)
    for kind in ("typed", "raw"):
        np.testing.assert_allclose(kserve[kind]["probabilities"], expected, atol=1e-5)
        assert kserve[kind]["class"] == [names[i] for i in expected.argmax(1)]
    assert kserve["typed"]["id"] == "kserve-False" and kserve["raw"]["id"] == "kserve-True"
    assert kserve["refused"]["no_key"] == {"status": "UNAUTHENTICATED", "message": KEY_REFUSED}
    assert kserve["refused"]["unknown_model"]["status"] == "NOT_FOUND"


def test_grpc_needs_the_api_key_but_for_the_health_checks(triton, served):
    # triton's live and ready calls carried no key, and were answered (the first test).
    refused = triton["refused"]
    for call in ("no_key", "wrong_key", "metadata_no_key"):
        assert refused[call] == {"status": "UNAUTHENTICATED", "message": KEY_REFUSED}, call
    log = "".join(served[0].output)
    assert re.search(
        r'\[\d+\] 127\.0\.0\.1:\d+ "gRPC /inference\.GRPCInferenceService/ModelInfer" '
        r"UNAUTHENTICATED [\d.]+ ms",
        log,
    ), log
    assert re.search(r'"gRPC /inference\.GRPCInferenceService/ServerLive" OK', log), log
    assert KEY not in log


def test_grpc_refusals_carry_the_protocols_status_and_message(triton, trained_run):
    refused = triton["refused"]
    assert refused["too_large"]["status"] == "RESOURCE_EXHAUSTED"
    assert "larger than max" in refused["too_large"]["message"]
    assert refused["too_many"] == {
        "status": "RESOURCE_EXHAUSTED",
        "message": "over 16,384 images in one request.",
    }
    assert refused["bad_shape"] == {
        "status": "INVALID_ARGUMENT",
        "message": "input: shape [1, 28, 28]; expected [N, 28, 28, 1].",
    }
    assert refused["unknown_model"] == {
        "status": "NOT_FOUND",
        "message": f"unknown model 'nope'; this server serves '{trained_run.name}'.",
    }
    assert refused["unknown_version"]["status"] == "NOT_FOUND"
    # Still serving after them all, the over-size message among them.
    assert len(triton["after_refusals"]["class"]) == 2


# In process: the app's gRPC server through convnet's own stubs ------------------------------


@pytest.fixture(scope="module")
def stub(trained_run):
    """The app's gRPC server (on TestClient's event loop) and a blocking stub for it."""
    with TestClient(create_app(trained_run, grpc_address="127.0.0.1:0")) as client:
        channel = grpc.insecure_channel(f"127.0.0.1:{client.app.state.grpc_port}")
        try:
            yield client.app, pb_grpc.GRPCInferenceServiceStub(channel)
        finally:
            channel.close()


def infer_request(name: str, x=None, raw: bool = False, **fields) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=name, **fields)
    if x is not None:
        tensor = request.inputs.add(name="input", datatype="UINT8", shape=list(x.shape))
        if raw:
            request.raw_input_contents.append(x.tobytes())
        else:
            tensor.contents.uint_contents.extend(x.ravel().tolist())
    return request


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0]).save(buffer, "PNG")
    return buffer.getvalue()


def probabilities(response: pb.ModelInferResponse) -> np.ndarray:
    output = response.outputs[0]
    if response.raw_output_contents:
        return np.frombuffer(response.raw_output_contents[0], "<f4").reshape(output.shape)
    return np.reshape(output.contents.fp32_contents, list(output.shape))


def test_grpc_reads_images_as_bytes_typed_or_raw(stub, trained_run, sample):
    _, x, expected, names = sample
    _, service = stub
    files = [png(image) for image in x]
    typed = pb.ModelInferRequest(model_name=trained_run.name)
    typed.inputs.add(name="input", datatype="BYTES", shape=[5]).contents.bytes_contents.extend(
        files
    )
    raw = pb.ModelInferRequest(model_name=trained_run.name)
    raw.inputs.add(name="input", datatype="BYTES", shape=[5, 1])
    # Each element after its 4-byte little-endian length, as Triton lays BYTES out.
    raw.raw_input_contents.append(b"".join(struct.pack("<I", len(f)) + f for f in files))
    for request in (typed, raw):
        response = service.ModelInfer(request)
        np.testing.assert_allclose(probabilities(response), expected, atol=1e-5)
    classes = response.raw_output_contents[1]  # the raw request's: raw outputs
    assert classes == b"".join(
        struct.pack("<I", len(n)) + n.encode() for n in (names[i] for i in expected.argmax(1))
    )


def test_grpc_outputs_typed_or_raw_as_the_parameters_ask(stub, trained_run, sample):
    _, x, expected, names = sample
    _, service = stub
    ask = {"binary_data_output": pb.InferParameter(bool_param=False)}
    typed = service.ModelInfer(infer_request(trained_run.name, x, raw=True, parameters=ask))
    assert not typed.raw_output_contents
    ask = {"binary_data_output": pb.InferParameter(bool_param=True)}
    raw = service.ModelInfer(infer_request(trained_run.name, x, parameters=ask, id="r"))
    assert len(raw.raw_output_contents) == 2 and raw.id == "r" and raw.model_version == "1"
    for response in (typed, raw):
        np.testing.assert_allclose(probabilities(response), expected, atol=1e-5)
    request = infer_request(trained_run.name, x)
    top = request.outputs.add(name="probabilities")
    top.parameters["classification"].int64_param = 2
    (output,) = service.ModelInfer(request).outputs
    assert output.datatype == "BYTES" and list(output.shape) == [5, 2]
    best = output.contents.bytes_contents[0].decode().split(":")
    assert best[1:] == [str(expected[0].argmax()), names[expected[0].argmax()]]


def tensor_with(change: str, name: str, x: np.ndarray) -> pb.ModelInferRequest:
    request = infer_request(name, x)
    if change == "raw_and_typed":
        request.raw_input_contents.append(x.tobytes())
    elif change == "fp16_typed":
        request.inputs[0].datatype = "FP16"
    elif change == "raw_for_some":
        request = infer_request(name, x, raw=True)
        request.inputs.add(name="other", datatype="UINT8", shape=[1])
    elif change == "pixel_300":
        request.inputs[0].contents.uint_contents[0] = 300
    elif change == "no_values":
        request.inputs[0].ClearField("contents")
    return request


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("raw_and_typed", "input: both contents and raw_input_contents; send one of them."),
        ("fp16_typed", "input: FP16 values have no typed contents; send them in raw_input"),
        ("raw_for_some", "raw_input_contents holds 1 tensors; the request has 2 inputs"),
        ("pixel_300", "input: image 0 holds 300, outside the pixel range"),
        ("no_values", r"input: 0 values; shape \[5, 28, 28, 1\] needs 3,920"),
    ],
)
def test_grpc_bad_tensors_are_invalid_arguments(stub, trained_run, sample, change, message):
    _, service = stub
    with pytest.raises(grpc.RpcError) as refused:
        service.ModelInfer(tensor_with(change, trained_run.name, sample[1]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(message, refused.value.details()), refused.value.details()


def test_grpc_answers_a_failure_inside_with_internal_never_unknown(
    stub, trained_run, sample, monkeypatch, caplog
):
    app, service = stub

    async def broken(x):
        raise RuntimeError("the model thread died")

    monkeypatch.setattr(app.state.batcher, "predict", broken)
    with pytest.raises(grpc.RpcError) as failed, caplog.at_level("ERROR"):
        service.ModelInfer(infer_request(trained_run.name, sample[1][:1]))
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert failed.value.details() == "internal error (RuntimeError)."
    assert "unexpected error on gRPC /inference.GRPCInferenceService/ModelInfer" in caplog.text


# serve's gRPC port ----------------------------------------------------------------------------


def test_two_workers_share_the_grpc_port(trained_run):
    """--grpc-port 0 is one port for both workers, each listening on it (SO_REUSEPORT)."""
    server = Server(str(trained_run), "--workers", "2", "--grpc-port", "0")
    try:
        server.wait_ready(180)
        port = int(re.search(r" and gRPC at 127\.0\.0\.1:(\d+)", server.output[0]).group(1))
        pids: set[str] = set()
        # The second worker may still be loading its model when the first answers (a loaded
        # machine took longer than 200 calls): call until both have answered, within a bound.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # a new connection each time: either may get it
            time.sleep(0.05)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                assert stub.ServerMetadata(pb.ServerMetadataRequest()).name == "convnet"
            log = "".join(server.output)
            pids = set(re.findall(r'\[(\d+)\] \S+ "gRPC \S+/ServerMetadata" OK', log))
            if len(pids) == 2:
                break
        assert len(pids) == 2, "".join(server.output)
    finally:
        code = server.stop()
    assert code == 0


@pytest.fixture
def not_started(monkeypatch):
    """api.serve up to the server's start, which is recorded instead."""
    from convnet.serving import server

    started = []
    monkeypatch.setattr(server, "run_server", lambda *args, **kwargs: started.append(args))
    monkeypatch.delenv("CONVNET_API_KEY", raising=False)
    return started


def test_serve_refuses_a_grpc_port_in_use(trained_run, not_started):
    from convnet import api

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^cannot listen for gRPC on 127\.0\.0\.1:{port} "):
            api.serve(trained_run, port=0, grpc_port=port)
    # Another server's gRPC port, bound with SO_REUSEPORT as gRPC binds: refused, not shared.
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(ConfigError, match=r"\(Address already in use\); pass another --grpc"):
            api.serve(trained_run, port=0, grpc_port=port)
    http = free_port()
    with pytest.raises(ConfigError, match=rf"on 127\.0\.0\.1:{http} \(Address already in use\)"):
        api.serve(trained_run, port=http, grpc_port=http)
    assert not_started == []


def test_grpc_off_loopback_needs_a_key_or_insecure_like_http(trained_run, not_started, capsys):
    from convnet.cli import main

    assert main(["serve", str(trained_run), "--host", "0.0.0.0", "--grpc-port", "0"]) == 2
    assert "0.0.0.0 is reachable from other machines" in capsys.readouterr().err
    assert (
        main(["serve", str(trained_run), "--host", "0.0.0.0", "--grpc-port", "0", "--insecure"])
        == 0
    )
    factory, listening, workers = not_started[0]
    listening.close()
    address = factory.keywords["grpc_address"]
    assert re.fullmatch(r"0\.0\.0\.0:\d+", address) and not address.endswith(":0")
    assert f"and gRPC at {address}" in capsys.readouterr().out
    # The port was held only while serving: free again now.
    with socket.create_server(("0.0.0.0", int(address.rsplit(":", 1)[1]))):
        pass
