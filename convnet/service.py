"""`convnet serve`: a run's model served over HTTP (and gRPC) until interrupted.

`serve` checks the command and the run, listens before any model loads (`convnet.serving.listen`),
and runs the server (`convnet.serving.server`), each of whose worker processes makes its own app
(`convnet.serving.create_app`) with the run's framework loaded.
"""

from __future__ import annotations

import functools
from pathlib import Path

from convnet import framework
from convnet.backend import EXPORT_BACKEND
from convnet.runs import Run


def serve(
    run: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    engine: str = "keras",
    *,
    header_timeout: float = 10.0,
    body_timeout: float = 30.0,
    max_connections: int = 256,
    workers: int = 1,
    api_key: str | None = None,
    insecure: bool = False,
    grpc_port: int | None = None,
) -> None:
    """Serves a run's model over HTTP (see `convnet.serving.create_app`) until interrupted.

    Bound to a loopback address, the server answers anyone; bound to any other address it
    requires `api_key` unless `insecure` says to serve everyone on purpose. The same holds for
    gRPC, which listens on the same host (`convnet.serving.listen`).

    Args:
        header_timeout: seconds for a request's headers to arrive; slower connections are
            closed. Defaults to 10.
        body_timeout: seconds for a request's whole body to arrive; slower ones get a 408.
            Defaults to 30.
        max_connections: open connections per worker past which requests get a 503.
            Defaults to 256.
        workers: processes serving requests on the same port, each with the model loaded.
            Defaults to 1.
        api_key: the key requests must carry (`Authorization: Bearer KEY` or `X-API-Key`).
            Defaults to $CONVNET_API_KEY, or none.
        insecure: serve a non-loopback address without a key. Defaults to False.
        grpc_port: also serve the Open Inference Protocol over gRPC on this port of `host`
            (0: any free port), in every worker (`convnet.serving.grpc`). Defaults to None: no
            gRPC.

    Raises:
        ConfigError: a timeout, `max_connections` or `workers` not above 0, an empty key or one
            with spaces at its ends, the address or the gRPC port is in use, or a non-loopback
            address without a key or `insecure`.
    """
    from convnet.serving import listen

    listen.check_limits(
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_connections=max_connections,
        workers=workers,
    )
    api_key = listen.resolve_api_key(api_key)
    found = Run(run)
    found.config()
    found.require_model()
    # Before the model loads: a busy port fails at once.
    sockets = listen.open_sockets(
        host, port, api_key=api_key, insecure=insecure, grpc_port=grpc_port, workers=workers
    )
    from convnet.serving.server import run_server

    print(_serving_line(run, engine, host, sockets, workers, api_key), flush=True)
    factory = functools.partial(
        _serving_app,
        str(run),
        engine,
        body_timeout=body_timeout,
        api_key=api_key,
        grpc_address=sockets.grpc_address,
    )
    try:
        run_server(
            factory,
            sockets.http,
            workers,
            header_timeout=header_timeout,
            max_connections=max_connections,
        )
    finally:
        sockets.release()


def _serving_line(run, engine: str, host: str, sockets, workers: int, api_key) -> str:
    """What `serve` says as it starts: the run, the engine, the URL (with the port chosen, for
    --port 0), gRPC's address, and whether a key is required."""
    port = sockets.http.getsockname()[1]
    processes = f" in {workers} processes" if workers > 1 else ""
    key = " (API key required)" if api_key else ""
    url = f"http://{host}:{port}/"
    grpc = f" and gRPC at {sockets.grpc_address}" if sockets.grpc_address else ""
    return f"convnet: serving {run} with {engine}{processes} at {url}{grpc}{key}"


def _serving_app(
    run: str,
    engine: str,
    *,
    body_timeout: float,
    api_key: str | None,
    grpc_address: str | None = None,
):
    """The app of `serve`, made in the serving process (each worker's own, for --workers)."""
    if engine == "onnx":
        framework.load(EXPORT_BACKEND)
    else:
        framework.load_for_run(Run(run).config().backend)
    from convnet.serving import create_app
    from convnet.serving.payloads import Limits

    return create_app(
        run,
        engine=engine,
        limits=Limits(body_timeout=body_timeout),
        api_key=api_key,
        grpc_address=grpc_address,
    )
