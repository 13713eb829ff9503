"""The HTTP prediction service: a FastAPI app factory over one loaded run.

    app = create_app("runs/seed-20250101-120000", engine="onnx")

Routes: `POST /v1/predict`, `GET /v1/model`, `GET /healthz`, `GET /` (the web page, from
`static/`), the Open Inference Protocol's `/v2/...` (see `protocol_v2`), Prometheus's
`GET /metrics`, and FastAPI's OpenAPI docs at `/docs`. Refused requests get a 4xx JSON error,
`{"detail": ...}` on /v1 and `{"error": ...}` on /v2; the server never answers a bad request with
a 500. With an `api_key`, every route but the health checks and the page needs it (see
`auth`). A client that goes away mid-request is one info line in the log. `/v1/model` names
the run's files and their SHA-256, never a path on the server.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import anyio
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from convnet.errors import ConvnetError, DataError
from convnet.predictions import top_classes
from convnet.runs import Run, source_name
from convnet.serving.auth import RequireApiKey, check_key
from convnet.serving.engines import MicroBatcher, load_engine
from convnet.serving.grpc import STOP_GRACE as GRPC_STOP_GRACE
from convnet.serving.grpc import start_server as start_grpc
from convnet.serving.metrics import Metrics, ObserveRequests, escape_for_log
from convnet.serving.payloads import Limits, PredictJSON, parse_request
from convnet.serving.protocol_v2 import add_v2_routes, is_v2_path

STATIC = Path(__file__).with_name("static")
log = logging.getLogger("convnet.serving")

PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "image files (PNG, JPEG, ...) or .npy pixel arrays",
                        }
                    },
                }
            },
            "application/json": {"schema": PredictJSON.model_json_schema()},
        },
    }
}


def create_app(
    run: str | Path,
    engine: str = "keras",
    limits: Limits | None = None,
    max_batch: int = 64,
    decode_threads: int = 2,
    api_key: str | None = None,
    grpc_address: str | None = None,
) -> FastAPI:
    """Loads a run's model once and returns the app that serves it.

    Args:
        run: the run folder.
        engine: "keras" (the `.keras` model) or "onnx" (ONNX Runtime). Defaults to "keras".
        limits: request limits. Defaults to `Limits()`.
        max_batch: the most images the micro-batcher joins into one model call. Defaults to 64.
        decode_threads: worker threads parsing and decoding request bodies, off the event loop;
            further requests wait for one. Defaults to 2, the cores of a small server.
        api_key: when given, requests need it (`Authorization: Bearer KEY` or `X-API-Key`),
            except the health checks and the web page. Defaults to None: open to all.
        grpc_address: "HOST:PORT" on which the app's lifespan also serves the Open Inference
            Protocol over gRPC (`convnet.serving.grpc`), with the same model, batcher, limits
            and key; the port it got is then `app.state.grpc_port`. Defaults to None: no gRPC.

    Returns:
        A FastAPI app; run it with any ASGI server (`convnet serve` uses uvicorn).

    Raises:
        ConfigError: `api_key` is empty or has spaces at its ends.
        RunError: the run folder or its model is missing.
    """
    if api_key is not None:
        check_key(api_key)  # now: Starlette makes RequireApiKey on the first request only
    run = Run(run)
    model = load_engine(run, engine)
    metrics = Metrics()
    batcher = MicroBatcher(model.predict, max_batch, on_batch=metrics.batch_size.observe)
    limits = limits or Limits()
    decoders = anyio.CapacityLimiter(decode_threads)
    app = FastAPI(
        title="convnet",
        summary=f"Image classification with the run {run.path.name}",
        version=_version("convnet"),
        lifespan=_lifespan(batcher, grpc_address, limits, decoders, api_key),
    )
    app.state.model_info = _model_info(run, model)
    app.state.batcher = batcher
    _add_error_handlers(app)
    _add_routes(app, model, batcher, limits, decoders)
    add_v2_routes(app, model, batcher, limits, decoders)
    _add_metrics_route(app, metrics)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if api_key is not None:
        app.add_middleware(RequireApiKey, key=api_key)
    app.add_middleware(ObserveRequests, metrics=metrics)  # the outermost: it sees the 401s too
    return app


def _lifespan(
    batcher: MicroBatcher,
    grpc_address: str | None,
    limits: Limits,
    decoders: anyio.CapacityLimiter,
    api_key: str | None,
):
    """The app's lifespan: gRPC served at `grpc_address` while the app runs, and the batcher
    closed when it stops."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        # gRPC runs on the app's own event loop (uvloop's too), so that its calls await the
        # same batcher as the HTTP routes.
        grpc_server = None
        if grpc_address is not None:
            grpc_server, app.state.grpc_port = await start_grpc(
                app, grpc_address, limits, decoders, api_key
            )
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(GRPC_STOP_GRACE)
            batcher.close()

    return lifespan


def _add_routes(
    app: FastAPI, model, batcher: MicroBatcher, limits: Limits, decoders: anyio.CapacityLimiter
) -> None:
    info = app.state.model_info
    class_names = info["class_names"]
    light = info["background_is_light"]
    pixel_range = info["pixel_range"]

    @app.post("/v1/predict", openapi_extra=PREDICT_BODY, summary="Classify images")
    async def predict(
        request: Request,
        top_k: int = Query(3, ge=1, description="how many classes to return per input"),
        return_input: bool = Query(False, description="add each preprocessed input as a PNG"),
    ) -> Response:
        """Top-k classes and probabilities for each uploaded image, `.npy` array or pixels."""
        names, x = await parse_request(
            request, model.input_shape, light, limits, pixel_range, decoders
        )
        probabilities = await batcher.predict(x)
        results = []
        for name, p, pixels in zip(names, probabilities, x, strict=True):
            result = top_classes(name, p, class_names, top_k)
            if return_input:
                result["input_png"] = _png_data_url(pixels)
            results.append(result)
        body = {"predictions": results, "engine": model.name}
        return Response(json.dumps(body), media_type="application/json")

    @app.get("/v1/model", summary="The served model")
    async def model_info() -> dict:
        """Preset, class names, input shape, test metrics, data and model checksums, versions."""
        return info

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")


def _add_metrics_route(app: FastAPI, metrics: Metrics) -> None:
    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        data, content_type = metrics.exposition()
        return Response(data, media_type=content_type)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DataError)
    async def data_error(request: Request, error: DataError) -> JSONResponse:
        status = getattr(error, "status_code", 422)
        if status == 422 and _is_v2(request):
            status = 400  # the Open Inference Protocol's status for a bad request
        # Refused before its body was read whole: reading the rest would only cost time.
        close = {"connection": "close"} if status in (408, 413) else None
        return _error(request, str(error), status, headers=close)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        # Starlette's own refusals (no such route: 404, a wrong method: 405) in the protocol's
        # shape on /v2, FastAPI's {"detail": ...} elsewhere.
        if not _is_v2(request):
            return await http_exception_handler(request, error)
        return _error(request, str(error.detail), error.status_code, headers=error.headers)

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, error: ClientDisconnect) -> Response:
        log.info("client disconnected during %s", _request_line(request))
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it

    @app.exception_handler(ConvnetError)
    async def convnet_error(request: Request, error: ConvnetError) -> JSONResponse:
        return _error(request, str(error), 400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", _request_line(request))
        return _error(request, f"internal error ({type(error).__name__}).", 500)


def _request_line(request: Request) -> str:
    """The method and path for a log line, escaped, as the access log writes them: both are the
    client's (see `escape_for_log`). The scope's path, not `url.path`, which silently drops a
    decoded CR or LF."""
    return escape_for_log(f"{request.method} {request.scope['path']}")


def _is_v2(request: Request) -> bool:
    return is_v2_path(request.scope["path"])


def _error(request: Request, message: str, status: int, headers=None) -> JSONResponse:
    """An error in the protocol's shape: `{"error": ...}` on /v2, `{"detail": ...}` on /v1."""
    return JSONResponse({"error" if _is_v2(request) else "detail": message}, status, headers)


def _model_info(run: Run, model) -> dict:
    manifest = run.read_json("manifest.json")
    data = manifest.get("data", {})
    reading = run.input_reading()
    metrics = {
        k: v
        for k, v in run.read_json("metrics.json").items()
        if k.startswith("test_") and isinstance(v, int | float)
    }
    if "test" in data:
        metrics["test_data"] = source_name(data["test"].get("source"))
    versions = dict(manifest.get("versions", {}))
    for package in ("fastapi", "uvicorn", "onnxruntime"):
        versions[f"serving_{package}"] = _version(package)
    return {
        "run": run.path.name,
        "preset": manifest.get("preset") or run.config().preset,
        "engine": model.name,
        # The engine's: an ONNX export carries its own, which serve exactly what the file scores.
        "class_names": list(model.class_names),
        "input_shape": list(model.input_shape),
        "input_dtype": "uint8",
        "background_is_light": reading.light_background,
        "pixel_range": reading.pixel_range,
        "flip": model.tta.flip,
        "shift_tta": model.tta.shift,
        "metrics": metrics,
        "model_file": {"name": run.model_file.name, "sha256": _sha256(run.model_file)},
        "data": {
            split: {
                "name": source_name(data[split].get("source")),
                "examples": data[split].get("examples"),
                "sha256": data[split].get("sha256"),
            }
            for split in ("train", "test")
            if isinstance(data.get(split), dict)
        },
        "versions": versions,
    }


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _png_data_url(pixels: np.ndarray) -> str:
    """One uint8 input (H, W, C) as a `data:image/png;base64,...` URL."""
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
