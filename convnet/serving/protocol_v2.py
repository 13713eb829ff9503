"""The Open Inference Protocol (KServe v2, Triton's HTTP/REST API) over the served model.

    GET  /v2/health/live, /v2/health/ready, /v2
    GET  /v2/models/{name}[/versions/1], /v2/models/{name}[/versions/1]/ready
    POST /v2/models/{name}[/versions/1]/infer

What the model takes and gives is `oip`'s. Tensor data comes as JSON, flat or nested, or in the
binary extension (`Inference-Header-Content-Length`), which tritonclient sends by default; outputs
are binary when the request's `binary_data_output` or an output's `binary_data` parameter asks.
Errors are `{"error": "..."}` with a 4xx.
"""

from __future__ import annotations

import json
from functools import partial

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from convnet.errors import DataError
from convnet.serving.engines import MicroBatcher
from convnet.serving.oip import (
    MODEL_VERSION,
    InferRequest,
    OutputTensor,
    RequestedOutput,
    check_model,
    decode_request,
    infer_outputs,
    model_metadata,
    server_metadata,
)
from convnet.serving.payloads import Limits, byte_count, parse_json, read_body


def is_v2_path(path: str) -> bool:
    """Whether a request path is the protocol's, whose errors are `{"error": ...}`."""
    return path == "/v2" or path.startswith("/v2/")


def add_v2_routes(
    app: FastAPI,
    model,
    batcher: MicroBatcher,
    limits: Limits,
    decoders: anyio.CapacityLimiter,
) -> None:
    """Adds the Open Inference Protocol's routes for the app's one model."""
    info = app.state.model_info
    metadata = model_metadata(info)
    versioned = "/v2/models/{model_name}/versions/{model_version}"

    @app.get("/v2/health/live", summary="Liveness (v2)", tags=["v2"])
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready", summary="Readiness (v2)", tags=["v2"])
    async def ready() -> dict:
        return {"ready": True}  # the model loads before the server listens

    @app.get("/v2", summary="Server metadata (v2)", tags=["v2"])
    async def server() -> dict:
        return server_metadata(app.version)

    @app.get("/v2/models/{model_name}", summary="Model metadata (v2)", tags=["v2"])
    @app.get(versioned, summary="Model metadata of a version (v2)", tags=["v2"])
    async def model_info(model_name: str, model_version: str | None = None) -> dict:
        check_model(info, model_name, model_version)
        return metadata

    @app.get("/v2/models/{model_name}/ready", summary="Model readiness (v2)", tags=["v2"])
    @app.get(f"{versioned}/ready", summary="Model readiness of a version (v2)", tags=["v2"])
    async def model_ready(model_name: str, model_version: str | None = None) -> dict:
        check_model(info, model_name, model_version)
        return {"name": model_name, "ready": True}

    @app.post("/v2/models/{model_name}/infer", summary="Classify images (v2)", tags=["v2"])
    @app.post(f"{versioned}/infer", summary="Classify images with a version (v2)", tags=["v2"])
    async def infer(
        model_name: str, request: Request, model_version: str | None = None
    ) -> Response:
        check_model(info, model_name, model_version)
        body = await read_body(request, limits)
        header_length = request.headers.get("inference-header-content-length")
        decode = partial(decode_infer, body, header_length, model.input_shape, info, limits)
        parsed, wanted, x = await anyio.to_thread.run_sync(decode, limiter=decoders)
        probabilities = await batcher.predict(x)
        binary = bool((parsed.parameters or {}).get("binary_data_output", False))
        outputs = infer_outputs(probabilities, wanted, info, binary)
        return _infer_response(info["run"], parsed.id, outputs)


def decode_infer(
    body: bytes, header_length: str | None, input_shape, info: dict, limits: Limits
) -> tuple[InferRequest, list[RequestedOutput], np.ndarray]:
    """A REST infer body read: the request, the outputs it asks for and the model's inputs."""
    header, binary = body, b""
    if header_length is not None:
        length = byte_count(header_length)
        if length is None or length > len(body):
            raise DataError(
                f"Inference-Header-Content-Length {header_length!r}; expected a number of bytes "
                f"up to the body's {len(body):,}."
            )
        header, binary = body[:length], body[length:]
    request = parse_json(InferRequest, header, "inference request")
    raw, offset = [], 0
    for tensor in request.inputs:  # binary inputs follow the header in the inputs' order
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            raw.append(None)
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise DataError(f"{tensor.name}: binary_data_size {size!r}; expected a byte count.")
        raw.append(binary[offset : offset + size])
        offset += size
    if offset != len(binary):
        raise DataError(
            f"the inputs' binary_data_size add up to {offset:,} bytes; {len(binary):,} follow "
            "the header."
        )
    _, wanted, x = decode_request(request, raw, input_shape, info, limits)
    return request, wanted, x


def _infer_response(name: str, request_id: str | None, outputs: list[OutputTensor]) -> Response:
    """JSON, or with binary outputs the JSON header followed by their bytes."""
    body: dict = {"model_name": name, "model_version": MODEL_VERSION, "outputs": []}
    if request_id is not None:
        body["id"] = request_id
    chunks = []
    for tensor in outputs:
        entry = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if tensor.binary:
            chunks.append(tensor.raw())
            entry["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            entry["data"] = tensor.values()
        body["outputs"].append(entry)
    if not chunks:
        return JSONResponse(body)
    header = json.dumps(body).encode()
    return Response(
        header + b"".join(chunks),
        media_type="application/octet-stream",
        headers={"inference-header-content-length": str(len(header))},
    )
