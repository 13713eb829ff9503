"""The Open Inference Protocol (KServe v2, Triton's HTTP/REST API) over the served model.

    GET  /v2/health/live, /v2/health/ready, /v2, /v2/models/{name}, /v2/models/{name}/ready
    POST /v2/models/{name}/infer

The model's name is the run folder's name (`seed-20250101-120000`): what `convnet runs` lists and
what `/v1/model` reports as `run`. It takes one input, `input`, of uint8 pixels shaped
(N, H, W, C) (FP32 and the other integer types are accepted if their values are whole pixel values
in the training data's range) and returns `probabilities` (FP32, (N, classes)) and `class` (BYTES,
(N,), the most likely class's name). Tensor data comes as JSON, flat or nested, or in Triton's
binary extension (`Inference-Header-Content-Length`), which tritonclient sends by default; the
answer is always JSON, which every v2 client reads. Errors are `{"error": "..."}` with a 4xx.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel

from convnet.errors import DataError
from convnet.inputs import pixels_to_inputs
from convnet.serving.engines import MicroBatcher
from convnet.serving.payloads import Limits, PayloadTooLarge, byte_count, parse_json, read_body

INPUT = "input"
OUTPUTS = ("probabilities", "class")
# OIP datatypes a pixel array may come in, and their NumPy types for the binary extension.
DATATYPES = {
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP32": np.float32,
    "FP64": np.float64,
}


class UnknownModel(DataError):
    """The request names a model this server does not serve (HTTP 404)."""

    status_code = 404


class InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None


def add_v2_routes(
    app: FastAPI,
    model,
    batcher: MicroBatcher,
    limits: Limits,
    decoders: anyio.CapacityLimiter,
) -> None:
    """Adds the Open Inference Protocol's routes for the app's one model."""
    info = app.state.model_info
    name = info["run"]
    metadata = _metadata(info)

    def check(model_name: str) -> None:
        if model_name != name:
            raise UnknownModel(f"unknown model {model_name!r}; this server serves {name!r}.")

    @app.get("/v2/health/live", summary="Liveness (v2)", tags=["v2"])
    @app.get("/v2/health/ready", summary="Readiness (v2)", tags=["v2"])
    async def health() -> Response:
        return Response(status_code=200)  # the model loads before the server listens

    @app.get("/v2", summary="Server metadata (v2)", tags=["v2"])
    async def server_metadata() -> dict:
        return {"name": "convnet", "version": app.version, "extensions": ["binary_tensor_data"]}

    @app.get("/v2/models/{model_name}", summary="Model metadata (v2)", tags=["v2"])
    async def model_metadata(model_name: str) -> dict:
        check(model_name)
        return metadata

    @app.get("/v2/models/{model_name}/ready", summary="Model readiness (v2)", tags=["v2"])
    async def model_ready(model_name: str) -> Response:
        check(model_name)
        return Response(status_code=200)

    @app.post("/v2/models/{model_name}/infer", summary="Classify images (v2)", tags=["v2"])
    async def infer(model_name: str, request: Request) -> Response:
        check(model_name)
        body = await read_body(request, limits)
        header_length = request.headers.get("inference-header-content-length")
        decode = partial(decode_infer, body, header_length, model.input_shape, info, limits)
        request_id, wanted, x = await anyio.to_thread.run_sync(decode, limiter=decoders)
        probabilities = await batcher.predict(x)
        outputs = {
            "probabilities": {
                "name": "probabilities",
                "shape": list(probabilities.shape),
                "datatype": "FP32",
                "data": probabilities.ravel().tolist(),
            },
            "class": {
                "name": "class",
                "shape": [len(probabilities)],
                "datatype": "BYTES",
                "data": [info["class_names"][i] for i in probabilities.argmax(1)],
            },
        }
        body = {"model_name": name, "outputs": [outputs[o] for o in wanted]}
        if request_id is not None:
            body["id"] = request_id
        return Response(json.dumps(body), media_type="application/json")


def _metadata(info: dict) -> dict:
    return {
        "name": info["run"],
        "versions": [],
        "platform": "onnxruntime_onnx" if info["engine"] == "onnx" else "keras",
        "inputs": [{"name": INPUT, "datatype": "UINT8", "shape": [-1, *info["input_shape"]]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(info["class_names"])]},
            {"name": "class", "datatype": "BYTES", "shape": [-1]},
        ],
    }


def decode_infer(
    body: bytes, header_length: str | None, input_shape, info: dict, limits: Limits
) -> tuple[str | None, list[str], np.ndarray]:
    """An infer request's id, the outputs it asks for and its uint8 inputs (N, H, W, C);
    blocking, for a worker thread.

    Raises:
        DataError: naming what is wrong (HTTP 400 on the v2 routes).
    """
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
    if [i.name for i in request.inputs] != [INPUT]:
        raise DataError(
            f"inputs named {[i.name for i in request.inputs]}; expected one input, {INPUT!r}."
        )
    wanted = [o.name for o in request.outputs] if request.outputs else list(OUTPUTS)
    unknown = [o for o in wanted if o not in OUTPUTS]
    if unknown:
        raise DataError(f"unknown outputs {unknown}; the model has {list(OUTPUTS)}.")
    array = _tensor(request.inputs[0], binary, input_shape, limits)
    x = pixels_to_inputs(array, input_shape, INPUT, info["pixel_range"])
    return request.id, wanted, x


def _tensor(tensor: InferInput, binary: bytes, input_shape, limits: Limits) -> np.ndarray:
    """The input's values as an array of its declared shape and datatype."""
    dtype = DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise DataError(
            f"{tensor.name}: datatype {tensor.datatype!r}; expected one of {list(DATATYPES)}."
        )
    shape = tuple(tensor.shape)
    if len(shape) != 4 or shape[1:] != tuple(input_shape) or shape[0] < 1:
        raise DataError(
            f"{tensor.name}: shape {list(shape)}; expected [N, {', '.join(map(str, input_shape))}]."
        )
    if shape[0] > limits.max_images:
        raise PayloadTooLarge(f"over {limits.max_images:,} images in one request.")
    size = int(np.prod(shape))
    binary_size = (tensor.parameters or {}).get("binary_data_size")
    if binary_size is not None:
        if binary_size != len(binary) or binary_size != size * np.dtype(dtype).itemsize:
            raise DataError(
                f"{tensor.name}: binary_data_size {binary_size!r}; {size:,} {tensor.datatype} "
                f"values take {size * np.dtype(dtype).itemsize:,} bytes and "
                f"{len(binary):,} follow the header."
            )
        return np.frombuffer(binary, dtype).reshape(shape)
    if tensor.data is None:
        raise DataError(f"{tensor.name}: no data; send data or binary_data_size.")
    try:
        array = np.asarray(tensor.data, np.float64)
    except (ValueError, TypeError):
        raise DataError(f"{tensor.name}: data is not a rectangular array of numbers.") from None
    except OverflowError:  # JSON integers have no limit; 10**400 is past float64's
        raise DataError(f"{tensor.name}: data holds an integer too large for a pixel.") from None
    if array.size != size:
        raise DataError(
            f"{tensor.name}: {array.size:,} values; shape {list(shape)} needs {size:,}."
        )
    return array.reshape(shape)
