"""Folders of image files, one sub-folder per class (sorted by name)."""

from __future__ import annotations

import io
import struct
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from convnet.data.dataset import Dataset
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


def read_folder(root: str | Path) -> Dataset:
    """Reads `root/<class name>/<image file>`.

    Images are converted to greyscale when every file is greyscale, else to RGB, and resized to
    the most common size among them.

    Raises:
        DataError: no class folders, an empty class, or an unreadable image (named).
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
    images = [decode_image(path.read_bytes(), str(path)) for path in files]
    grey = all(image.mode in GREY_MODES for image in images)
    size = Counter(image.size for image in images).most_common(1)[0][0]
    pixels = [_to_array(image, size, grey, path) for image, path in zip(images, files, strict=True)]
    return Dataset(np.stack(pixels), np.array(labels, np.int64), tuple(classes), str(root))


def decode_image(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Opens image bytes with Pillow, refusing unreadable files and decompression bombs.

    Args:
        data: the file's bytes.
        name: what to call the file in errors.
        max_pixels: refuse images with more pixels than this, before decoding them.

    Raises:
        DataError: naming `name` and what is wrong.
    """
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > max_pixels:
            raise DataError(
                f"{name}: image too large ({image.width} x {image.height} pixels); "
                f"expected at most {max_pixels:,} pixels."
            )
        image.load()
        return image
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
