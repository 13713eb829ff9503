"""The Open Inference Protocol over gRPC: `inference.GRPCInferenceService`, served by `grpc.aio`
on the HTTP app's event loop.

    server, port = await start_server(app, "127.0.0.1:8001", limits, decoders, api_key)
    ...
    await server.stop(STOP_GRACE)

The calls reach the HTTP app's own model through its `MicroBatcher` (`app.state.batcher`), so gRPC
and HTTP requests join the same batches. Requests are read and answers made by `oip`'s
`decode_request` and `infer_outputs`: a `ModelInferRequest` becomes the REST protocol's
`InferRequest`, its `raw_input_contents` standing where the binary extension's bytes stand.

Refusals carry the REST protocol's message with a gRPC status: a bad request INVALID_ARGUMENT, an
unknown model or version NOT_FOUND, too many images RESOURCE_EXHAUSTED, as is a message over
`Limits.max_bytes` (gRPC's own check, before any of this code runs), and a missing or wrong API
key UNAUTHENTICATED: every method needs it but ServerLive and ServerReady, as every HTTP route
does but the health checks (see `auth`). Outputs come as typed contents, or all as
`raw_output_contents` (the protocol allows no mix) when the inputs came raw, as KServe answers
(tritonclient.grpc reads numbers only from there), or when the request's `binary_data_output`
or an output's `binary_data` parameter asks. Each call is one line on the `convnet.access` log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

import anyio
import grpc
import numpy as np
from fastapi import FastAPI

from convnet.errors import ConfigError, ConvnetError, DataError
from convnet.serving.auth import key_matches
from convnet.serving.engines import MicroBatcher
from convnet.serving.grpc import grpc_predict_v2_pb2 as pb
from convnet.serving.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from convnet.serving.metrics import access_log, escape_for_log
from convnet.serving.oip import (
    DATATYPES,
    MODEL_VERSION,
    InferInput,
    InferRequest,
    OutputTensor,
    RequestedOutput,
    check_model,
    decode_request,
    infer_outputs,
    model_metadata,
    server_metadata,
)
from convnet.serving.payloads import Limits

log = logging.getLogger("convnet.serving")

SERVICE = "/inference.GRPCInferenceService/"
# Probes and load balancers call these without credentials; they tell nothing about the model.
OPEN_METHODS = frozenset({SERVICE + "ServerLive", SERVICE + "ServerReady"})
KEY_REFUSED = (
    "missing or wrong API key; send it as metadata 'authorization: Bearer KEY' or 'x-api-key: KEY'."
)
# Calls in progress per process past which gRPC answers RESOURCE_EXHAUSTED at once, as HTTP
# answers 503 past `convnet serve --max-connections` (256 by default): each may hold a message of
# up to `Limits.max_bytes`.
MAX_RPCS = 256
STOP_GRACE = 5.0  # seconds for the calls in progress to finish when the server stops
# The InferTensorContents field of each datatype; FP16 and BF16 come only as raw contents.
CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# A DataError's HTTP status as a gRPC status; any other DataError is INVALID_ARGUMENT.
STATUS = {
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


async def start_server(
    app: FastAPI,
    address: str,
    limits: Limits,
    decoders: anyio.CapacityLimiter,
    api_key: str | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Starts serving the app's model over gRPC on the running event loop.

    Args:
        app: the app of `create_app`, whose `state.model_info` and `state.batcher` it uses.
        address: "HOST:PORT" to listen on; port 0 picks a free one. The port is bound with
            SO_REUSEPORT (gRPC's default on Linux), so each of `convnet serve`'s worker
            processes binds it and the kernel shares the connections out.
        limits: `max_bytes` caps a message; `max_images` and the others as over HTTP.
        decoders: the worker threads that decode requests, shared with the HTTP routes.
        api_key: the key calls must carry, or None for none.

    Returns:
        The started server and the port it listens on.

    Raises:
        ConfigError: the address cannot be listened on.
    """
    server = grpc.aio.server(
        interceptors=[_Guard(api_key)],
        options=[
            ("grpc.max_receive_message_length", limits.max_bytes),
            ("grpc.so_reuseport", 1),
        ],
        maximum_concurrent_rpcs=MAX_RPCS,
    )
    service = InferenceService(
        app.state.model_info, app.state.batcher, limits, decoders, app.version
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        raise ConfigError(
            f"cannot listen for gRPC on {address}; pass another --grpc-port."
        ) from None
    await server.start()
    return server, port


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The protocol's methods over one loaded model; errors are left to `_Guard`."""

    def __init__(
        self,
        info: dict,
        batcher: MicroBatcher,
        limits: Limits,
        decoders: anyio.CapacityLimiter,
        version: str | None,
    ):
        self._info = info
        self._batcher = batcher
        self._limits = limits
        self._decoders = decoders
        self._input_shape = tuple(info["input_shape"])
        self._model_metadata = pb.ModelMetadataResponse(**model_metadata(info))
        self._server_metadata = pb.ServerMetadataResponse(**server_metadata(version))

    async def ServerLive(self, request, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)  # the model loads before the server starts

    async def ServerMetadata(self, request, context) -> pb.ServerMetadataResponse:
        return self._server_metadata

    async def ModelMetadata(self, request, context) -> pb.ModelMetadataResponse:
        check_model(self._info, request.name, request.version)
        return self._model_metadata

    async def ModelReady(self, request, context) -> pb.ModelReadyResponse:
        check_model(self._info, request.name, request.version)
        return pb.ModelReadyResponse(ready=True)

    async def ModelInfer(self, request, context) -> pb.ModelInferResponse:
        check_model(self._info, request.model_name, request.model_version)
        # Reading a message's typed contents costs about as much as decoding them: both off the
        # event loop, in the HTTP routes' decoding threads.
        decode = partial(self._decode, request)
        request_id, wanted, x, binary = await anyio.to_thread.run_sync(
            decode, limiter=self._decoders
        )
        probabilities = await self._batcher.predict(x)
        outputs = infer_outputs(probabilities, wanted, self._info, binary)
        return to_infer_response(self._info["run"], request_id, outputs)

    def _decode(self, request: pb.ModelInferRequest):
        parsed, raw = to_infer_request(request)
        request_id, wanted, x = decode_request(
            parsed, raw, self._input_shape, self._info, self._limits
        )
        binary = (parsed.parameters or {}).get("binary_data_output")
        if binary is None:
            binary = len(request.raw_input_contents) > 0
        return request_id, wanted, x, bool(binary)


def to_infer_request(request: pb.ModelInferRequest) -> tuple[InferRequest, list[bytes | None]]:
    """A `ModelInferRequest` as the REST protocol's request and each input's raw contents (None
    where its values are in its typed contents, which become the input's `data`).

    Raises:
        DataError: raw contents for some inputs only, or for an input that has typed contents
            too, or typed contents for a datatype that has none (FP16).
    """
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise DataError(
            f"raw_input_contents holds {len(raw)} tensors; the request has "
            f"{len(request.inputs)} inputs, and raw contents are for all or none."
        )
    inputs = []
    for tensor in request.inputs:
        data = None
        field = CONTENTS.get(tensor.datatype)
        if raw:
            if tensor.HasField("contents"):
                raise DataError(
                    f"{tensor.name}: both contents and raw_input_contents; send one of them."
                )
        elif field is not None:
            data = list(getattr(tensor.contents, field))
        elif tensor.datatype in DATATYPES:
            raise DataError(
                f"{tensor.name}: {tensor.datatype} values have no typed contents; send them "
                "in raw_input_contents."
            )
        inputs.append(
            InferInput(
                name=tensor.name,
                shape=list(tensor.shape),
                datatype=tensor.datatype,
                parameters=_parameters(tensor.parameters),
                data=data,
            )
        )
    outputs = [
        RequestedOutput(name=o.name, parameters=_parameters(o.parameters)) for o in request.outputs
    ]
    parsed = InferRequest(
        id=request.id or None,
        parameters=_parameters(request.parameters),
        inputs=inputs,
        outputs=outputs or None,
    )
    return parsed, raw or [None] * len(inputs)


def to_infer_response(
    model_name: str, request_id: str | None, outputs: list[OutputTensor]
) -> pb.ModelInferResponse:
    """`infer_outputs`' tensors as a `ModelInferResponse`: all raw if any is binary."""
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=MODEL_VERSION, id=request_id or ""
    )
    raw = any(tensor.binary for tensor in outputs)
    for tensor in outputs:
        message = response.outputs.add(
            name=tensor.name, datatype=tensor.datatype, shape=tensor.shape
        )
        if raw:
            response.raw_output_contents.append(tensor.raw())
        else:
            values = getattr(message.contents, CONTENTS[tensor.datatype])
            values.extend(_typed_values(tensor.data))
    return response


def _typed_values(data: np.ndarray) -> list:
    """Python values for a typed contents field: `bytes` stay bytes, numbers become floats or
    ints (tolist() is faster than letting protobuf convert NumPy scalars one by one)."""
    return list(data.ravel()) if data.dtype == object else data.ravel().tolist()


def _parameters(parameters) -> dict | None:
    """A map of `InferParameter`s as plain values (bool, int, str); None when empty."""
    plain = {}
    for name, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is not None:
            plain[name] = getattr(parameter, choice)
    return plain or None


class _Guard(grpc.aio.ServerInterceptor):
    """Around every call: the API key checked, errors turned into statuses, one access-log line.

    Args:
        api_key: the key calls must carry, or None for none.
    """

    def __init__(self, api_key: str | None):
        self._key = api_key.encode() if api_key is not None else None

    async def intercept_service(self, continuation, details):
        method = details.method
        if not (self._key is None or method in OPEN_METHODS or self._allowed(details)):
            return grpc.unary_unary_rpc_method_handler(_guarded(method, _refuse_key))
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler  # a method the service lacks: gRPC answers UNIMPLEMENTED
        return grpc.unary_unary_rpc_method_handler(
            _guarded(method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _allowed(self, details) -> bool:
        # Text metadata arrives as str; a key under a binary name ("-bin") is no key.
        metadata = [
            (name.encode(), value.encode())
            for name, value in details.invocation_metadata or ()
            if isinstance(value, str)
        ]
        return key_matches(metadata, self._key)


async def _refuse_key(request, context) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, KEY_REFUSED)


def _guarded(method: str, behavior):
    """`behavior` answering every refusal with its status and message, never UNKNOWN."""

    async def call(request, context):
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except asyncio.CancelledError:  # the client went away or its deadline passed
            code = grpc.StatusCode.CANCELLED
            raise
        except DataError as error:
            code = STATUS.get(getattr(error, "status_code", None), grpc.StatusCode.INVALID_ARGUMENT)
            await context.abort(code, str(error))
        except ConvnetError as error:
            code = grpc.StatusCode.INVALID_ARGUMENT
            await context.abort(code, str(error))
        except Exception as error:
            code = grpc.StatusCode.INTERNAL
            log.exception("unexpected error on gRPC %s", escape_for_log(method))
            await context.abort(code, f"internal error ({type(error).__name__}).")
        finally:
            milliseconds = (time.perf_counter() - start) * 1000
            access_log.info(
                '%s "gRPC %s" %s %.1f ms',
                escape_for_log(_peer(context.peer())),
                escape_for_log(method),
                code.name,
                milliseconds,
            )

    return call


def _peer(peer: str) -> str:
    """gRPC's "ipv4:127.0.0.1:5000" as the HTTP access log writes a client: "127.0.0.1:5000"."""
    kind, colon, address = peer.partition(":")
    return address if colon and kind in ("ipv4", "ipv6") else peer
