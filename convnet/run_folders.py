"""New run folders: where one goes, the checks that it can be made and written on a disk with
room, and the claim that keeps a second process out of a run being trained.
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import filelock

from convnet.errors import RunError, setting
from convnet.files import write_atomic

# Held by the one process that trains a run, for as long as it does. An OS lock (flock), not a
# marker file: the kernel releases it when the process ends however it ends, so a killed run
# never leaves a stale claim behind.
LOCK_FILE = ".lock"
RUNS_ROOT = "runs"  # where a run goes without --out: RUNS_ROOT/PRESET-YYYYmmdd-HHMMSS
MIN_FREE_BYTES = 100 * 2**20  # a run writes a few MB; refuse to start on a nearly full disk
WRITE_PROBE = ".write-test-"  # a file each process making the folder writes, then removes


@contextlib.contextmanager
def new_run_dir(
    out: str | Path | None,
    preset: str,
    root: str | Path = RUNS_ROOT,
    min_free: int = MIN_FREE_BYTES,
) -> Iterator[Path]:
    """Creates an empty, writable run folder, `out` or `root/PRESET-YYYYmmdd-HHMMSS`, and holds
    it (`claimed`) for the block. A block that fails before writing anything but the claim
    removes the folder again, so no empty run is left behind.

    Args:
        out: the folder to create, or None for a time-stamped one under `root`.
        preset: the preset's name, for the default folder name.
        root: where default folders go.
        min_free: bytes that must be free on the folder's disk.

    Raises:
        RunError: the folder exists and is not empty, is claimed by another process, cannot be
            written, or its disk is full.
    """
    path = Path(out) if out else default_run_dir(preset, root)
    check_new_run_dir(path, min_free=min_free)
    try:
        path.mkdir(parents=True, exist_ok=True)
        # A name of this process's own: two processes making one folder at once would otherwise
        # rename over, and unlink, each other's probe.
        probe = write_atomic(path / f"{WRITE_PROBE}{os.getpid()}", b"ok")
        probe.unlink()
    except OSError as error:
        raise RunError(f"{path}: cannot write the run folder ({error.strerror}).") from None
    with claimed(path):
        _check_empty(path, held=True)  # again: another process may have used it since
        try:
            yield path
        except BaseException:
            if [p.name for p in path.iterdir()] == [LOCK_FILE]:
                with contextlib.suppress(OSError):
                    (path / LOCK_FILE).unlink()
                    path.rmdir()
            raise


def default_run_dir(preset: str, root: str | Path = RUNS_ROOT) -> Path:
    """Where a run goes without --out: `root/PRESET-YYYYmmdd-HHMMSS`."""
    return Path(root) / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"


def _check_empty(path: Path, held: bool = False) -> None:
    """Refuses a folder with anything in it but a claim: this process's (`held`), or one left
    by a process that ended before writing anything. Another process's write probe (and its
    temporary file) is not content: counted, four processes making one folder at once could
    each see another's and all be refused (tests/test_runs.py, the race)."""
    if any(p.name != LOCK_FILE and WRITE_PROBE not in p.name for p in path.iterdir()):
        raise RunError(f"{path}: already exists and is not empty; {_another_out()}.")
    if not held and (path / LOCK_FILE).exists():
        with claimed(path):
            pass


@contextlib.contextmanager
def claimed(path: Path) -> Iterator[None]:
    """Holds run folder `path` for this process alone during the block: a second `train`,
    `--resume` or `tune` trial aimed at it is refused until the block ends or the process dies.

    Raises:
        RunError: another process holds it.
    """
    lock = filelock.FileLock(path / LOCK_FILE)
    try:
        lock.acquire(blocking=False)
    except filelock.Timeout:
        raise RunError(
            f"{path}: in use by another convnet process that is training it; wait for that "
            f"process to end, or {_another_out()}."
        ) from None
    except OSError as error:
        raise RunError(f"{path}: cannot write the run folder ({error.strerror}).") from None
    try:
        yield
    finally:
        lock.release()


def check_new_run_dir(
    out: str | Path | None, root: str | Path = RUNS_ROOT, min_free: int = MIN_FREE_BYTES
) -> None:
    """Refuses, without creating anything, a run folder `out` that is a file, a folder that is
    not empty, one that cannot be made or written, or one on a nearly full disk; without `out`,
    a `root` for time-stamped folders that cannot be written or is on a nearly full disk.
    `new_run_dir` checks again as it makes the folder.

    Raises:
        RunError: saying which.
    """
    path = Path(out or root)
    if path.exists() and not path.is_dir():
        raise RunError(f"{path}: a file, not a folder; {_another_out()}.")
    if out and path.exists():
        _check_empty(path)
    existing = next(p for p in [path, *path.absolute().parents] if p.exists())
    if not existing.is_dir():
        reason = os.strerror(errno.ENOTDIR)
        raise RunError(f"{path}: cannot write the run folder ({reason}).")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(f"{path}: cannot write the run folder ({os.strerror(errno.EACCES)}).")
    check_free_space(existing, min_free, name=path)


def check_free_space(
    path: str | Path, min_free: int = MIN_FREE_BYTES, name: str | Path | None = None
) -> None:
    """Raises RunError, naming `name` (default `path`), when the disk holding `path` has less
    than `min_free` bytes free."""
    free = shutil.disk_usage(path).free
    if free < min_free:
        raise RunError(
            f"{name or path}: only {free / 2**20:.0f} MB free on its disk; a run needs at least "
            f"{min_free / 2**20:.0f} MB. Free some space or {_another_out()}."
        )


def process_record() -> dict:
    """This process, as a run's manifest records who trains it."""
    return {"pid": os.getpid(), "hostname": platform.node()}


def _another_out() -> str:
    return f"choose another {setting('out')} for the run"
