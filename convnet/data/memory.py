"""Data handed over in Python: a pandas or polars DataFrame in the Kaggle layout, or an (x, y)
tuple of arrays.

They are checked as files are (pixel range, sizes, labels), and a message names the argument and
the place (`train x[3, 5, 7] = 300 ...`, `train row 3, column 'pixel8' ...`), never the data. A run
keeps what it was given in its folder (uint8 pixels, labels and class names in one
compressed NPZ, `KeptRecords`), so that resuming, evaluating and reporting read it back as they
read a file.
"""

from __future__ import annotations

import concurrent.futures
import io
import math
import zipfile
from collections.abc import Callable

import numpy as np

from convnet.data.dataset import Dataset, numbered_class_names
from convnet.data.pixels import detect_range, own_range, to_pixels
from convnet.data.settings import parse_range
from convnet.errors import ConfigError, DataError
from convnet.files import write_atomic

# The column a DataFrame's labels are found in without `label_column`: the first of these names
# (in any case) that the frame has.
LABEL_COLUMNS = ("label", "labels", "class", "target", "y")
# The NPZ member that marks a record of data given in memory: the range its uint8 pixels were
# scaled from (`convnet.data.npz` reads such pixels as they are).
RECORD_RANGE_KEY = "convnet_pixel_range"


def read_memory(
    value,
    argument: str,
    label_column: str | int | None = None,
    class_names: tuple[str, ...] | None = None,
    pixel_range: str | None = None,
) -> Dataset:
    """The Dataset of a DataFrame or an (x, y) tuple.

    Args:
        value: a pandas or polars DataFrame with a label column and H*W (or H*W*3) pixel
            columns, or (x, y): x of shape (N, H, W), (N, H, W, C) or (N, H*W) for square
            images; y of N integer labels or class names (strings, sorted to number them).
        argument: the argument's name ("train", "test"), which messages start with.
        label_column: a DataFrame's label column, by name or index; default one named as in
            `LABEL_COLUMNS`.
        class_names: names for integer labels; default "0", "1", ...
        pixel_range: "LOW,HIGH" of x's values, or None to detect it (`convnet.data.pixels`).

    Raises:
        DataError: naming the argument and the first place at fault. ConfigError: `value` is
            none of the kinds above.
    """
    if _is_frame(value):
        x, y, place = _frame_arrays(value, argument, label_column)
    elif isinstance(value, tuple | list) and len(value) == 2:
        x, y = (_array(part, f"{argument} {name}") for part, name in zip(value, "xy", strict=True))
        place = _index_place(f"{argument} x")
    else:
        raise ConfigError(
            f"{argument} must be a path, a DataFrame or an (x, y) tuple of arrays. "
            f"Received: {type(value).__name__}."
        )
    images = _image_shape(x, argument)
    if len(y) != len(x) or y.ndim != 1:
        one_hot = " (one-hot labels? pass y.argmax(axis=1))" if y.ndim == 2 else ""
        raise DataError(
            f"{argument}: {len(x)} images but labels of shape {y.shape}; expected one label "
            f"per image{one_hot}."
        )
    pixels, found_range = _pixels(x, pixel_range, place, argument)
    labels, names = _labels(y, class_names, argument)
    return Dataset(pixels.reshape(images), labels, names, f"{argument} (in memory)", found_range)


def _is_frame(value) -> bool:
    return type(value).__module__.split(".")[0] in ("pandas", "polars") and hasattr(
        value, "columns"
    )


def _array(value, name: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:  # ragged lists
        raise DataError(f"{name}: not an array ({str(error).splitlines()[0]}).") from None
    if array.dtype == bool:
        return array.astype(np.uint8)
    return array


def _frame_arrays(frame, argument: str, label_column) -> tuple[np.ndarray, np.ndarray, Callable]:
    """(pixels N x P, labels, a function naming the cell at an index of the pixels)."""
    columns = [str(name) for name in frame.columns]
    index = _label_index(columns, label_column, argument)
    label = frame.columns[index]
    pixels = [c for i, c in enumerate(frame.columns) if i != index]
    if type(frame).__module__.startswith("polars"):
        x, y = frame.select(pixels).to_numpy(), frame.get_column(label).to_numpy()
    else:
        x, y = frame_values(frame[pixels]), frame_values(frame[label])
    names = [str(c) for c in pixels]

    def place(at: tuple[int, ...]) -> str:
        return f"{argument} row {at[0]}, column {names[at[1]]!r}"

    labels = _array(y, f"{argument} column {columns[index]!r}")
    return _array(x, f"{argument} pixels"), labels, place


def frame_values(data) -> np.ndarray:
    """A pandas DataFrame's or Series' values as NumPy numbers where they are numbers. Nullable
    columns (Int64, Float64, boolean; `read_csv(..., dtype_backend=...)`), which `to_numpy`
    gives as Python objects, come as float64, a missing value as NaN, which is then named as
    any NaN is."""
    dtypes = list(data.dtypes) if hasattr(data, "columns") else [data.dtype]
    if all(isinstance(dtype, np.dtype) for dtype in dtypes):
        return data.to_numpy()
    from pandas.api.types import is_numeric_dtype

    if all(is_numeric_dtype(dtype) for dtype in dtypes):
        return data.to_numpy(dtype=np.float64, na_value=np.nan)
    return data.to_numpy()


def _label_index(columns: list[str], label_column, argument: str) -> int:
    if isinstance(label_column, int) and not isinstance(label_column, bool):
        if not 0 <= label_column < len(columns):
            raise DataError(
                f"{argument}: label_column {label_column} is out of range; the DataFrame has "
                f"{len(columns)} columns."
            )
        return label_column
    if label_column is not None:
        if str(label_column) not in columns:
            raise DataError(
                f"{argument}: no column named {label_column!r}; expected one of the DataFrame's "
                f"columns ({', '.join(columns[:5])}, ...)."
            )
        return columns.index(str(label_column))
    lowered = [c.lower() for c in columns]
    for name in LABEL_COLUMNS:
        if name in lowered:
            return lowered.index(name)
    raise DataError(
        f"{argument}: no label column; expected one named {', '.join(LABEL_COLUMNS)}, or pass "
        "label_column=NAME|INDEX."
    )


def _index_place(name: str) -> Callable[[tuple[int, ...]], str]:
    return lambda at: f"{name}[{', '.join(map(str, at))}]"


def _image_shape(x: np.ndarray, argument: str) -> tuple[int, int, int, int]:
    """The (N, H, W, C) that x's values make.

    Raises:
        DataError: a shape that is not images, or no images.
    """
    expected = "expected (N, H, W), (N, H, W, C) with C 1 or 3, or (N, H*W) for square images"
    if x.ndim == 2:
        side, colours = math.isqrt(x.shape[1]), 1
        if side * side != x.shape[1]:
            side, colours = math.isqrt(x.shape[1] // 3), 3
        if side == 0 or side * side * colours != x.shape[1]:
            raise DataError(
                f"{argument}: {x.shape[1]} pixel values per image is not a square image; "
                f"{expected}."
            )
        shape = (len(x), side, side, colours)
    elif x.ndim == 3:
        shape = (*x.shape, 1)
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        shape = x.shape
    else:
        first = " (channels first? move them last)" if x.ndim == 4 and x.shape[1] in (1, 3) else ""
        raise DataError(f"{argument}: x has shape {x.shape}{first}; {expected}.")
    if 0 in shape:
        raise DataError(f"{argument}: x has shape {x.shape}, with no images; {expected}.")
    return shape


def _pixels(x: np.ndarray, pixel_range: str | None, place, argument: str) -> tuple[np.ndarray, str]:
    """x as uint8 pixels, and the range they were read in; a value that is not a pixel is named
    by its place."""
    name = f"{argument} x"
    if x.dtype == object:  # a DataFrame's text or mixed columns
        x = _object_numbers(x, place)
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{name}: holds {x.dtype} values; expected numbers, such as uint8 0-255.")
    # The least and the greatest settle each check (NaN and infinities among them); a mask to
    # find the first value at fault costs 8x more, and is made only then.
    least, most = x.min(), x.max()
    if not (np.isfinite(least) and np.isfinite(most)):
        at = _first(~np.isfinite(x))
        raise DataError(f"{place(at)} = {x[at]}; expected a pixel value, a finite number.")
    pixel_range = pixel_range or detect_range(x, name, lambda i: f"image {i}")
    low, high = parse_range(pixel_range)
    if least < low or most > high:
        at = _first((x < low) | (x > high))
        raise DataError(
            f"{place(at)} = {x[at].item():.10g} is outside the pixel range {low:g} to {high:g} "
            f"(pixel_range {pixel_range}); {own_range()}."
        )
    return to_pixels(x, name, pixel_range)


def _object_numbers(x: np.ndarray, place) -> np.ndarray:
    """An array of Python objects as float64, the first value that is not a number named by
    its place (and shown cut short: it may be any text)."""
    try:
        return x.astype(np.float64)
    except (ValueError, TypeError):
        flat = next(i for i, value in enumerate(x.flat) if not _is_number(value))
        at = tuple(int(i) for i in np.unravel_index(flat, x.shape))
        shown = repr(x[at])
        shown = shown if len(shown) <= 20 else shown[:19] + "…"
        raise DataError(f"{place(at)} = {shown}; expected a pixel value, a number.") from None


def _first(mask: np.ndarray) -> tuple[int, ...]:
    """The index of the first True in `mask`."""
    return tuple(int(i) for i in np.unravel_index(np.argmax(mask), mask.shape))


def _labels(y: np.ndarray, class_names, argument: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer labels as int64 with their class names; strings name their classes (sorted)."""
    name = f"{argument} y"
    strings = y.dtype.kind in "US" or (
        y.dtype.kind == "O" and all(isinstance(v, str) for v in y.tolist())
    )
    if strings and len(y):
        text = y.astype(str)
        names = tuple(sorted(set(text.tolist())))
        return np.searchsorted(np.array(names), text).astype(np.int64), names
    labels = _whole_numbers(y, name)
    negative = np.flatnonzero(labels < 0)
    if len(negative):
        raise DataError(
            f"{name}[{negative[0]}] = {labels[negative[0]]}; expected a class index from 0."
        )
    names = tuple(class_names) if class_names else numbered_class_names(labels, name)
    beyond = np.flatnonzero(labels >= len(names))
    if len(beyond):
        raise DataError(
            f"{name}[{beyond[0]}] = {labels[beyond[0]]} is out of range; expected 0 to "
            f"{len(names) - 1} for {len(names)} class names."
        )
    return labels, names


def _whole_numbers(y: np.ndarray, name: str) -> np.ndarray:
    """y as int64, refusing a value that is not a whole number (naming its index)."""
    try:
        numbers = y.astype(np.float64)
    except (ValueError, TypeError):
        at = next(i for i, v in enumerate(y) if not _is_number(v))
        raise DataError(
            f"{name}[{at}] is not a label; expected integer class indexes or class names."
        ) from None
    fraction = ~np.isfinite(numbers) | (numbers != np.round(numbers))
    if fraction.any():
        at = int(np.argmax(fraction))
        raise DataError(
            f"{name}[{at}] = {numbers[at]:g} is not a whole number; expected integer class "
            "indexes or class names."
        )
    return y.astype(np.int64) if y.dtype.kind in "iu" else numbers.astype(np.int64)


def _is_number(value) -> bool:
    try:
        float(value)
    except (ValueError, TypeError):
        return False
    return True


def encode_record(data: Dataset) -> bytes:
    """`data` as the NPZ that `convnet.data.npz.read_npz` reads back unchanged: its uint8 pixels,
    labels, class names and the range the pixels were scaled from."""
    arrays = {
        "x_train": data.x,
        "y_train": data.y,
        "class_names": np.array(data.class_names, dtype=str),
        RECORD_RANGE_KEY: np.array(data.pixel_range),
    }
    buffer = io.BytesIO()
    # zlib's fastest level: Fashion-MNIST's 60,000 images take 0.7 s and 27.3 MB, against
    # np.savez_compressed's 1.4 s and 26.5 MB (docs/benchmarks.md, bench.in_memory).
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return buffer.getvalue()


class KeptRecords:
    """The records a run keeps of the data given in Python (`encode_record`), by argument.

    They are compressed in a thread from the moment they are made: zlib releases the GIL, so the
    framework's import and the model's building go on beside it, and training on data in memory
    costs no more time than on files (docs/benchmarks.md, bench.in_memory).
    """

    def __init__(self, given: dict[str, Dataset]):
        self._pool = concurrent.futures.ThreadPoolExecutor(1, "convnet-records")
        self._encoded = {name: self._pool.submit(encode_record, d) for name, d in given.items()}
        self._pool.shutdown(wait=False)  # its thread ends when the records are made

    def write(self, paths: dict[str, str]) -> None:
        """Writes each record to its path (by argument), atomically."""
        for name, encoded in self._encoded.items():
            write_atomic(paths[name], encoded.result())


def recorded_range(archive) -> str | None:
    """The range an NPZ record's pixels were scaled from (`encode_record`); None for an NPZ
    that is no record."""
    if RECORD_RANGE_KEY not in archive.files:
        return None
    return str(archive[RECORD_RANGE_KEY])
