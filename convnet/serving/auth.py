"""The API key: who may call a server bound to an address other than loopback.

Requests carry the key as `Authorization: Bearer KEY` or `X-API-Key: KEY`; without it, or with a
wrong one, they get a 401 with `WWW-Authenticate: Bearer`. The key is compared with
`hmac.compare_digest`, in a time that does not depend on how much of it a guess got right.

Left open: the health checks (`/healthz`, `/v2/health/live`, `/v2/health/ready`), which
Kubernetes probes and load balancers call without credentials and which tell nothing about the
model; and the web page with its static files, which hold no data and ask for the key. Over gRPC
(`convnet.serving.grpc`) the same key goes in the call's metadata, and ServerLive and ServerReady
stay open.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from convnet.errors import ConfigError
from convnet.serving.protocol_v2 import is_v2_path

OPEN_PATHS = frozenset({"/", "/healthz", "/v2/health/live", "/v2/health/ready"})


def check_key(key: str) -> None:
    """Refuses a key that no request could match.

    Raises:
        ConfigError: the key is empty or has spaces at its ends (HTTP drops those from every
            header value; the server strips the client's key alike).
    """
    if not key:
        raise ConfigError("The API key must not be empty. Received: key=''.")
    if key != key.strip():  # the key itself is never shown: it is a secret
        raise ConfigError(
            "The API key has spaces at its ends, which no request can carry; pass it without them."
        )


class RequireApiKey:
    """ASGI middleware refusing HTTP requests that lack `key`.

    Args:
        app: the app behind it.
        key: the API key; a non-empty string without spaces at its ends.

    Raises:
        ConfigError: the key is empty or has spaces at its ends.
    """

    def __init__(self, app: ASGIApp, key: str):
        check_key(key)
        self.app = app
        self._key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_open(scope["path"]) or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        message = (
            "missing or wrong API key; send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'."
        )
        body = json.dumps({"error" if is_v2_path(path) else "detail": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="convnet"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope: Scope) -> bool:
        return key_matches(scope["headers"], self._key)


def key_matches(headers: Iterable[tuple[bytes, bytes]], key: bytes) -> bool:
    """Whether `headers` (lower-case names and values, as ASGI scopes and, encoded, gRPC metadata
    hold them) carry `key` as `authorization: Bearer KEY` or `x-api-key: KEY`."""
    given = b""
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            given = value[7:].strip()
        elif name == b"x-api-key":
            given = value.strip()
    return hmac.compare_digest(given, key)


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith("/static/")
