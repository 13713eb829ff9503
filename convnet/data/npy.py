"""Folders of one `<class>.npy` file per class: Quick, Draw!'s `numpy_bitmap` layout.

Each file holds one class's images, N x H*W (square images, flattened, as Quick, Draw! publishes
its 28 x 28 doodles) or N x H x W [x C], uint8 pixels 0-255 taken as they are, like image files.
The class names are the file names without `.npy`, sorted. Every file's header is checked before
any image is read, so a bad file is named at once even in a folder of tens of gigabytes.

A folder is read this way when it holds `.npy` files and no sub-folders (`is_npy_folder`); a
folder of class sub-folders is an image folder (`convnet.data.folder`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convnet.data.arrays import check_fits_in_memory, read_into
from convnet.data.dataset import Dataset
from convnet.data.streamed import ImageFile, StreamedImages, streams
from convnet.errors import DataError

NPY_VERSIONS = {(1, 0): "read_array_header_1_0", (2, 0): "read_array_header_2_0"}
NPY_VERSIONS[(3, 0)] = "read_array_header_2_0"  # 3.0 differs only in allowing UTF-8 field names


@dataclass(frozen=True)
class ClassFile:
    """One class's `.npy` file, from its header: where its images start and their shape."""

    path: Path
    offset: int
    count: int
    image_shape: tuple[int, int, int]

    @property
    def name(self) -> str:
        return self.path.stem


def _entries(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if not p.name.startswith(".")]


def is_npy_folder(root: Path) -> bool:
    """Whether `root` is a folder of `<class>.npy` files: `.npy` files and no sub-folders."""
    if not root.is_dir():
        return False
    entries = _entries(root)
    return any(p.suffix.lower() == ".npy" for p in entries) and not any(p.is_dir() for p in entries)


def read_npy_folder(
    root: str | Path, limit: int | None = None, stream: bool | None = None
) -> Dataset:
    """Reads `root/<class>.npy`, one file per class.

    Args:
        root: the folder.
        limit: read only the first `limit` images (classes by name, then rows); all when None.
        stream: leave the images in their files, read a batch at a time (`StreamedImages`);
            None to decide by their size (`convnet.data.streamed.streams`).

    Raises:
        DataError: fewer than two classes, or a file that is not an NPY array of uint8 images
            of the others' size, or holds none (naming the file and what was expected).
    """
    root = Path(root)
    files = [class_file(path) for path in sorted(p for p in _entries(root) if _is_npy(p))]
    if len(files) < 2:
        found = f" ({files[0].path.name})" if files else ""
        raise DataError(
            f"{root}: {len(files)} class file{found}; expected a <class>.npy file for each of "
            "at least two classes."
        )
    first = files[0]
    for file in files[1:]:
        if file.image_shape != first.image_shape:
            raise DataError(
                f"{file.path}: images of {_size(file.image_shape)}; expected "
                f"{_size(first.image_shape)} like {first.path.name}."
            )
    counts = np.array([file.count for file in files])
    total = min(limit or counts.sum(), counts.sum())
    y = np.repeat(np.arange(len(files)), counts)[:total]
    names = tuple(file.name for file in files)
    images = StreamedImages(
        [ImageFile(str(f.path), f.offset, f.count) for f in files], first.image_shape
    )
    if total < len(images):
        images = images.select(slice(0, total))
    if streams(images.nbytes, stream):
        return Dataset(images, y, names, str(root))
    return Dataset(_in_memory(root, files, total), y, names, str(root))


def _is_npy(path: Path) -> bool:
    return path.suffix.lower() == ".npy" and path.is_file()


def _size(shape: tuple[int, int, int]) -> str:
    height, width, channels = shape
    return f"{height} x {width}" + (f" x {channels}" if channels > 1 else "")


def class_file(path: Path) -> ClassFile:
    """A class file's header, checked: uint8 images of N x H*W (square), N x H x W or
    N x H x W x C (C 1 or 3), at least one, in C order, the file as long as it says.

    Raises:
        DataError: naming the file and what was expected.
    """
    shape, fortran, dtype, offset = npy_header(path)
    expected = "expected uint8 images of N x H*W (square), N x H x W or N x H x W x C"
    if dtype != np.uint8:
        raise DataError(f"{path}: holds {dtype} values; {expected} (pixels 0-255).")
    if fortran:
        raise DataError(f"{path}: stored in Fortran order; {expected} in C order (np.save).")
    image_shape = _image_shape(path, shape, expected)
    if shape[0] == 0:
        raise DataError(f"{path}: 0 images; expected at least one image of each class.")
    declared = offset + math.prod(shape)
    size = path.stat().st_size
    if size < declared:
        raise DataError(
            f"{path}: the header declares shape {shape} ({declared:,} bytes) but the file holds "
            f"{size:,} bytes."
        )
    return ClassFile(path, offset, shape[0], image_shape)


def _image_shape(path: Path, shape: tuple[int, ...], expected: str) -> tuple[int, int, int]:
    if len(shape) == 2:
        side = math.isqrt(shape[1])
        if side == 0 or side * side != shape[1]:
            raise DataError(
                f"{path}: rows of {shape[1]} values, which is not a square image; {expected}."
            )
        return (side, side, 1)
    if len(shape) == 3 and 0 not in shape[1:]:
        return (*shape[1:], 1)
    if len(shape) == 4 and shape[3] in (1, 3) and 0 not in shape[1:]:
        return tuple(shape[1:])
    raise DataError(f"{path}: shape {shape}; {expected} (C 1 or 3).")


def npy_header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, Fortran order, dtype, the byte where the data begins) from an `.npy` header.

    Raises:
        DataError: the file cannot be read, or does not start with an NPY header.
    """
    try:
        with path.open("rb") as file:
            version = np.lib.format.read_magic(file)
            if version not in NPY_VERSIONS:
                raise ValueError(f"version {version[0]}.{version[1]}, which NumPy cannot read")
            read = getattr(np.lib.format, NPY_VERSIONS[version])
            shape, fortran, dtype = read(file)
            return shape, fortran, dtype, file.tell()
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror or error}).") from None
    except (ValueError, EOFError, SyntaxError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(
            f"{path}: not an NPY file ({reason}); expected a NumPy .npy array (np.save)."
        ) from None


def _in_memory(root: Path, files: list[ClassFile], total: int) -> np.ndarray:
    """The first `total` images of the files, read into one array.

    Raises:
        DataError: more than memory can hold.
    """
    shape = (total, *files[0].image_shape)
    what = (
        f"{root}: {total:,} images of {_size(files[0].image_shape)} (--stream reads them from disk)"
    )
    check_fits_in_memory(math.prod(shape), what)
    try:
        x = np.empty(shape, np.uint8)
    except MemoryError:  # the process's own limit (ulimit -v) is below what the machine has
        raise DataError(f"{what}: more than fits in this process's memory.") from None
    done = 0
    for file in files:
        rows = min(file.count, total - done)
        if rows == 0:
            break
        try:
            with file.path.open("rb") as stream:
                stream.seek(file.offset)
                read_into(stream, x[done : done + rows], str(file.path))
        except (OSError, EOFError) as error:  # changed since its header was read
            raise DataError(f"{file.path}: cannot read the file ({error}).") from None
        done += rows
    return x
