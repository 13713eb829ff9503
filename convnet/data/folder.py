"""Folders of image files, one sub-folder per class (sorted by name); `read_any_folder` tells
them from folders of `<class>.npy` files."""

from __future__ import annotations

import contextlib
import io
import math
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from convnet.data.arrays import check_fits_in_memory
from convnet.data.dataset import Dataset
from convnet.data.npy import is_npy_folder, read_npy_folder
from convnet.data.streamed import cannot_stream
from convnet.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
MAX_PIXELS = 2**24  # 4096 x 4096: far beyond MNIST-like data; a larger header is corrupt or a bomb
_UNREADABLE = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    SyntaxError,  # Pillow's "broken PNG file"
    EOFError,
    struct.error,
)


def read_folder(root: str | Path, limit: int | None = None) -> Dataset:
    """Reads `root/<class name>/<image file>`.

    Images are converted to greyscale when every file is greyscale, else to RGB, and resized to
    the most common size among them. Both are judged from every file's header before any image
    is decoded, so that a set memory cannot hold is refused first.

    Args:
        root: the folder of class folders.
        limit: decode only the first `limit` images (classes by name, then files by name); all
            when None. Greyscale and size are still judged over every file.

    Raises:
        DataError: no class folders, an empty class, an unreadable image (named), or more
            pixels than memory can hold.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class folders; expected one sub-folder of images per class.")
    files, labels = [], []
    for index, name in enumerate(classes):
        found = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DataError(f"{root / name}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}).")
        files += found
        labels += [index] * len(found)
    headers = [_header(path) for path in files]
    grey = all(mode in GREY_MODES for _, mode in headers)
    size = Counter(size for size, _ in headers).most_common(1)[0][0]
    files = files[:limit]
    x = _pixels(root, len(files), size, grey)
    for i, path in enumerate(files):  # one decoded image at a time
        x[i] = _to_array(decode_image(path.read_bytes(), str(path)), size, grey, path)
    return Dataset(x, np.array(labels[: len(files)], np.int64), tuple(classes), str(root))


def read_any_folder(root: Path, limit: int | None = None, stream: bool | None = None) -> Dataset:
    """`root` as a folder of `<class>.npy` files when it is one (`convnet.data.npy`), else as a
    folder of class folders of images (`read_folder`).

    Raises:
        DataError: `stream` for images files, which cannot be streamed; else as the readers.
    """
    if is_npy_folder(root):
        return read_npy_folder(root, limit, stream)
    if stream:
        raise cannot_stream(root, "a folder of image files holds them compressed (PNG, JPEG)")
    return read_folder(root, limit)


def _pixels(root: Path, count: int, size: tuple[int, int], grey: bool) -> np.ndarray:
    """The empty array of `count` images, refused when memory cannot hold it."""
    shape = (count, size[1], size[0], 1 if grey else 3)
    what = f"{root}: {count:,} images of {size[0]} x {size[1]} {'grey' if grey else 'RGB'} pixels"
    check_fits_in_memory(math.prod(shape), what)
    try:
        return np.empty(shape, np.uint8)
    except MemoryError:  # the process's own limit (ulimit -v) is below what the machine has
        raise DataError(f"{what}: more than fits in this process's memory.") from None


def _header(path: Path) -> tuple[tuple[int, int], str]:
    """An image file's size and mode, from its header alone."""
    with _named(str(path)), _open(path, str(path), MAX_PIXELS) as image:
        return image.size, image.mode


def decode_image(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Opens image bytes with Pillow, refusing unreadable files and decompression bombs.

    Args:
        data: the file's bytes.
        name: what to call the file in errors.
        max_pixels: refuse images with more pixels than this, before decoding them.

    Raises:
        DataError: naming `name` and what is wrong.
    """
    with _named(name):
        image = _open(io.BytesIO(data), name, max_pixels)
        image.load()
        return image


def _open(file, name: str, max_pixels: int) -> Image.Image:
    """The image with only its header read, refused when it declares over `max_pixels`."""
    image = Image.open(file)
    if image.width * image.height > max_pixels:
        image.close()
        raise DataError(
            f"{name}: image too large ({image.width} x {image.height} pixels); "
            f"expected at most {max_pixels:,} pixels."
        )
    return image


@contextlib.contextmanager
def _named(name: str) -> Iterator[None]:
    """Pillow's errors as DataErrors that name the file."""
    try:
        yield
    except DataError:
        raise
    except Image.DecompressionBombError as error:
        raise DataError(f"{name}: image too large ({error}).") from None
    except UnidentifiedImageError:  # its message names a BytesIO object, not the file
        raise DataError(f"{name}: not a readable image (unknown or unsupported format).") from None
    except _UNREADABLE as error:
        raise DataError(f"{name}: not a readable image ({error}).") from None


def _to_array(image: Image.Image, size: tuple[int, int], grey: bool, path: Path) -> np.ndarray:
    try:
        image = image.convert("L" if grey else "RGB")
        if image.size != size:
            image = image.resize(size, Image.Resampling.BILINEAR)
    except _UNREADABLE as error:
        raise DataError(f"{path}: cannot convert its {image.mode} pixels ({error}).") from None
    array = np.asarray(image, dtype=np.uint8)
    return array[..., np.newaxis] if grey else array
