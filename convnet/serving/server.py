"""The uvicorn server for the app, guarded against slow and numerous clients, in one process or
several.

    run_server(functools.partial(create_app, run), listening, workers=2)

uvicorn closes idle keep-alive connections, but not a connection whose request headers never
complete: 20,000 clients sending a header line now and then held every file descriptor.
`HeaderTimeoutProtocol` closes those; the app times out slow bodies (`Limits.body_timeout`), and
past `max_connections` open connections uvicorn answers 503 instead of queueing. With several
workers, each process has these guards (and its own `max_connections`: file descriptors are counted
per process).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from convnet.serving.protocol_v2 import is_v2_path

log = logging.getLogger("convnet.serving")
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def _refusal(status: bytes, message: str, v2: bool) -> bytes:
    """A whole response that closes the connection: `{"error": ...}` for the Open Inference
    Protocol's paths, plain text elsewhere."""
    if v2:
        body, media = json.dumps({"error": message}).encode(), b"application/json"
    else:
        body, media = message.encode() + b"\n", b"text/plain; charset=utf-8"
    return (
        b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
        % (status, media, len(body), body)
    )


HEADERS_LATE = {
    v2: _refusal(b"408 Request Timeout", "request headers not received in time.", v2)
    for v2 in (False, True)
}
BUSY = {
    v2: _refusal(b"503 Service Unavailable", "too many connections; try again later.", v2)
    for v2 in (False, True)
}


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection (after a 408) whose request headers
    are not complete `header_timeout` seconds after it opened or after its last response.

    Args:
        header_timeout: seconds; `uvicorn.Config` passes the other arguments. Defaults to 10.
    """

    def __init__(self, *args, header_timeout: float = 10.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._start_header_timer()

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn arms its keep-alive timer only when it awaits a new request, none being
        # pipelined; any byte received cancels that timer, so the header clock starts too.
        if self.timeout_keep_alive_task is not None:
            self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        self._stop_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.debug("%s sent no request headers in %g s", self.client, self.header_timeout)
            # The request line may have arrived: its path says which protocol's error to send.
            self.transport.write(HEADERS_LATE[is_v2_path(_path(self.url))])
            self.transport.close()


def _path(url: bytes) -> str:
    return url.split(b"?", 1)[0].decode("latin-1")


async def _service_unavailable(scope, receive, send) -> None:
    """uvicorn's answer past `limit_concurrency`, in the protocol's shape on /v2."""
    response = BUSY[is_v2_path(scope.get("path", ""))]
    head, body = response.split(b"\r\n\r\n", 1)
    headers = [tuple(line.split(b": ", 1)) for line in head.split(b"\r\n")[1:]]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# uvicorn answers past its connection cap with a plain-text 503 from this module-level app, which
# it looks up at each refusal; there is no setting for it, and a /v2 client expects JSON. Set on
# import, so in every worker process too (each spawned worker imports this module).
httptools_impl.service_unavailable = _service_unavailable


def build_server(
    app: ASGIApp,
    *,
    header_timeout: float = 10.0,
    max_connections: int = 256,
    **options,
) -> uvicorn.Server:
    """A uvicorn server for `app` with the timeouts and the connection cap set.

    Args:
        app: the ASGI app (see `create_app`).
        header_timeout: seconds for a request's headers to arrive, from the connection's opening
            or its previous response; slower connections are closed. Defaults to 10.
        max_connections: open connections (and requests in progress) past which a request gets
            a 503 at once (uvicorn's `limit_concurrency`). Defaults to 256, well under the
            usual 1,024 file descriptors of a process.
        **options: more `uvicorn.Config` arguments. Defaults: `log_level="warning"`,
            `access_log=False`.

    Returns:
        The server; `server.run(sockets=[...])` serves until interrupted.
    """
    protocol = functools.partial(HeaderTimeoutProtocol, header_timeout=header_timeout)
    options = {"log_level": "warning", "access_log": False, **options}
    config = uvicorn.Config(app, http=protocol, limit_concurrency=max_connections, **options)
    return uvicorn.Server(config)


def run_server(
    factory: Callable[[], ASGIApp],
    listening: socket.socket,
    workers: int = 1,
    **options,
) -> None:
    """Serves the app that `factory` makes on the `listening` socket until interrupted.

    With `workers` > 1, uvicorn's supervisor starts that many processes sharing the socket; each
    calls `factory` (a picklable callable: processes are spawned), so each loads the model once.
    Ctrl-C or SIGTERM stops them all; a worker that dies is replaced. Metrics go to a temporary
    `PROMETHEUS_MULTIPROC_DIR` that is removed at the end.

    Args:
        factory: makes the ASGI app, in the serving process.
        listening: the bound, listening socket.
        workers: processes serving requests. Defaults to 1: this process alone.
        **options: `build_server`'s options (`header_timeout`, `max_connections`, ...).
    """
    factory = functools.partial(_logging_factory, factory)
    if workers == 1:
        build_server(factory(), **options).run(sockets=[listening])
        return
    factory = functools.partial(_worker_factory, factory, os.getpid())
    metrics_dir = tempfile.mkdtemp(prefix="convnet-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # inherited by the spawned workers
    try:
        # uvicorn.run() takes only an import string for workers; the supervisor it uses takes
        # any picklable factory, and the socket already bound (so --port 0 and a busy port work
        # as with one process).
        server = build_server(factory, factory=True, workers=workers, **options)
        try:
            supervisor = Multiprocess(server.config, sockets=[listening])
        except TypeError:  # older uvicorn: it also takes the function each worker runs
            supervisor = Multiprocess(server.config, target=server.run, sockets=[listening])
        supervisor.run()
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _logging_factory(factory: Callable[[], ASGIApp]) -> ASGIApp:
    configure_access_log()  # in each worker: spawned processes start with logging unset
    return factory()


def _worker_factory(factory: Callable[[], ASGIApp], supervisor: int) -> ASGIApp:
    """A spawned worker's app, the worker bound to end with its `supervisor`: one killed
    outright (SIGKILL, the OOM killer) cannot stop its workers, which would serve on, holding the
    port, with nothing left to stop them. On Linux the kernel sends them SIGTERM (uvicorn's
    graceful stop) when it dies; gunicorn's workers watch their parent for the same reason."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != supervisor:  # it died before this worker asked
            os.kill(os.getpid(), signal.SIGTERM)
    return factory()


def configure_access_log() -> None:
    """Sends the `convnet.access` lines (see `convnet.serving.metrics`) to stderr, each with the
    serving process's id."""
    access = logging.getLogger("convnet.access")
    if not access.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
