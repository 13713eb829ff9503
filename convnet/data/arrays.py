"""Reading arrays whose header declares their size (NPZ members, IDX files): within the memory
there is, and no further than the rows kept, without changing what a whole read would give."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from convnet.data.pixels import SMALL_MAX, detect_range, to_pixels
from convnet.errors import DataError

# The most of the available memory that one array may take: training copies the training set
# (the validation split), so an array over half of what is free would not get through anyway.
MEMORY_SHARE = 0.5
CHUNK_BYTES = 2**20  # per read: a stream copies what it hands over, so chunks bound the copy


def available_memory() -> int | None:
    """Bytes of memory free for this process: Linux's MemAvailable (else the physical memory),
    less where a cgroup (a container) allows less; None where none of these can be read."""
    free = [size for size in (_system_memory(), _cgroup_room()) if size is not None]
    return min(free) if free else None


def _system_memory() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # macOS and other Unixes: the physical memory, all of it
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_room() -> int | None:
    """What this process's cgroup v2 still allows; MemAvailable counts the whole machine's."""
    try:
        group = Path("/proc/self/cgroup").read_text().split("0::", 1)[1].splitlines()[0]
        folder = Path("/sys/fs/cgroup") / group.lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        used = int((folder / "memory.current").read_text())
    except (OSError, ValueError, IndexError):
        return None
    return None if limit == "max" else int(limit) - used


def check_fits_in_memory(nbytes: int, what: str) -> None:
    """Refuses, before any of it is read, an array of `nbytes` that memory cannot hold.

    Args:
        nbytes: the size the array would take.
        what: the file, array and declared shape, which the message starts with.

    Raises:
        DataError: `nbytes` is over `MEMORY_SHARE` of the available memory.
    """
    available = available_memory()
    if available is None or nbytes <= available * MEMORY_SHARE:
        return
    raise DataError(
        f"{what}: {nbytes:,} bytes to hold in memory; expected at most "
        f"{int(available * MEMORY_SHARE):,} ({MEMORY_SHARE:.0%} of the {available:,} bytes "
        "of memory available)."
    )


def read_into(stream: BinaryIO, array: np.ndarray, name: str) -> np.ndarray:
    """`array` (C-contiguous), filled with the bytes `stream` yields next.

    Raises:
        EOFError: the stream ends first (`name` says whose it is).
    """
    view = memoryview(array.reshape(-1).view(np.uint8))
    done = 0
    while done < len(view):
        got = stream.readinto(view[done : done + CHUNK_BYTES])
        if not got:
            raise EOFError(f"{name}: the data ends before the size its header declares")
        done += got
    return array


def read_rows(
    stream: BinaryIO, dtype: np.dtype, shape: tuple[int, ...], rows: int, name: str
) -> np.ndarray:
    """The first `rows` rows of a C-ordered array of `shape`, whose bytes `stream` yields next.

    Raises:
        DataError: naming `name`, when memory cannot hold them. EOFError: the stream ends first.
    """
    size = rows * math.prod(shape[1:]) * dtype.itemsize
    first = f" (its first {rows:,} rows)" if rows < shape[0] else ""
    check_fits_in_memory(size, f"{name}: the header declares shape {shape} of {dtype}{first}")
    try:
        array = np.empty((rows, *shape[1:]), dtype)
    except MemoryError:  # the process's own limit (ulimit -v) is below what the machine has
        raise DataError(f"{name}: {size:,} bytes do not fit in this process's memory.") from None
    return read_into(stream, array, name)


def rows_after(
    stream: BinaryIO, dtype: np.dtype, shape: tuple[int, ...], start: int, name: str
) -> Iterator[tuple[np.ndarray, int]]:
    """The rows of a C-ordered array of `shape` from row `start` on, a chunk at a time, each with
    the index of its first row: what rows hold can then be known without holding them all."""
    row_bytes = math.prod(shape[1:]) * dtype.itemsize
    step = max(1, CHUNK_BYTES // max(row_bytes, 1))
    for first in range(start, shape[0], step):
        chunk = np.empty((min(step, shape[0] - first), *shape[1:]), dtype)
        yield read_into(stream, chunk, name), first


def greatest_label(kept: np.ndarray, stream: BinaryIO, shape: tuple[int, ...], name: str) -> int:
    """The greatest of all the labels of an array of `shape`: the rows `kept`, then those
    `stream` yields after them, read a chunk at a time."""
    top = kept.max() if kept.size else 0
    for chunk, _ in rows_after(stream, kept.dtype, shape, len(kept), name):
        top = max(top, chunk.max())
    return int(top)


def read_pixels(
    stream: BinaryIO,
    dtype: np.dtype,
    shape: tuple[int, ...],
    rows: int,
    name: str,
    pixel_range: str | None = None,
) -> tuple[np.ndarray, str]:
    """The first `rows` images of an array of `shape` that `stream` yields next, as uint8 pixels,
    and the range they were read in (`convnet.data.pixels.to_pixels`).

    A range to detect is detected over every image, as if the array were read whole, so that
    keeping fewer rows changes no pixel: the images not kept are read a chunk at a time and
    dropped, unless those kept settle it already (uint8 values over `SMALL_MAX`).

    Raises:
        DataError: values that are not pixels, or more than fits in memory. EOFError: the stream
            ends first.
    """
    kept = read_rows(stream, dtype, shape, rows, name)
    numbers = np.issubdtype(dtype, np.number) and not np.issubdtype(dtype, np.complexfloating)
    if pixel_range is None and rows < shape[0] and kept.size and numbers:
        span = PixelSpan()
        span.add(kept, 0)
        for chunk, first in () if span.settled else rows_after(stream, dtype, shape, rows, name):
            span.add(chunk, first)
        pixel_range = span.detect(name)
    return to_pixels(kept, name, pixel_range, in_place=True)  # `kept` is this read's own


class PixelSpan:
    """What `detect_range` judges, gathered a chunk of images at a time: the least and the
    greatest values, each with the first image that holds it, and a fraction if there is one.
    Detecting the range of these few values gives what detecting it over all images would."""

    def __init__(self) -> None:
        self.values: list = [None, None, None]  # least, greatest, a fraction
        self.rows = [0, 0, 0]  # the first image holding each

    @property
    def settled(self) -> bool:
        """Whether no further image can change the range: uint8 past SMALL_MAX is 0-255."""
        high = self.values[1]
        return high is not None and high.dtype == np.uint8 and high > SMALL_MAX

    def add(self, images: np.ndarray, first: int) -> None:
        """Takes in `images`, the first of which is image `first` of the whole array."""
        for slot, find in ((0, np.argmin), (1, np.argmax)):  # both find the first NaN, if any
            at = int(find(images))
            if self._beyond(images.flat[at], slot):
                self.values[slot] = images.flat[at]
                self.rows[slot] = first + int(np.unravel_index(at, images.shape)[0])
        if self.values[2] is None and not np.issubdtype(images.dtype, np.integer):
            fractions = np.flatnonzero(images != np.round(images))
            if len(fractions):
                self.values[2] = images.flat[fractions[0]]

    def _beyond(self, value, slot: int) -> bool:
        current = self.values[slot]
        if current is None or np.isnan(value):
            return current is None or not np.isnan(current)  # the first NaN stays
        return not np.isnan(current) and (value < current if slot == 0 else value > current)

    def detect(self, name: str) -> str:
        """The range of every image taken in (`detect_range`, naming the image at fault)."""
        found = [value for value in self.values if value is not None]
        summary = np.array(found, dtype=found[0].dtype)
        return detect_range(summary, name, row_name=lambda i: f"image {self.rows[i]}")
