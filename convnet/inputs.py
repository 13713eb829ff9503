"""Turning user files (photos, .npy arrays, CSV pixel rows) into the model's raw uint8 input.

`predict` and `serve` share this, so a person sees exactly what the model receives.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from convnet.data.csv import read_csv
from convnet.data.dataset import border_is_light
from convnet.data.folder import IMAGE_SUFFIXES, MAX_PIXELS, decode_image
from convnet.data.memory import LABEL_COLUMNS, frame_values
from convnet.data.pixels import FULL_RANGE, to_pixels
from convnet.errors import DataError
from convnet.files import special_kind


def image_to_input(
    image: Image.Image, input_shape, light_background: bool = False, name: str = "image"
) -> np.ndarray:
    """Converts a picture to one model input of shape `input_shape` (H, W, C), uint8.

    Greyscale (or RGB for 3 channels); inverted when its background's brightness differs from the
    training data's (Fashion-MNIST items are light on black, photos usually dark on white). A
    picture not already H x W is then trimmed to its content and fitted into H x W keeping its
    aspect ratio, centred on the background colour: Fashion-MNIST's own preparation (trim, scale
    the longest side to 28), so a small drawing on a large canvas fills the frame as items do.
    """
    height, width, channels = input_shape
    mode = "L" if channels == 1 else "RGB"
    try:
        image = ImageOps.exif_transpose(image).convert(mode)
    except (ValueError, OSError) as error:  # modes Pillow cannot convert, such as LAB
        raise DataError(f"{name}: cannot read a {image.mode} image as {mode} ({error}).") from None
    if border_is_light(np.asarray(image)[np.newaxis]) != light_background:
        image = ImageOps.invert(image)
    if image.size == (width, height):
        return np.asarray(image, dtype=np.uint8).reshape(input_shape)
    content = ImageOps.invert(image) if light_background else image
    # Pixels within 1/8 of the background's level are background (JPEG noise, paper texture).
    box = content.convert("L").point(lambda v: 255 if v > 32 else 0).getbbox()
    if box:
        image = image.crop(box)
    fitted = ImageOps.contain(image, (width, height), Image.Resampling.LANCZOS)
    background = 255 if light_background else 0
    canvas = Image.new(
        image.mode, (width, height), (background,) * channels if channels > 1 else background
    )
    canvas.paste(fitted, ((width - fitted.width) // 2, (height - fitted.height) // 2))
    return np.asarray(canvas, dtype=np.uint8).reshape(input_shape)


def image_file_to_inputs(
    data: bytes, input_shape, light_background: bool, name: str, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """An image file's bytes as one model input, batched: (1, H, W, C) uint8.

    Raises:
        DataError: naming `name`, when the image cannot be read or is over `max_pixels`.
    """
    image = decode_image(data, name, max_pixels=max_pixels)
    return image_to_input(image, input_shape, light_background, name)[np.newaxis]


def load_inputs(
    paths: list[str | Path],
    input_shape,
    light_background: bool = False,
    pixel_range: str = FULL_RANGE,
) -> tuple[list[str], np.ndarray]:
    """Reads every file into model inputs, at once: for a few files (`iter_inputs` streams).

    Args:
        paths: image files (PNG, JPG, ...), `.npy` arrays of (H, W), (H, W, C), (N, H, W) or
            (N, H, W, C) pixels, CSVs of pixel rows (a `label` column is ignored), or folders
            of image files (see `expand_paths`).
        input_shape: the model's (H, W, C).
        light_background: whether the training images have light backgrounds.
        pixel_range: "LOW,HIGH" of the training data's values (`convnet.data.pixels`): arrays
            and CSV rows are read in it; image files are 0-255.

    Returns:
        (names, x): one name per input ("file", or "file[i]" for the i-th row or array), and
        uint8 inputs of shape (N, H, W, C).

    Raises:
        DataError: a file is missing, unreadable, or of the wrong shape; nothing to read.
    """
    names, arrays = [], []
    for path in expand_paths(paths)[0]:
        file_names, batch = read_file_inputs(path, input_shape, light_background, pixel_range)
        names += file_names
        arrays.append(batch)
    if not arrays:
        raise DataError(f"no image files in {', '.join(map(str, paths))}.")
    return names, np.concatenate(arrays)


def expand_paths(paths: list[str | Path]) -> tuple[list[Path], list[Path]]:
    """The files to read: each file named, and the image files under each folder named.

    Folders are walked recursively, each folder's files by name before its subfolders by name,
    and give regular image files only: a `.csv` or `.npy` beside the scans is more likely an
    earlier run's predictions or a label list than pixels, and must be named to be read; a FIFO,
    a device or a socket could make a read wait for ever. Hidden files and folders (".DS_Store",
    macOS "._x.png" resource forks, ".git") are left out.

    Returns:
        (files, skipped): the files to read, in order, and the other files found in folders
        (`skip_reason` says why each was left).

    Raises:
        DataError: a path named is missing, not a regular file, or of an unsupported type;
            checked for every path before any is read.
    """
    files, skipped = [], []
    for path in map(Path, paths):
        if path.is_dir():
            for folder, subfolders, names in os.walk(path):
                subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
                for name in sorted(n for n in names if not n.startswith(".")):
                    found = Path(folder, name)
                    (skipped if skip_reason(found) else files).append(found)
        elif not path.exists():
            raise DataError(f"{display_name(path)}: file not found.")
        elif not path.is_file():
            kind = special_kind(path.stat().st_mode)
            raise DataError(f"{display_name(path)}: {kind}; expected a regular file or a folder.")
        elif path.suffix.lower() not in {".npy", ".csv", *IMAGE_SUFFIXES}:
            raise DataError(
                f"{display_name(path)}: unsupported file type {path.suffix.lower()!r}; "
                "expected an image "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}), .npy, .csv or a folder of images."
            )
        else:
            files.append(path)
    return files, skipped


def skip_reason(found: Path) -> str | None:
    """Why a file found in a folder is not read ("not an image", "a FIFO", ...); None when it
    is read: a regular image file, or one whose read will say what is wrong (a broken link)."""
    if found.suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image"
    try:
        kind = special_kind(found.stat().st_mode)
    except OSError:
        return None
    return f"{kind}, not a regular file" if kind else None


def display_name(path: str | Path) -> str:
    """`path` as text any UTF-8 writer takes: bytes of a name that are not UTF-8 (a file from a
    system with another encoding), which Python holds as lone surrogates, shown as `\\xNN`."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def read_file_inputs(
    path: Path, input_shape, light_background: bool = False, pixel_range: str = FULL_RANGE
) -> tuple[list[str], np.ndarray]:
    """One file's model inputs: (names, uint8 (N, H, W, C)); see `load_inputs`.

    Raises:
        DataError: naming the file, when it cannot be read or holds the wrong shape.
    """
    suffix, name = path.suffix.lower(), display_name(path)
    if suffix == ".npy":
        batch = npy_to_inputs(path, input_shape, name, pixel_range)
    elif suffix == ".csv":
        batch = _csv(path, input_shape, pixel_range)
    else:
        data = _read_regular_file(path, name)
        return [name], image_file_to_inputs(data, input_shape, light_background, name)
    if len(batch) == 1 and suffix == ".npy":
        return [name], batch
    return [f"{name}[{i}]" for i in range(len(batch))], batch


def _read_regular_file(path: Path, name: str) -> bytes:
    """The bytes of `path`, if it is a regular file: one made a FIFO or a device since its folder
    was listed is refused, not waited on (the open does not wait for a FIFO's writer)."""
    try:
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as file:
            kind = special_kind(os.fstat(file.fileno()).st_mode)
            if kind:
                raise DataError(f"{name}: {kind}; expected a regular file.")
            return file.read()
    except OSError as error:  # permission denied, a file gone since the folder was listed
        raise DataError(f"{name}: cannot read ({error.strerror or error}).") from None


def iter_inputs(
    files: list[Path],
    input_shape,
    light_background: bool = False,
    pixel_range: str = FULL_RANGE,
) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
    """Each input of `files` in turn, for streaming: (name, pixels (H, W, C), None), or
    (name, None, reason) for a file that cannot be read, so that the others go on.

    Only one file is held at a time: an image, or the whole of one `.npy` or CSV.
    """
    for path in files:
        try:
            names, batch = read_file_inputs(path, input_shape, light_background, pixel_range)
        except DataError as error:
            name = display_name(path)
            yield name, None, str(error).removeprefix(f"{name}: ").removeprefix(f"{path}: ")
            continue
        for name, pixels in zip(names, batch, strict=True):
            yield name, pixels, None


def npy_to_inputs(
    source: Path | io.BytesIO, input_shape, name: str, pixel_range: str = FULL_RANGE
) -> np.ndarray:
    """A `.npy` file (a path, or its bytes) as uint8 inputs (see `pixels_to_inputs`).

    Raises:
        DataError: naming `name`, when it is not one plain array of pixels of the right shape.
    """
    try:
        array = np.load(source, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"{name}: not a plain .npy array ({error or 'empty'}).") from None
    except MemoryError:  # a header declaring far more data than the file holds
        raise DataError(f"{name}: the header declares more data than memory holds.") from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise DataError(f"{name}: an .npz archive; expected a single .npy array.")
    return pixels_to_inputs(array, input_shape, name, pixel_range)


def pixels_to_inputs(
    array: np.ndarray, input_shape, name: str = "pixels", pixel_range: str = FULL_RANGE
) -> np.ndarray:
    """Checks raw pixels of shape (H, W), (H, W, C), (N, H, W) or (N, H, W, C), scales them from
    `pixel_range` (the training data's) to 0-255 and batches them.

    Raises:
        DataError: naming `name`, when the shape is wrong or a value is outside `pixel_range`.
    """
    given = array.shape  # as the caller passed it, for the message
    if array.shape == tuple(input_shape[:2]) or array.shape == tuple(input_shape):
        array = array[np.newaxis]
    if array.ndim == 3:
        array = array[..., np.newaxis]
    if array.shape[1:] != tuple(input_shape) or len(array) == 0:
        raise DataError(
            f"{name}: array of shape {given}; expected images of shape {tuple(input_shape)}."
        )
    remedy = f"the model takes the range of the data it trained on, {pixel_range}"
    return to_pixels(array, name, pixel_range, remedy=remedy)[0]


def _csv(path: Path, input_shape, pixel_range: str) -> np.ndarray:
    x = read_csv(path, labeled=False, pixel_range=pixel_range).x
    if x.shape[1:] != tuple(input_shape):
        raise DataError(f"{path}: rows hold {x.shape[1:]} images; expected {tuple(input_shape)}.")
    return x


def python_inputs(
    value,
    input_shape,
    light_background: bool = False,
    pixel_range: str = FULL_RANGE,
    name: str = "x",
) -> np.ndarray:
    """Model inputs from what a Python caller holds, uint8 (N, H, W, C).

    Args:
        value: a path or a list of paths (as `load_inputs` reads them); a PIL image or a list
            of them (as photos are read); a DataFrame of pixel columns in the Kaggle layout (a
            label column, if any, is left out); or an array of images (N, H, W), (N, H, W, C),
            (N, H*W*C), or one image (H, W) or (H, W, C), in the training data's pixel range.
        input_shape: the model's (H, W, C).
        light_background: whether the training images have light backgrounds.
        pixel_range: "LOW,HIGH" of the training data's values.
        name: the argument's name, which messages start with.

    Raises:
        DataError: naming `name`, for anything that is not images of the model's shape.
    """
    single = isinstance(value, str | os.PathLike | Image.Image)
    items = [value] if single else value
    if isinstance(items, list | tuple) and items:
        if all(isinstance(item, str | os.PathLike) for item in items):
            return load_inputs(list(items), input_shape, light_background, pixel_range)[1]
        if all(isinstance(item, Image.Image) for item in items):
            return np.stack(
                [
                    image_to_input(item, input_shape, light_background, f"{name}[{i}]")
                    for i, item in enumerate(items)
                ]
            )
    if type(value).__module__.split(".")[0] in ("pandas", "polars"):
        labels = [c for c in value.columns if str(c).lower() in LABEL_COLUMNS]
        if hasattr(value, "iloc"):  # pandas
            value = frame_values(value.drop(columns=labels))
        else:
            value = value.drop(labels).to_numpy()
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        array = np.empty(0, dtype=object)
    if array.size == 0 and array.dtype != object:
        raise DataError(f"{name}: an array of shape {array.shape}, with no images.")
    if array.dtype == object or array.size == 0:
        raise DataError(
            f"{name}: {type(value).__name__} is not images; expected an array of images, a "
            "DataFrame of pixel columns, PIL images or image paths."
        )
    flat = int(np.prod(input_shape))
    if array.ndim == 2 and array.shape != tuple(input_shape[:2]) and array.shape[1] == flat:
        array = array.reshape(len(array), *input_shape)
    return pixels_to_inputs(array, input_shape, name, pixel_range)
