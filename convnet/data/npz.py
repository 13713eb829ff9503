"""NumPy `.npz` archives: `x_train`, `y_train`, optionally `x_test`, `y_test`, `class_names`.

Each array's `.npy` header is read before its data, so that an array memory cannot hold is refused
before anything is inflated, and `limit` reads no more training rows than it keeps.
"""

from __future__ import annotations

import math
import struct
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from convnet.data.arrays import greatest_label, read_pixels, read_rows
from convnet.data.dataset import Dataset, numbered_class_names
from convnet.data.memory import recorded_range
from convnet.data.pixels import FULL_RANGE, to_pixels
from convnet.data.streamed import (
    ImageFile,
    StreamedImages,
    cannot_stream,
    streamed_range,
    streams,
)
from convnet.errors import DataError

_UNREADABLE = (
    ValueError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,  # zip versions and compressions zipfile cannot read
    RuntimeError,  # encrypted zip members
)


def read_npz(
    path: str | Path,
    class_names: tuple[str, ...] | None = None,
    pixel_range: str | None = None,
    limit: int | None = None,
    stream: bool | None = None,
) -> dict[str, Dataset]:
    """Reads the splits an archive holds.

    Args:
        path: an `.npz` file. Keys `x_train`/`y_train` (or `x`/`y`), and `x_test`/`y_test` if
            the archive carries a test split. Images are (N, H, W) or (N, H, W, C), values 0-255.
        class_names: names for the labels; else the archive's `class_names`, else "0", "1", ...
        pixel_range: "LOW,HIGH" of the images' values, or None to detect it from the training
            images (`convnet.data.pixels`); the test images are read in the same range.
        limit: read only the first `limit` training examples (all when None); the test split is
            read whole. The range detected and the classes numbered are still those of every
            training example, as when the archive is read whole.
        stream: leave the images in the archive, read a batch at a time
            (`convnet.data.streamed`), which needs uint8 arrays stored uncompressed (np.savez);
            None to decide by their size.

    Returns:
        {"train": Dataset} and, where present, "test".

    Raises:
        DataError: a missing key, pickled objects, an array memory cannot hold, or values that
            are not pixels or labels; `stream` for images that cannot be streamed.
    """
    path = Path(path)
    try:
        with _open(path) as archive:
            return _read(path, archive, class_names, pixel_range, limit, stream)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found.") from None
    except _UNREADABLE as error:
        raise DataError(f"{path}: not a readable .npz archive of plain arrays ({error}).") from None
    except MemoryError:  # the process's own limit (ulimit -v) is below what the machine has
        raise DataError(
            f"{path}: an array's header declares more data than fits in memory."
        ) from None


def has_test_split(path: str | Path) -> bool:
    """Whether the archive holds `x_test`; False for one that cannot be read (`read_npz` says
    why when it reads it)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool({"x_test", "x_test.npy"} & set(archive.namelist()))
    except _UNREADABLE:
        return False


def _open(path: Path) -> np.lib.npyio.NpzFile:
    """The archive, of which NumPy reads only the directory, refusing a single `.npy` file."""
    with path.open("rb") as file:
        if file.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX:
            raise DataError(
                f"{path}: holds a single .npy array; expected an .npz archive of named arrays "
                "(x_train, y_train, ...)."
            )
    return np.load(path, allow_pickle=False)


def _read(path: Path, archive, class_names, pixel_range, limit, stream) -> dict[str, Dataset]:
    keys = archive.files
    # A run's record of data given in memory holds pixels scaled already, and the range they
    # were scaled from, which the run's config names too. It is compressed: read into memory.
    recorded = recorded_range(archive)
    if recorded:
        pixel_range, stream = FULL_RANGE, False
    if class_names is None and "class_names" in keys:
        names = _array(path, archive, "class_names")
        if names.ndim != 1:
            raise DataError(
                f"{path}: 'class_names' has shape {names.shape}; expected a 1-D array of names."
            )
        class_names = tuple(str(name) for name in names)
    splits, counts = {}, {}
    for split, (x_key, y_key), rows in (
        ("train", ("x_train", "y_train") if "x_train" in keys else ("x", "y"), limit),
        ("test", ("x_test", "y_test"), None),
    ):
        if x_key not in keys and split == "test":
            continue
        for key in (x_key, y_key):
            if key not in keys:
                raise DataError(
                    f"{path}: missing array {key!r}; expected x_train, y_train (and optionally "
                    f"x_test, y_test). Found: {', '.join(sorted(keys)) or 'nothing'}."
                )
        x, pixel_range, images = _images(path, archive, x_key, pixel_range, rows, stream)
        y, top, labels = _labels(path, archive, y_key, rows, count=not class_names)
        splits[split], counts[split] = (x, y, top), (images, labels)
    for split, (images, labels) in counts.items():
        if images != labels:  # as Dataset says it, for arrays that may be cut short
            raise DataError(
                f"{path}:{split}: {images} images but labels of shape ({labels},); expected "
                "one label per image."
            )
    tops = np.array([top for *_, top in splits.values()])  # each split's greatest label
    names = class_names or numbered_class_names(tops, str(path))
    return {
        split: Dataset(x, y, names, f"{path}:{split}", recorded or pixel_range)
        for split, (x, y, _) in splits.items()
    }


def _member(archive, key: str) -> BinaryIO:
    """The archive's member for `key`, as NumPy finds it: named `key`, else `key`.npy."""
    names = archive.zip.namelist()
    return archive.zip.open(key if key in names else f"{key}.npy")


def _header(path: Path, key: str, stream: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, Fortran order, dtype) from the `.npy` header at the start of `stream`."""
    version = np.lib.format.read_magic(stream)
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise ValueError(f"{key!r} is in .npy format version {version}, which NumPy cannot read")
    read = np.lib.format.read_array_header_1_0
    if version != (1, 0):  # 3.0 differs from 2.0 only in allowing UTF-8 field names
        read = np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(stream)
    if dtype.hasobject:
        raise DataError(
            f"{path}: not a readable .npz archive of plain arrays ({key!r} holds Python "
            "objects; object arrays cannot be loaded when allow_pickle=False)."
        )
    return shape, fortran, dtype


def _array(path: Path, archive, key: str) -> np.ndarray:
    """The whole array `key`, refused unread when memory cannot hold it."""
    with _member(archive, key) as stream:
        return _whole(stream, *_header(path, key, stream), f"{path}: {key!r}")


def _whole(stream: BinaryIO, shape, fortran: bool, dtype: np.dtype, name: str) -> np.ndarray:
    """The whole array whose header `stream` has just yielded."""
    if shape and not fortran:
        return read_rows(stream, dtype, shape, shape[0], name)
    flat = read_rows(stream, dtype, (math.prod(shape),), math.prod(shape), name)
    return flat.reshape(shape[::-1]).transpose() if fortran else flat.reshape(shape)


def _images(path: Path, archive, key: str, pixel_range, limit, stream=None):
    """(the first `limit` images as pixels, or left in the archive (`stream`), their range, how
    many the array holds)."""
    with _member(archive, key) as member:
        shape, fortran, dtype = _header(path, key, member)
        if len(shape) not in (3, 4) or 0 in shape:
            raise DataError(
                f"{path}: {key!r} has shape {shape}; expected (N, H, W) or (N, H, W, C) images, "
                "none of size 0."
            )
        name = f"{path}: {key!r}"
        rows = min(limit or shape[0], shape[0])
        if streams(rows * math.prod(shape[1:]) * dtype.itemsize, stream):
            streamed = _streamed(path, archive, key, (shape, fortran, dtype), member, stream)
            if streamed is not None:
                pixel_range = streamed_range(streamed, pixel_range, name)
                x = streamed if rows == shape[0] else streamed.select(slice(0, rows))
                return x, pixel_range, shape[0]
        if fortran:  # its rows are not stored one after another: it is read whole, then cut
            x = _whole(member, shape, fortran, dtype, name)
            x, pixel_range = to_pixels(x, name, pixel_range)
            x = x[:limit]
        else:
            x, pixel_range = read_pixels(member, dtype, shape, rows, name, pixel_range)
    return (x if x.ndim == 4 else x[..., np.newaxis]), pixel_range, shape[0]


def _streamed(path: Path, archive, key: str, header, member: BinaryIO, stream):
    """The member's images left in the archive, or None where they cannot be and `stream` was
    not asked for (they are read into memory then).

    Raises:
        DataError: `stream` asked for images that are compressed, not uint8, or in Fortran
            order.
    """
    shape, fortran, dtype = header
    info = archive.zip.getinfo(member.name)
    why = None
    if info.compress_type != zipfile.ZIP_STORED:
        why = f"{key!r} is compressed in the archive (np.savez stores arrays uncompressed)"
    elif dtype != np.uint8 or fortran:
        why = f"{key!r} holds {'Fortran-ordered ' if fortran else ''}{dtype}, not uint8 rows"
    if why:
        if stream:
            raise cannot_stream(path, why)
        return None
    image_shape = shape[1:] if len(shape) == 4 else (*shape[1:], 1)
    offset = _data_offset(path, info) + member.tell()  # past the member's own .npy header
    return StreamedImages([ImageFile(str(path), offset, shape[0])], image_shape)


def _data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes begin in the archive: past its local header, whose name
    and extra fields may differ in length from the central directory's."""
    with path.open("rb") as file:
        file.seek(info.header_offset)
        local = file.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise ValueError(f"no local header for {info.filename!r}")
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_length + extra_length


def _labels(path: Path, archive, key: str, limit, count: bool):
    """(the first `limit` labels as int64, the greatest of all when `count`, how many there are)."""
    with _member(archive, key) as stream:
        shape, fortran, dtype = _header(path, key, stream)
        if len(shape) != 1 or not np.issubdtype(dtype, np.integer):
            raise DataError(
                f"{path}: {key!r} has dtype {dtype} and shape {shape}; expected 1-D integer labels."
            )
        y = read_rows(stream, dtype, shape, min(limit or shape[0], shape[0]), f"{path}: {key!r}")
        top = greatest_label(y, stream, shape, f"{path}: {key!r}") if count else None
    return y.astype(np.int64), top, shape[0]
