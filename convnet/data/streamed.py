"""Images left in their files and read a batch at a time: data bigger than memory.

A `StreamedImages` is one logical (N, H, W, C) uint8 array over the image rows of one or more
files (a raw IDX file, an NPY member stored uncompressed in an NPZ, one `.npy` file per class),
seen through an optional index: a split, a shard or `--limit` is a new index, never a copy.
Indexing it reads the rows asked for, in sorted order (rows lying close together in one read),
and hands them back in the order asked.

The rows are read with positioned reads (`os.preadv`), not through a memory map: the pages of a
map that were touched count in the process's resident memory, and the kernel maps whole large
folios of the page cache (up to 2 MiB) at each touch, so one random batch of 256 rows of 784 bytes
put up to 466 MB of a 1 GB map in RSS even with the map released (MADV_DONTNEED) after every
batch, against 32 MB with positioned reads (docs/data.md, "Data bigger than memory"). What a read
copies stays in the page cache, which the kernel reclaims as it needs.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convnet.data.arrays import PixelSpan, available_memory, check_fits_in_memory
from convnet.data.pixels import FULL_RANGE
from convnet.data.settings import parse_range
from convnet.errors import DataError, setting

# A source whose images take more bytes than this is streamed unless `stream` says otherwise,
# as is one over a quarter of the memory available: held in memory, training keeps the source's
# array, the split's copies and the framework's own copy of the training set at once.
STREAM_BYTES = 2 * 2**30
CHUNK_BYTES = 16 * 2**20  # rows read at a time when a whole view is walked (the range)
GAP_BYTES = 16 * 2**10  # rows closer than this are read in one span, with those between
SPAN_BYTES = 16 * 2**20  # the most one span reads
_PREADV = getattr(os, "preadv", None)
_FADVISE = getattr(os, "posix_fadvise", None)  # Linux and the BSDs; not macOS, not Windows
_NOWAIT = getattr(os, "RWF_NOWAIT", None) if _PREADV else None  # Linux 4.14
SOURCES = "per-class .npy folders, raw IDX files and NPZ archives stored uncompressed"


def streams(nbytes: int, setting: bool | None) -> bool:
    """Whether images of `nbytes` are streamed: `setting` if given, else whether they are over
    `STREAM_BYTES` or a quarter of the memory available."""
    if setting is not None:
        return setting
    available = available_memory()
    limit = STREAM_BYTES if available is None else min(STREAM_BYTES, available // 4)
    return nbytes > limit


def compact_index(rows: np.ndarray) -> np.ndarray:
    """`rows` as int32 when they fit: a view's index is the size of its examples (8 GB of
    doodles are 10 million), the one thing a streamed run holds that grows with the data."""
    small = rows.size == 0 or int(rows.max()) < 2**31
    return rows.astype(np.int32 if small else np.int64, copy=False)


def cannot_stream(path: str | Path, why: str) -> DataError:
    """The error for `--stream` on a source that cannot be read a batch at a time."""
    return DataError(
        f"{path}: {why}, so it cannot be streamed ({SOURCES} can); drop {setting('stream', True)}."
    )


@dataclass(frozen=True)
class ImageFile:
    """Image rows stored one after another in a file.

    Attributes:
        path: the file.
        offset: the byte where the first row begins.
        count: how many rows.
    """

    path: str
    offset: int
    count: int


class StreamedImages:
    """Images (N, H, W, C) uint8 over the rows of `files`, read when indexed.

    Args:
        files: the files, one logical array in their order.
        image_shape: (H, W, C) of each row.
        index: the rows of that array this view holds, in its order; None for all of them.

    Indexing with an integer gives one image, with a slice, an integer array or a mask an
    array of images (read now); `select` gives a view (read later). `np.asarray` reads all.
    """

    def __init__(
        self,
        files: Sequence[ImageFile],
        image_shape: tuple[int, int, int],
        index: np.ndarray | None = None,
    ):
        self.files = tuple(files)
        self.image_shape = tuple(image_shape)
        self._starts = np.cumsum([0] + [f.count for f in self.files])
        self._index = None if index is None else compact_index(np.asarray(index))
        self._reader = _Reader(self.files)

    @property
    def shape(self) -> tuple[int, ...]:
        count = int(self._starts[-1]) if self._index is None else len(self._index)
        return (count, *self.image_shape)

    dtype = np.dtype(np.uint8)
    ndim = 4

    @property
    def row_bytes(self) -> int:
        return math.prod(self.image_shape)

    @property
    def nbytes(self) -> int:
        return len(self) * self.row_bytes

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"StreamedImages(shape={self.shape}, files={len(self.files)})"

    def rows(self, positions: np.ndarray | slice | None = None) -> np.ndarray:
        """The rows of the files' logical array at `positions` of this view (all when None)."""
        positions = self._positions(slice(None) if positions is None else positions)
        return positions if self._index is None else self._index[positions]

    def select(self, key) -> StreamedImages:
        """The view of the images at `key` (a slice, integer array or mask), nothing read."""
        view = StreamedImages.__new__(StreamedImages)
        view.files, view.image_shape, view._starts = self.files, self.image_shape, self._starts
        view._index, view._reader = compact_index(self.rows(key)), self._reader
        return view

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):  # (rows, then pixels): x[:, 2:-2] reads the rows first
            first, *rest = key
            images = self[first]
            return images[tuple(rest) if np.ndim(images) == 3 else (slice(None), *rest)]
        if isinstance(key, int | np.integer):
            return self._read(self.rows(np.array([key])))[0]
        return self._read(self.rows(key))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        check_fits_in_memory(self.nbytes, f"{self.files[0].path}: {len(self):,} images")
        images = self._read(self.rows())
        return images if dtype is None else images.astype(dtype)

    def chunks(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[np.ndarray, int]]:
        """The images in order, as many as fit in `chunk_bytes` at a time, each chunk with the
        position of its first image."""
        step = max(1, chunk_bytes // self.row_bytes)
        for start in range(0, len(self), step):
            yield self[start : start + step], start

    def _positions(self, key) -> np.ndarray:
        count = len(self)
        if isinstance(key, slice):
            return np.arange(*key.indices(count), dtype=np.int64)
        positions = np.asarray(key)
        if positions.dtype == bool:
            if positions.shape != (count,):
                raise IndexError(f"a mask of shape {positions.shape} for {count} images")
            return np.flatnonzero(positions)
        if positions.dtype.kind not in "iu":
            raise IndexError(f"images are indexed by integers; received {positions.dtype}")
        positions = positions.astype(np.int64, copy=False)
        if positions.size and (positions.min() < -count or positions.max() >= count):
            raise IndexError(f"index out of range for {count} images")
        if positions.size and positions.min() < 0:
            positions = np.where(positions < 0, positions + count, positions)
        return positions

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """The images at `rows` of the logical array, in that order, read in sorted order."""
        order = np.argsort(rows, kind="stable")
        ordered = rows[order].astype(np.int64, copy=False)  # byte offsets pass 2**31
        images = np.empty((len(rows), *self.image_shape), np.uint8)
        self._reader.read_sorted(ordered, self._starts, images.reshape(len(rows), -1))
        if np.any(order[1:] < order[:-1]):  # asked out of order: put them back
            out = np.empty_like(images)
            out[order] = images
            return out
        return images


class _Reader:
    """The files' descriptors (opened on first use) and the positioned reads over them; shared
    by every view of the same files. Picklable: the descriptors reopen in another process."""

    def __init__(self, files: tuple[ImageFile, ...]):
        self.files = files
        self._descriptors: dict[int, int] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"files": self.files}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["files"])

    def __del__(self) -> None:
        for descriptor in getattr(self, "_descriptors", {}).values():
            with contextlib.suppress(OSError):
                os.close(descriptor)

    def _descriptor(self, part: int) -> int:
        with self._lock:  # the feed's thread and the main one may both open it
            if part not in self._descriptors:
                try:
                    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0)  # Windows: no newline changes
                    self._descriptors[part] = os.open(self.files[part].path, flags)
                except OSError as error:
                    raise DataError(
                        f"{self.files[part].path}: cannot read the file ({error.strerror})."
                    ) from None
            return self._descriptors[part]

    def read_sorted(self, rows: np.ndarray, starts: np.ndarray, out: np.ndarray) -> None:
        """Reads the sorted `rows` into the rows of `out` (2-D, a row of bytes each).

        Rows of a file less than `GAP_BYTES` apart are read in one span, the rows between them
        too, which costs less than a read each: a validation or test set walks a shuffled index
        whose rows lie close together. A span stays within one `SPAN_BYTES` block of its file,
        which bounds the scratch copy. Spans of rows one after another (a random batch: a row
        each) are first read only where they are in the page cache (RWF_NOWAIT), which costs a
        system call each and no more; the kernel is then told of all the others at once
        (`_will_need`), so that those on the disk are read together, and they are read.
        """
        if not len(rows):
            return
        row_bytes = out.shape[1]
        parts, wheres, firsts, lasts, direct = self._spans(rows, starts, row_bytes)
        descriptors = {part: self._descriptor(part) for part in np.unique(parts).tolist()}
        buffer = memoryview(out.reshape(-1))
        pending = list(range(len(firsts)))
        if _NOWAIT is not None:
            spans = (firsts, lasts, direct)
            pending = _read_cached(buffer, row_bytes, descriptors, parts, wheres, *spans)
        if not pending:
            return
        pending = np.array(pending)
        if _FADVISE and len(pending) > 1:
            _will_need(descriptors, parts, wheres, rows, firsts[pending], lasts[pending], row_bytes)
        for first, last, straight in zip(
            firsts[pending].tolist(), lasts[pending].tolist(), direct[pending].tolist(), strict=True
        ):
            part, where = int(parts[first]), int(wheres[first])
            if straight:
                self._read_exactly(part, buffer[first * row_bytes : last * row_bytes], where)
            else:
                span = np.empty((int(rows[last - 1]) + 1 - int(rows[first]), row_bytes), np.uint8)
                self._read_exactly(part, memoryview(span.reshape(-1)), where)
                out[first:last] = span[rows[first:last] - rows[first]]

    def _spans(self, rows: np.ndarray, starts: np.ndarray, row_bytes: int):
        """(each row's file, each row's byte in it, each span's first row and the row past its
        last, whether each span's rows are one after another)."""
        parts = np.searchsorted(starts, rows, side="right") - 1
        offsets = np.array([file.offset for file in self.files], np.int64)
        wheres = offsets[parts] + (rows - starts[parts]) * row_bytes
        gap, block = max(1, GAP_BYTES // row_bytes), max(1, SPAN_BYTES // row_bytes)
        steps = np.diff(rows)
        breaks = (steps > gap) | (np.diff(parts) != 0) | (np.diff(rows // block) != 0)
        firsts = np.concatenate([[0], np.flatnonzero(breaks) + 1])
        lasts = np.append(firsts[1:], len(rows))
        apart = np.concatenate([[0], np.cumsum(steps != 1)])
        return parts, wheres, firsts, lasts, apart[lasts - 1] == apart[firsts]

    def _read_exactly(self, part: int, buffer: memoryview, where: int) -> None:
        descriptor = self._descriptor(part)
        done = 0
        while done < len(buffer):
            got = _pread_into(descriptor, buffer[done:], where + done, self._lock)
            if not got:
                raise DataError(
                    f"{self.files[part].path}: the file ends before byte {where + done:,}; it was "
                    "cut short after it was opened."
                )
            done += got


def _read_cached(
    buffer: memoryview, row_bytes: int, descriptors, parts, wheres, firsts, lasts, direct
) -> list:
    """Reads the spans of rows one after another that are whole in the page cache, straight
    into `buffer`; returns the indexes of the spans left to read. The loop does as little as
    it can: a random batch is a system call per row."""
    pending = []
    spans = zip(
        parts[firsts].tolist(), wheres[firsts].tolist(), firsts.tolist(), lasts.tolist(),
        direct.tolist(), strict=True,
    )  # fmt: skip
    for index, (part, where, first, last, straight) in enumerate(spans):
        if straight:
            target = buffer[first * row_bytes : last * row_bytes]
            try:
                if _PREADV(descriptors[part], [target], where, _NOWAIT) == len(target):
                    continue
            except OSError:  # not all in the page cache (or a file system without RWF_NOWAIT)
                pass
        pending.append(index)
    return pending


def _will_need(descriptors, parts, wheres, rows, firsts, lasts, row_bytes: int) -> None:
    """Tells the kernel every span a read is about to take, so that spans not in the page cache
    are read from the disk at once rather than one after another: a random batch of 256 rows of
    784 bytes from a file out of the page cache took 27 ms read by read, 3.6 ms so."""
    lengths = (rows[lasts - 1] - rows[firsts] + 1) * row_bytes
    hints = zip(parts[firsts].tolist(), wheres[firsts].tolist(), lengths.tolist(), strict=True)
    for part, where, length in hints:
        _FADVISE(descriptors[part], where, length, os.POSIX_FADV_WILLNEED)


def _pread_into(descriptor: int, buffer: memoryview, where: int, lock: threading.Lock) -> int:
    """Reads into `buffer` from byte `where` of the file; the bytes read (0 at its end)."""
    if _PREADV:  # Linux, the BSDs, macOS 11: no file position to share
        return _PREADV(descriptor, [buffer], where)
    with lock:  # elsewhere (Windows) the file's one position is moved, a thread at a time
        os.lseek(descriptor, where, os.SEEK_SET)
        data = os.read(descriptor, len(buffer))
    buffer[: len(data)] = data
    return len(data)


def streamed_range(images: StreamedImages, pixel_range: str | None, name: str) -> str:
    """The pixel range of images fed as they are stored: "0,255", checked.

    Raises:
        DataError: `pixel_range` other than 0,255, or values that detect as another range
            (0-1 bitmaps, 0-16 digits), which would need scaling in memory.
    """
    if pixel_range is not None:
        if parse_range(pixel_range) != (0.0, 255.0):
            raise DataError(
                f"{name}: streamed pixels are fed as they are stored, 0-255; pixel_range "
                f"{pixel_range} would scale them: drop {setting('stream', True)} to read them into "
                "memory."
            )
        return FULL_RANGE
    span = PixelSpan()
    for chunk, first in images.chunks():
        span.add(chunk, first)
        if span.settled:  # uint8 past 16: pixels 0-255, whatever the rest holds
            return FULL_RANGE
    found = span.detect(name)
    if found != FULL_RANGE:
        raise DataError(
            f"{name}: holds values {found.replace(',', '-')}, which streamed pixels cannot be "
            f"scaled from; pass {setting('pixel_range', '0,255')} to feed them as they are, or "
            f"drop {setting('stream', True)}."
        )
    return found
