"""Files as convnet writes them: atomically, so a reader never sees half a file, and durably, so
a power cut right after a write cannot leave it empty; and convnet's cache."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import yaml

try:
    import fcntl
except ImportError:  # Windows: an open file cannot be deleted there, so none is taken for stale
    fcntl = None

# Opening flags that make `open` fail on a symbolic link, and return at once on a FIFO (POSIX).
_NO_FOLLOW, _NO_WAIT = getattr(os, "O_NOFOLLOW", 0), getattr(os, "O_NONBLOCK", 0)


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Writes `data` to a temporary file beside `path`, then renames it into place durably."""
    with atomic_file(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb", **open_args) -> Iterator[IO]:
    """A file object on a temporary file beside `path`, renamed into place durably when the
    block ends without an error, removed when it raises (a Ctrl-C, a SIGTERM through the CLI).

    The temporary file, `.NAME.XXXXXXXX.tmp`, is created with mode 0666 less the process's
    umask, as `open` would make the file itself, and stays locked by this process until it has
    its final name: a process killed outright (SIGKILL, a power cut) leaves it unlocked, which is
    how `remove_stale_temporaries` tells it from one still being written.

    Args:
        path: the file's final name; its folder is made if missing.
        mode, open_args: as for `open` ("wb" or "w", `encoding`, `newline`, ...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _create_locked(path)
    try:
        with os.fdopen(fd, mode, **open_args) as f:
            yield f
            f.flush()
            if os.name == "nt":  # Windows renames no open file (and has no lock to keep)
                f.close()
            # Renamed while still open and locked: a cleaner never sees it unlocked under the
            # temporary name.
            replace_durably(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_locked(path: Path) -> tuple[Path, int]:
    """A new temporary file for `path`, and its descriptor holding the file's lock."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        _lock(fd, wait=True)
        # A cleaner could take the lock between the creation and ours, and remove the file.
        if os.fstat(fd).st_nlink:
            return tmp, fd
        os.close(fd)


def _lock(fd: int, wait: bool = False) -> bool:
    """Takes the exclusive lock of an open file; False when it is held elsewhere or this file
    system has no locks (then nobody can tell whether its writer is gone)."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError:
        return False
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Removes the temporary files `atomic_file` left beside `path` when their writer died.

    Only `.NAME.XXXXXXXX.tmp` regular files whose lock can be taken, so whose writing process is
    gone, are removed: one still being written (by any process, on any machine sharing the
    folder), another program's file, or a file system without locks are left alone.

    Returns:
        The files removed.
    """
    path = Path(path)
    own = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.tmp")
    try:
        names = [name for name in os.listdir(path.parent) if own.fullmatch(name)]
    except OSError:  # no folder yet, or one that cannot be listed
        return []
    removed = []
    for name in names:
        tmp = path.parent / name
        with contextlib.suppress(OSError):  # gone meanwhile, not ours, a link, a FIFO
            # No O_TRUNC: a live writer's data stays.
            fd = os.open(tmp, os.O_WRONLY | _NO_FOLLOW | _NO_WAIT)
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode) and _lock(fd):
                    tmp.unlink()
                    removed.append(tmp)
            finally:
                os.close(fd)
    return removed


_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symbolic link",
}


def special_kind(mode: int) -> str | None:
    """What a file of `st_mode` `mode` is when it is not a regular file ("a FIFO", "a socket",
    ...), for messages; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


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
