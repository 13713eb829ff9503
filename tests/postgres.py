"""A throwaway PostgreSQL server for tests that share Optuna studies through `postgresql://`."""

from __future__ import annotations

import glob
import itertools
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

_DATABASES = itertools.count()


def _bin_dir() -> Path | None:
    """The newest Debian PostgreSQL's bin folder (/usr/lib/postgresql/<version>/bin), if any."""
    found = [Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin") if Path(d, "initdb").exists()]
    return max(found, key=lambda d: int(d.parent.name), default=None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(command: str, cwd: Path, check: bool = True) -> None:
    """Runs a PostgreSQL tool, as the `postgres` user when we are root (initdb refuses root)."""
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    argv = [*as_postgres, *shlex.split(command)]
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)
    if check and result.returncode:
        log = cwd / "server.log"
        detail = log.read_text() if log.exists() else ""
        pytest.fail(f"`{command}` failed:\n{result.stdout}{result.stderr}{detail}")


@pytest.fixture(scope="session")
def postgres_server():
    """Starts a PostgreSQL server of its own and yields (bin folder, socket folder, port).

    A fresh cluster in a temp folder, not the system one that the Debian package may set up: CI
    starts no service, and tests must not touch a real database. initdb refuses to run as root,
    so as root the tools run as the package's `postgres` user in a folder it owns, under /tmp
    because that user can't enter pytest's tmp_path (and the socket path must stay short). Trust
    auth on 127.0.0.1, a free port, the socket in the temp folder and fsync off keep it private
    and quick. The server is stopped and the folder removed at the end, also if a test failed.
    """
    pg = _bin_dir()
    if pg is None:
        reason = "PostgreSQL is not installed: `make test` installs the Debian package postgresql"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="convnet-pg-", dir="/tmp"))
    data, port = root / "data", _free_port()
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        _run(f"{pg}/initdb -D {data} -A trust -U postgres --no-sync --locale=C -E UTF8", root)
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        _run(f"{pg}/pg_ctl start -w -D {data} -l {root}/server.log -o '{options}'", root)
        yield pg, root, port
    finally:
        if (data / "postmaster.pid").exists():
            _run(f"{pg}/pg_ctl stop -D {data} -m immediate", root, check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a new, empty database on the session's server: each test gets its own, so a
    study one test leaves behind (say one named "shared") is never found by the next."""
    pg, root, port = postgres_server
    name = f"convnet_test_{next(_DATABASES)}"
    _run(f"{pg}/createdb -h 127.0.0.1 -p {port} -U postgres {name}", root)
    return f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{name}"
