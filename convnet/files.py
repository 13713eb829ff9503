"""Files as convnet writes them: atomically, so a reader never sees half a file, and durably, so
a power cut right after a write cannot leave it empty; and convnet's cache."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import yaml


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Writes `data` to a temporary file beside `path`, then renames it into place durably.

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
        replace_durably(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def replace_durably(new: str | Path, path: str | Path) -> None:
    """Renames the file or folder `new` to `path`, as `os.replace`, so it survives a power cut.

    A rename alone reaches the disk before the data it points at may (ext4's delayed allocation,
    XFS): after a crash `path` could be there but empty. So the data is flushed first (a file, or
    every file in a folder, and the folders themselves), then the rename, then the folder that
    holds `path`, which records the rename itself.
    """
    new, path = Path(new), Path(path)
    if new.is_dir():
        for folder, _, names in os.walk(new):
            for name in names:
                fsync_path(Path(folder, name))
            fsync_path(Path(folder))
    else:
        fsync_path(new)
    os.replace(new, path)
    fsync_path(path.parent)


def fsync_path(path: str | Path) -> None:
    """Flushes a file's data, or a folder's entries, to the disk."""
    folder = Path(path).is_dir()
    if folder and os.name == "nt":  # Windows cannot open a folder to flush it; NTFS journals it
        return
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if folder else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_yaml(path: str | Path, data: dict) -> Path:
    """Writes `data` as YAML, keys in their order, atomically."""
    return write_atomic(path, yaml.safe_dump(data, sort_keys=False))


def cache_dir() -> Path:
    """The user cache: `$XDG_CACHE_HOME/convnet`, else `~/.cache/convnet`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "convnet"
