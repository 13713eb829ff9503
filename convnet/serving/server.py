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
import functools
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

log = logging.getLogger("convnet.serving")

_LATE = b"request headers not received in time.\n"
HEADERS_LATE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_LATE), _LATE)
)


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
            self.transport.write(HEADERS_LATE)
            self.transport.close()


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
