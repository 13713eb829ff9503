"""IDX files (the original MNIST / Fashion-MNIST format), raw or gzipped.

The header declares the dimensions, so the size is checked before any data is read, and `limit`
reads no more rows than it keeps (from a gzipped file too: it is inflated as it is read).
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from convnet.data.arrays import CHUNK_BYTES, greatest_label, read_pixels, read_rows
from convnet.data.dataset import Dataset, numbered_class_names
from convnet.data.streamed import (
    ImageFile,
    StreamedImages,
    cannot_stream,
    streamed_range,
    streams,
)
from convnet.errors import DataError

_UBYTE = np.dtype(np.uint8)
_UBYTE_CODE = 0x08


def read_idx(path: str | Path, limit: int | None = None) -> np.ndarray:
    """Reads one IDX file of unsigned bytes.

    Args:
        path: an `.idx*-ubyte` file, optionally gzipped (`.gz`).
        limit: read only the first `limit` rows (along the first dimension); all when None.

    Returns:
        A uint8 array with the dimensions the header declares, the first cut to `limit`.

    Raises:
        DataError: the file is missing, truncated, not IDX, not of unsigned bytes, or larger
            than memory can hold.
    """
    path = Path(path)
    with _opened(path) as (stream, shape):
        rows = _kept(shape, limit)
        array = read_rows(stream, _UBYTE, shape, rows, str(path))
        _check_end(path, stream, shape, rows)
        return array


def _kept(shape: tuple[int, ...], limit: int | None) -> int:
    return min(limit or shape[0], shape[0])


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[tuple[BinaryIO, tuple[int, ...]]]:
    """The file's data, just past its header, and the shape that header declares; a raw
    file's size is checked against it first. Errors of a gzip stream, which any read may
    raise, are named as such."""
    gzipped = path.suffix == ".gz"
    try:
        with path.open("rb") as file, gzip.GzipFile(fileobj=file) if gzipped else file as stream:
            shape = _header(path, stream)
            if not gzipped:
                _check_size(path, shape, os.fstat(file.fileno()).st_size)
            yield stream, shape
    except FileNotFoundError:
        raise DataError(f"{path}: file not found.") from None
    except (OSError, EOFError, zlib.error) as error:
        if gzipped and not isinstance(error, IsADirectoryError | PermissionError):
            raise DataError(f"{path}: not a readable gzip file ({error}).") from None
        reason = getattr(error, "strerror", None) or error  # a folder, no permission
        raise DataError(f"{path}: cannot read the file ({reason}).") from None


def _declared(path: Path) -> tuple[int, ...]:
    """The shape the file's header declares, checked against a raw file's size."""
    with _opened(path) as (_, shape):
        return shape


def _header(path: Path, stream: BinaryIO) -> tuple[int, ...]:
    start = stream.read(4)
    if len(start) < 4 or start[0:2] != b"\x00\x00":
        raise DataError(f"{path}: not an IDX file; expected magic bytes 00 00 at the start.")
    dtype_code, ndim = start[2], start[3]
    if dtype_code != _UBYTE_CODE:
        raise DataError(
            f"{path}: IDX data type 0x{dtype_code:02x} is not supported; "
            "expected 0x08 (unsigned byte)."
        )
    sizes = stream.read(4 * ndim)
    if ndim == 0 or len(sizes) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header; expected {ndim} dimension sizes.")
    return tuple(int.from_bytes(sizes[4 * i : 4 * i + 4], "big") for i in range(ndim))


def _check_size(path: Path, shape: tuple[int, ...], holds: int) -> None:
    expected = 4 + 4 * len(shape) + math.prod(shape)
    if holds != expected:
        raise DataError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes) "
            f"but the file holds {holds} bytes."
        )


def _check_end(path: Path, stream: BinaryIO, shape: tuple[int, ...], rows: int) -> None:
    """Refuses a gzipped file read whole that holds more than its header declares (a raw
    file's size was checked before reading)."""
    if rows == shape[0] and isinstance(stream, gzip.GzipFile) and stream.read(1):
        more = 1
        while chunk := stream.read(CHUNK_BYTES):  # counted, not kept
            more += len(chunk)
        _check_size(path, shape, 4 + 4 * len(shape) + math.prod(shape) + more)


def labels_path_for(images_path: Path) -> Path:
    """The labels file beside an images file: `train-images-idx3` -> `train-labels-idx1`."""
    name = images_path.name.replace("images", "labels").replace("idx3", "idx1")
    return images_path.with_name(name)


def read_idx_dataset(
    images_path: str | Path,
    class_names: tuple[str, ...] | None = None,
    labels_path: str | Path | None = None,
    pixel_range: str | None = None,
    limit: int | None = None,
    stream: bool | None = None,
) -> Dataset:
    """Reads an IDX images file and its labels file into a Dataset.

    Args:
        images_path: images of shape (N, H, W) or (N, H, W, C).
        class_names: names for the label values; "0", "1", ... when None.
        labels_path: labels of shape (N,); defaults to the file named like the images file.
        pixel_range: "LOW,HIGH" of the images' values, or None to detect it
            (`convnet.data.pixels`).
        limit: read only the first `limit` examples; all when None. The range detected and the
            classes numbered are still those of every example, as when the files are read whole.
        stream: leave the images of a raw (not gzipped) file in it, read a batch at a time
            (`convnet.data.streamed`); None to decide by their size.

    Raises:
        DataError: either file is invalid or larger than memory can hold, or their counts
            differ; `stream` for a gzipped file.
    """
    images_path = Path(images_path)
    labels_path = Path(labels_path) if labels_path else labels_path_for(images_path)
    x_shape, y_shape = _declared(images_path), _declared(labels_path)
    _check_shapes(images_path, labels_path, x_shape, y_shape)
    rows = _kept(x_shape, limit)
    gzipped = images_path.suffix == ".gz"
    if gzipped and stream:
        raise cannot_stream(images_path, "a gzipped IDX file holds its images compressed")
    if not gzipped and streams(rows * math.prod(x_shape[1:]), stream):
        x, pixel_range = _streamed(images_path, x_shape, rows, pixel_range)
    else:
        with _opened(images_path) as (images, _):  # one at a time: errors name the right file
            x, pixel_range = read_pixels(
                images, _UBYTE, x_shape, rows, str(images_path), pixel_range
            )
            _check_end(images_path, images, x_shape, rows)
        x = x[..., np.newaxis] if x.ndim == 3 else x
    with _opened(labels_path) as (labels, _):
        y = read_rows(labels, _UBYTE, y_shape, rows, str(labels_path))
        top = None if class_names else greatest_label(y, labels, y_shape, str(labels_path))
        _check_end(labels_path, labels, y_shape, rows)
    names = class_names or numbered_class_names(np.array([top]), str(images_path))
    return Dataset(x, y.astype(np.int64), names, str(images_path), pixel_range)


def _streamed(path: Path, shape: tuple[int, ...], rows: int, pixel_range: str | None):
    """(the first `rows` images left in the file, their range), the range checked over all."""
    image_shape = (*shape[1:], 1) if len(shape) == 3 else shape[1:]
    images = StreamedImages([ImageFile(str(path), 4 + 4 * len(shape), shape[0])], image_shape)
    pixel_range = streamed_range(images, pixel_range, str(path))
    return (images if rows == shape[0] else images.select(slice(0, rows))), pixel_range


def _check_shapes(images_path: Path, labels_path: Path, x_shape, y_shape) -> None:
    if len(x_shape) not in (3, 4):
        raise DataError(
            f"{images_path}: expected images of 3 or 4 dimensions, got shape {x_shape}."
        )
    if len(y_shape) != 1:
        raise DataError(f"{labels_path}: expected labels of 1 dimension, got shape {y_shape}.")
    if x_shape[0] != y_shape[0]:
        raise DataError(
            f"{images_path}: {x_shape[0]} images but {labels_path.name} has {y_shape[0]} labels; "
            "expected the same count."
        )
    if not x_shape[0]:
        raise DataError(f"{images_path}: the header declares 0 images; expected at least one.")
