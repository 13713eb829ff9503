"""Where `convnet serve` listens, and for whom: its limits and key checked, its sockets made before
any model loads (a busy port fails at once), and an address off loopback refused without an API
key unless serving everyone is meant (`insecure`).

    listening = open_sockets("0.0.0.0", 8000, api_key=key, grpc_port=0)

No framework and no web server is imported here: each refusal answers at once.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from dataclasses import dataclass

from convnet.errors import ConfigError, setting

API_KEY_ENV = "CONVNET_API_KEY"


def check_limits(**limits: float) -> None:
    """Refuses a limit (a timeout, a count of connections or workers) that is not above 0.

    Raises:
        ConfigError: naming the first such limit.
    """
    for name, value in limits.items():
        if not value > 0:  # also refuses NaN
            raise ConfigError(f"{name} must be above 0; received {value!r}.")


def resolve_api_key(given: str | None) -> str | None:
    """The key requests must carry: `given`, else $CONVNET_API_KEY, else None.

    Raises:
        ConfigError: the key is empty or has spaces at its ends, which no request can carry.
    """
    key = os.environ.get(API_KEY_ENV) if given is None else given
    if key is not None and not key.strip():
        raise ConfigError(
            f"the API key is empty; pass a non-empty {setting('api_key')} or CONVNET_API_KEY."
        )
    if key is not None and key != key.strip():
        raise ConfigError(
            "the API key has spaces at its ends, which no request can carry; pass "
            f"{setting('api_key')} or CONVNET_API_KEY without them."
        )
    return key


@dataclass
class Sockets:
    """What `open_sockets` made.

    Attributes:
        http: listening on the HTTP address; the server takes it over.
        grpc_address: gRPC's "HOST:PORT", the port chosen for port 0; None for no gRPC.
        grpc_hold: the socket holding gRPC's port while serving (`reserve_grpc_port`), or None.
    """

    http: socket.socket
    grpc_address: str | None = None
    grpc_hold: socket.socket | None = None

    def release(self) -> None:
        """Lets gRPC's port go, once the server has stopped."""
        if self.grpc_hold is not None:
            self.grpc_hold.close()


def open_sockets(
    host: str,
    port: int,
    *,
    api_key: str | None = None,
    insecure: bool = False,
    grpc_port: int | None = None,
    workers: int = 1,
) -> Sockets:
    """Listens on `host`:`port` and, with `grpc_port`, holds that port for gRPC on `host`.

    Bound to a loopback address, the server answers anyone; bound to any other address it
    requires `api_key` unless `insecure` says to serve everyone on purpose. The same holds for
    gRPC, which listens on the same host.

    Raises:
        ConfigError: an address cannot be listened on (in use, an unknown host, a gRPC port out
            of range or not shareable by `workers`), or a non-loopback address without a key
            or `insecure`. Nothing is left open then.
    """
    listening = listen(host, port)
    if not (api_key or insecure or is_loopback(listening)):
        listening.close()
        raise ConfigError(
            f"{host} is reachable from other machines: pass {setting('api_key', 'KEY')} (or set "
            f"CONVNET_API_KEY), or {setting('insecure', True)} to serve everyone without a key."
        )
    if grpc_port is None:
        return Sockets(listening)
    try:
        held, grpc_port = reserve_grpc_port(host, grpc_port, workers)
    except ConfigError:
        listening.close()
        raise
    return Sockets(listening, grpc_address(host, grpc_port), held)


def is_loopback(listening: socket.socket) -> bool:
    """Whether the socket listens on a loopback address only (127.0.0.0/8, ::1)."""
    return ipaddress.ip_address(listening.getsockname()[0]).is_loopback


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on `host`:`port`.

    Raises:
        ConfigError: the address cannot be listened on (a port in use, an unknown host).
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as error:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({_reason(error)}); pass another "
            f"{setting('port')} or {setting('host')}."
        ) from None


def reserve_grpc_port(host: str, port: int, workers: int) -> tuple[socket.socket | None, int]:
    """A socket bound, not listening, to `host`:`port` with SO_REUSEPORT, to hold while serving
    (None where there is no SO_REUSEPORT to share a port), and the port (chosen, for port 0).

    Each worker's gRPC server binds the same port beside it (gRPC sets SO_REUSEPORT on Linux) and
    the kernel shares the connections out among the listening ones; this one, never listening,
    gets none. It makes --grpc-port 0 one port for every worker, and a busy port fail at once,
    before any model loads: the port is first bound without SO_REUSEPORT, which any socket
    already on it refuses, another server's SO_REUSEPORT one too (it would share the port with
    this server's workers, each getting part of the other's calls).

    Raises:
        ConfigError: the port is not 0 to 65535, is in use, or `workers` > 1 where the
            processes cannot share it (not Linux).
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"the gRPC port must be 0 to 65535; received {port!r}.")
    shared = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")
    if workers > 1 and not shared:
        raise ConfigError("--grpc-port with --workers above 1 needs Linux (SO_REUSEPORT).")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            probe.bind((host, port))
            port = probe.getsockname()[1]
        if not shared:
            return None, port
        reserved = socket.socket(family, socket.SOCK_STREAM)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind((host, port))
        return reserved, port
    except OSError as error:
        raise ConfigError(
            f"cannot listen for gRPC on {host}:{port} ({_reason(error)}); pass another --grpc-port."
        ) from None


def grpc_address(host: str, port: int) -> str:
    """gRPC's "HOST:PORT", an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(error: OSError) -> str:
    """Why a socket could not be made, without the address: create_server appends it to
    strerror; getaddrinfo's errors have their own text."""
    gai = isinstance(error, socket.gaierror)
    return error.strerror if gai or not error.errno else os.strerror(error.errno)
