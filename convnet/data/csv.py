"""Kaggle-style CSV: one row per image, a label column and H*W pixel columns, header or not."""

from __future__ import annotations

import csv
import gzip
import math
import re
import typing
from pathlib import Path

import numpy as np
import polars as pl

from convnet.data.dataset import Dataset, numbered_class_names
from convnet.data.pixels import to_pixels
from convnet.errors import DataError, setting

# The largest square greyscale image a CSV row may hold: past it, a file is not MNIST-like data,
# and parsing a million-column header alone took 3.5 GB (docs/benchmarks.md, hostile input).
MAX_SIDE = 512
MAX_COLUMNS = MAX_SIDE * MAX_SIDE + 1


def read_csv(
    path: str | Path,
    label_column: str | int | None = None,
    class_names: tuple[str, ...] | None = None,
    labeled: bool = True,
    pixel_range: str | None = None,
) -> Dataset:
    """Reads a CSV of pixel rows.

    Args:
        path: the CSV file, gzip-compressed if its name ends in `.gz`.
        label_column: the label column's name or 0-based index. Defaults to a column named
            "label" when there is a header, else the first column.
        class_names: names for integer labels. String labels name their own classes (sorted).
        labeled: False (as `predict` reads) to drop a column the header names "label" without
            reading it, whatever it holds, and take every other column as pixels; labels are
            then all 0.
        pixel_range: "LOW,HIGH" of the pixel values, or None to detect it
            (`convnet.data.pixels`).

    Returns:
        A Dataset of square greyscale images, the side inferred from the pixel count.

    Raises:
        DataError: naming the line and column of the first bad value, or what is wrong overall.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found.")
    try:
        return _read(path, label_column, class_names, labeled, pixel_range)
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: not UTF-8 text (byte {error.start} is 0x{error.object[error.start]:02x}); "
            "expected a CSV of numbers."
        ) from None
    except (csv.Error, gzip.BadGzipFile, EOFError) as error:
        raise DataError(f"{path}: not a readable CSV ({error}).") from None


def _read(path: Path, label_column, class_names, labeled: bool, pixel_range) -> Dataset:
    _check_width(path)
    header = _first_line(path)
    has_header = _looks_like_header(header)
    names = header if has_header else [f"column{i}" for i in range(len(header))]
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise DataError(f"{path}: the header names column {twice!r} twice; expected unique names.")
    if labeled:
        label_index = _label_index(path, names, has_header, label_column)
    else:
        label_index = names.index("label") if has_header and "label" in names else None
    pixel_names = [n for i, n in enumerate(names) if i != label_index]
    side = math.isqrt(len(pixel_names))
    if side * side != len(pixel_names) or side == 0:
        unnamed = label_column is None and "label" not in names
        if labeled and unnamed and math.isqrt(len(names)) ** 2 == len(names):
            raise DataError(
                f"{path}: no label column: its {len(names)} columns make a square image; name "
                f"the labels' column (its name or index) with {setting('label_column')}, or add "
                "a 'label' column."
            )
        raise DataError(
            f"{path}: {len(pixel_names)} pixel columns is not a square image; "
            "expected H*W columns such as 784 (28x28)."
        )
    # polars' multi-threaded reader, straight into uint8: 1.1-3.4x faster than pandas on 2 cores,
    # by CPU (docs/benchmarks.md, bench.time_to_accuracy); pyarrow and DuckDB were slower than
    # polars on AMD Zen 4. Fractions and values past 255 fail that parse and are read again as
    # floats, for `to_pixels` to scale or refuse; text and ragged rows fail both, and the slow
    # scan below then names the cell.
    frame = None
    for pixel_type in (pl.UInt8, pl.Float64):
        try:
            frame = pl.read_csv(
                path,
                has_header=has_header,
                schema={
                    n: pl.String if i == label_index else pixel_type for i, n in enumerate(names)
                },
                raise_if_empty=False,
            )
            break
        except (pl.exceptions.PolarsError, OverflowError) as error:
            failure = error
    if frame is None:
        _raise_first_bad_row(path, names, has_header, label_index)
        raise DataError(f"{path}: {str(failure).splitlines()[0]}") from None
    if frame.null_count().sum_horizontal().item():
        _raise_first_bad_row(path, names, has_header, label_index)  # a short row, if any
        frame = _without_trailing_blank_lines(frame)
    x = _pixels(path, frame, pixel_names, has_header).reshape(-1, side, side, 1)
    x, pixel_range = to_pixels(
        x, str(path), pixel_range, row_name=lambda i: f"line {_line(i, has_header)}"
    )
    if not labeled:
        return Dataset(x, np.zeros(len(x), np.int64), class_names or ("0",), str(path), pixel_range)
    y, class_names = _labels(path, frame.get_column(names[label_index]), has_header, class_names)
    return Dataset(x, y, class_names, str(path), pixel_range)


def _check_width(path: Path) -> None:
    """Refuses a file whose first line has more than MAX_COLUMNS columns, counting its commas a
    chunk at a time: before a parser makes a string, or a column, of each.

    Raises:
        DataError: naming the file and the count.
    """
    commas = 0
    with _open_text(path) as f:
        while chunk := f.read(2**20):
            line = chunk.split("\n", 1)[0]
            commas += line.count(",")
            if len(line) < len(chunk) or commas >= MAX_COLUMNS:
                break
    if commas >= MAX_COLUMNS:
        raise DataError(
            f"{path}: over {MAX_COLUMNS:,} columns; expected a label and at most "
            f"{MAX_COLUMNS - 1:,} pixel columns (images up to {MAX_SIDE}x{MAX_SIDE})."
        )


def _first_line(path: Path) -> list[str]:
    with _open_text(path) as f:
        row = next(csv.reader(f), None)
    if not row:
        raise DataError(f"{path}: the file is empty; expected a header or rows of pixels.")
    return row


def _open_text(path: Path) -> typing.TextIO:
    """The file as text; a `.gz` name is decompressed (polars reads those by itself)."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", newline="")
    return path.open(newline="")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _looks_like_header(row: list[str]) -> bool:
    # A data row is almost all numbers (a string label at most); a header is almost all names.
    return sum(not _is_number(cell) for cell in row) > len(row) // 2


def _label_index(path: Path, names: list[str], has_header: bool, label_column) -> int:
    if label_column is None:
        return names.index("label") if has_header and "label" in names else 0
    if isinstance(label_column, int) or (
        str(label_column).isascii() and str(label_column).isdigit()
    ):
        index = int(label_column)
        if index >= len(names):
            raise DataError(
                f"{path}: label column {index} is out of range; the file has {len(names)}."
            )
        return index
    if label_column not in names:
        raise DataError(
            f"{path}: no column named {label_column!r}; expected one of the header's columns "
            f"({', '.join(names[:5])}, ...)."
        )
    return names.index(label_column)


def _line(row: int, has_header: bool) -> int:
    return row + 1 + int(has_header)


def _first_null(path: Path, column: pl.Series, has_header: bool, what: str) -> None:
    if column.null_count():
        row = column.is_null().arg_true()[0]
        raise DataError(
            f"{path}: line {_line(row, has_header)}, column {column.name!r}: missing {what}."
        )


def _pixels(path: Path, frame: pl.DataFrame, pixel_names: list[str], has_header: bool):
    pixels = frame.select(pixel_names)
    for column in pixels.iter_columns():
        _first_null(path, column, has_header, "pixel")
    if not len(pixels):
        raise DataError(f"{path}: no rows of pixels after the header.")
    return pixels.to_numpy(order="c")


def _labels(path: Path, column: pl.Series, has_header: bool, class_names):
    """Integer labels (range-checked against `class_names`), or strings naming their classes."""
    _first_null(path, column, has_header, "label")
    name = column.name
    stripped = column.str.strip_chars()
    integers = stripped.cast(pl.Int64, strict=False)
    if not integers.null_count():
        y = integers.to_numpy()
        bad = np.flatnonzero(y < 0)
        if len(bad):
            raise DataError(
                f"{path}: line {_line(bad[0], has_header)}, column {name!r}: label {y[bad[0]]} "
                "is negative; expected a class index from 0."
            )
        names = class_names or numbered_class_names(y, str(path))
        bad = np.flatnonzero(y >= len(names))
        if len(bad):
            raise DataError(
                f"{path}: line {_line(bad[0], has_header)}, column {name!r}: label {y[bad[0]]} "
                f"is out of range; expected 0 to {len(names) - 1}."
            )
        return y, tuple(names)
    if not stripped.cast(pl.Float64, strict=False).null_count():
        row = integers.is_null().arg_true()[0]
        raise DataError(
            f"{path}: line {_line(row, has_header)}, column {name!r}: label {stripped[row]!r} is "
            "not a whole number; expected integer class indexes or class names."
        )
    text = column.to_numpy().astype(str)
    names = tuple(sorted(set(text.tolist())))  # str, not np.str_, as the cache returns
    return np.searchsorted(np.array(names), text).astype(np.int64), names


def _without_trailing_blank_lines(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` without the empty rows that blank lines at the end of a file read as."""
    blank = frame.select(pl.all_horizontal(pl.all().is_null())).to_series().to_numpy()
    kept = len(blank) - int(np.argmin(blank[::-1])) if not blank.all() else 0
    return frame.head(kept)


def _raise_first_bad_row(path: Path, names: list[str], has_header: bool, label_index) -> None:
    """Slow scan, on the error path only, for a message that names the line and column.

    Blank lines pass: trailing ones are dropped, others reported as empty cells."""
    with _open_text(path) as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if (has_header and line == 1) or not row:
                continue
            if len(row) != len(names):
                raise DataError(
                    f"{path}: line {line} has {len(row)} columns; expected {len(names)}."
                )
            for j, cell in enumerate(row):
                text = cell.strip()
                if j == label_index or not text:
                    continue
                # a plain decimal number: isdigit() also takes "²", float() "nan" and "1_0"
                if not re.fullmatch(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?", text):
                    raise DataError(
                        f"{path}: line {line}, column {names[j]!r}: {cell!r} is not a pixel value; "
                        "expected a number such as an integer from 0 to 255."
                    )
