"""Files as convnet writes them: atomically, so a reader never sees half a file; and its cache."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import yaml


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Writes `data` to a temporary file beside `path`, then renames it into place.

    The temporary file is created with mode 0666 less the process's umask, as `open` would make
    the file itself, so the renamed file has the usual permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_yaml(path: str | Path, data: dict) -> Path:
    """Writes `data` as YAML, keys in their order, atomically."""
    return write_atomic(path, yaml.safe_dump(data, sort_keys=False))


def cache_dir() -> Path:
    """The user cache: `$XDG_CACHE_HOME/convnet`, else `~/.cache/convnet`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "convnet"
