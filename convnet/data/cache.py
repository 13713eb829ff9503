"""A cache of parsed text data, keyed by the file's SHA-256, so a second load skips parsing."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from convnet.data.dataset import Dataset
from convnet.files import cache_dir, write_atomic

FORMAT_VERSION = 2  # bump when a reader's output for the same file can change
# Past this, the least recently used entries go: Fashion-MNIST's two Kaggle CSVs take 55 MB.
MAX_BYTES = 512 * 2**20
_writing: dict[Path, threading.Thread] = {}  # entries being written in the background


def cached_read(path: Path, read: Callable[[], Dataset], **options) -> Dataset:
    """`read()`, or the Dataset it returned before for the same file content and options.

    The cache lives in `cache_dir()/parsed/`, at most `MAX_BYTES`: an entry's time stamp says
    when it was last read, and the entries read longest ago go first. A new entry is written by a
    background thread (the interpreter waits for it at exit), so the caller goes on as soon as
    the data is parsed; failing to write it never fails the load.
    """
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256")
    digest.update(json.dumps([FORMAT_VERSION, options], sort_keys=True, default=str).encode())
    entry = cache_dir() / "parsed" / f"{digest.hexdigest()}.npz"
    if entry in _writing:
        _writing.pop(entry).join()
    if entry.is_file():
        try:
            with np.load(entry, allow_pickle=False) as saved:
                with contextlib.suppress(OSError):  # read now: the last to be evicted
                    os.utime(entry)
                return Dataset(
                    saved["x"],
                    saved["y"],
                    tuple(saved["class_names"].tolist()),
                    str(path),
                    str(saved["pixel_range"]),
                )
        except Exception:  # noqa: BLE001  (truncated zip, bad arrays: any damage at all)
            pass  # a damaged entry is parsed again and replaced
    data = read()
    _writing[entry] = threading.Thread(target=_store, args=(entry, data), name="convnet-cache")
    _writing[entry].start()
    return data


def _store(entry: Path, data: Dataset) -> None:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x=data.x,
        y=data.y,
        class_names=np.array(data.class_names),
        pixel_range=np.array(data.pixel_range),
    )
    with contextlib.suppress(OSError):
        write_atomic(entry, buffer.getvalue())
        _evict(entry.parent, keep=entry)


def _evict(folder: Path, keep: Path) -> None:
    """Deletes the entries of `folder` read longest ago until they take at most `MAX_BYTES`,
    never `keep`, the one just written."""
    entries = []
    for path in folder.glob("*.npz"):
        with contextlib.suppress(OSError):  # deleted by another process meanwhile
            found = path.stat()
            entries.append((found.st_mtime, found.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= MAX_BYTES:
            break
        if path != keep:
            with contextlib.suppress(OSError):
                path.unlink()
            total -= size
