"""IDX files (the original MNIST / Fashion-MNIST format), raw or gzipped."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from convnet.data.dataset import Dataset, numbered_class_names
from convnet.data.pixels import to_pixels
from convnet.errors import DataError

_UBYTE = 0x08


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one IDX file of unsigned bytes.

    Args:
        path: an `.idx*-ubyte` file, optionally gzipped (`.gz`).

    Returns:
        A uint8 array with the dimensions the header declares.

    Raises:
        DataError: the file is missing, truncated, not IDX, or not of unsigned bytes.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found.") from None
    except OSError as error:  # a folder, no permission
        raise DataError(f"{path}: cannot read the file ({error.strerror}).") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path}: not a readable gzip file ({error}).") from None
    if len(raw) < 4 or raw[0:2] != b"\x00\x00":
        raise DataError(f"{path}: not an IDX file; expected magic bytes 00 00 at the start.")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != _UBYTE:
        raise DataError(
            f"{path}: IDX data type 0x{dtype_code:02x} is not supported; "
            "expected 0x08 (unsigned byte)."
        )
    header_size = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header_size:
        raise DataError(f"{path}: truncated IDX header; expected {ndim} dimension sizes.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header_size + math.prod(shape)
    if len(raw) != expected:
        raise DataError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes) "
            f"but the file holds {len(raw)} bytes."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def labels_path_for(images_path: Path) -> Path:
    """The labels file beside an images file: `train-images-idx3` -> `train-labels-idx1`."""
    name = images_path.name.replace("images", "labels").replace("idx3", "idx1")
    return images_path.with_name(name)


def read_idx_dataset(
    images_path: str | Path,
    class_names: tuple[str, ...] | None = None,
    labels_path: str | Path | None = None,
    pixel_range: str | None = None,
) -> Dataset:
    """Reads an IDX images file and its labels file into a Dataset.

    Args:
        images_path: images of shape (N, H, W) or (N, H, W, C).
        class_names: names for the label values; "0", "1", ... when None.
        labels_path: labels of shape (N,); defaults to the file named like the images file.
        pixel_range: "LOW,HIGH" of the images' values, or None to detect it
            (`convnet.data.pixels`).

    Raises:
        DataError: either file is invalid, or their counts differ.
    """
    images_path = Path(images_path)
    labels_path = Path(labels_path) if labels_path else labels_path_for(images_path)
    x = read_idx(images_path)
    y = read_idx(labels_path)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4:
        raise DataError(
            f"{images_path}: expected images of 3 or 4 dimensions, got shape {x.shape}."
        )
    if y.ndim != 1:
        raise DataError(f"{labels_path}: expected labels of 1 dimension, got shape {y.shape}.")
    if len(x) != len(y):
        raise DataError(
            f"{images_path}: {len(x)} images but {labels_path.name} has {len(y)} labels; "
            "expected the same count."
        )
    if not len(x):
        raise DataError(f"{images_path}: the header declares 0 images; expected at least one.")
    y = y.astype(np.int64)
    names = class_names or numbered_class_names(y, str(images_path))
    x, pixel_range = to_pixels(x, str(images_path), pixel_range)
    return Dataset(x, y, names, str(images_path), pixel_range)
