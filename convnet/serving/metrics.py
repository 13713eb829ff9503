"""Prometheus metrics and the access log, recorded by one ASGI middleware around the app.

`GET /metrics` exposes requests by route, method and status, their latency, errors by status
and the micro-batcher's batch sizes. With several worker processes (`convnet serve --workers N`)
each process writes its values to files in `PROMETHEUS_MULTIPROC_DIR`, which the server creates
and removes, and `/metrics` adds up every process's files (prometheus-client's multiprocess
mode), whichever worker answers the scrape.

The access log is one line per request on the `convnet.access` logger: client, method, path
(without its query string), status, duration. Never a header or a body, so never an API key.
What a client chose (its path, method, forwarded address) goes through `escape_for_log`: a path
decoded from `%0d%0a` would otherwise end the line and write one of the client's making.
"""

from __future__ import annotations

import logging
import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("convnet.access")

# Seconds: a 28x28 image takes about 2 ms alone, a batch of 64 under load up to a second.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384)


class Metrics:
    """The service's metrics, in a registry of their own so that each app counts apart."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "convnet_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "convnet_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "convnet_errors",
            "Responses with a 4xx or 5xx status, by status.",
            ["status"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "convnet_batch_images",
            "Images per model call: the micro-batcher's batch sizes.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus's text format, and its content type."""
        registry = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST


class ObserveRequests:
    """ASGI middleware: times every HTTP request, counts it and writes its access-log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app fails before starting a response

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._record(scope, status, time.perf_counter() - start)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = _route(scope)
        self.metrics.requests.labels(route, scope["method"], str(status)).inc()
        self.metrics.latency.labels(route).observe(seconds)
        if status >= 400:
            self.metrics.errors.labels(str(status)).inc()
        client = scope.get("client")
        access_log.info(
            '%s "%s %s" %d %.1f ms',
            escape_for_log(f"{client[0]}:{client[1]}") if client else "-",
            escape_for_log(scope["method"]),
            escape_for_log(scope["path"]),
            status,
            seconds * 1000,
        )


def escape_for_log(text: str) -> str:
    r"""`text` with every character that could end its field or its line, or drive a terminal,
    written as an escape, as nginx writes its log: `"`, `\`, the control characters (`\x0d`,
    `\x1b`) and the other unprintable ones (`\u2028`, a line break to many readers; `\u202e`,
    which reverses the text after it). Printable characters, `é` among them, stay as they are.

    Example:
        >>> print(escape_for_log('/v1/model\r\n"x"'))
        /v1/model\x0d\x0a\x22x\x22
    """
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text  # the usual path, at no cost
    return "".join(_escape_char(char) for char in text)


def _escape_char(char: str) -> str:
    # `"` and `\` as \xHH rather than \" and \\: one kind of escape to read back, and no quote
    # left for a reader that splits the line on quotes.
    if char.isprintable() and char not in '"\\':
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _route(scope: Scope) -> str:
    """The route's template (`/v2/models/{model_name}/infer`), never the raw path: labels must
    stay few whatever paths clients make up."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return route.path
    if scope["path"].startswith("/static/"):
        return "/static"
    return "unmatched"
