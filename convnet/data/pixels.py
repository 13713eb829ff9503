"""Pixel value ranges: what a source's numbers mean, and turning them into uint8 0-255.

Every model takes uint8 pixels 0-255 (its own Rescaling layer scales them), so a source holding
other numbers, such as scikit-learn's digits (0-16), binary bitmaps (0-1) or normalised floats
([0, 1], [-1, 1]), is scaled to 0-255 as it is read. The range is detected from the training
data, recorded in the run's config.yaml (`pixel_range`), and applied again to the test set and
to the arrays that `predict` and `serve` receive, so the model always sees what it trained on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from convnet.data.settings import parse_range
from convnet.errors import DataError, setting

FULL_RANGE = "0,255"
# Integer data whose maximum is at most this is taken as 0..max (4-bit images, scikit-learn's
# 0-16 digits, 0/1 bitmaps); above it, as 0-255 pixels.
SMALL_MAX = 16
SCALE_CHUNK = 2**22  # values scaled at a time: 16 MB of float32


def format_range(low: float, high: float) -> str:
    return f"{low:g},{high:g}"


def detect_range(
    array: np.ndarray, name: str, row_name: Callable[[int], str] = lambda i: f"image {i}"
) -> str:
    """The value range of pixels `array` holds: "0,255", "0,MAX" for small integers, "0,1" or
    "-1,1" for floats.

    Raises:
        DataError: naming `name`, with the values found and what to pass, when no usual range fits.
    """
    if array.size == 0 or array.dtype == np.uint8 and array.max() > SMALL_MAX:
        return FULL_RANGE
    low, high = float(array.min()), float(array.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise DataError(f"{name}: holds NaN or infinite values; expected pixel values.")
    whole = bool(np.issubdtype(array.dtype, np.integer) or (array == np.round(array)).all())
    if whole and low >= 0 and SMALL_MAX < high <= 255:
        return FULL_RANGE
    if whole and low >= 0 and 1 <= high <= SMALL_MAX:
        return format_range(0, high)
    if low >= 0 and high <= 1:
        return "0,1"
    if low >= -1 and high <= 1:
        return "-1,1"
    extreme = int(np.argmin(array) if low < 0 else np.argmax(array))
    where = row_name(int(np.unravel_index(extreme, array.shape)[0]))
    found = f"values from {low:.10g} to {high:.10g} ({where} holds {array.flat[extreme]:.10g})"
    raise DataError(
        f"{name}: holds {found}; expected pixels 0-255, small integers 0-{SMALL_MAX}, or floats "
        f"in [0, 1] or [-1, 1]. To scale them, pass the range they are in, such as "
        f"{setting('pixel_range', f'0,{high:.10g}')}."
    )


def own_range() -> str:
    """The remedy for values outside the pixel range assumed: the data's own, as the user sets
    it where they are."""
    return f"pass the range the data is in, {setting('pixel_range', 'LOW,HIGH')}"


def to_pixels(
    array: np.ndarray,
    name: str,
    pixel_range: str | None = None,
    row_name: Callable[[int], str] = lambda i: f"image {i}",
    remedy: str | None = None,
    in_place: bool = False,
) -> tuple[np.ndarray, str]:
    """`array`'s values as uint8 pixels 0-255, scaled from `pixel_range`.

    Args:
        array: numbers of any real type, images along the first axis.
        name: the source, for messages.
        pixel_range: "LOW,HIGH" the values span, or None to detect it (`detect_range`).
        row_name: names the image at an index, for messages (a CSV names its line).
        remedy: what a message about values outside `pixel_range` tells the user to do;
            defaults to `own_range`.
        in_place: uint8 `array` may be overwritten with the pixels (a reader's own copy), so
            that 0/1 or 0-16 data is scaled without a second array of its size.

    Returns:
        (pixels, the range used).

    Raises:
        DataError: naming `name`, for values that are not numbers or fall outside the range.
    """
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{name}: holds {array.dtype}; expected pixel values, integers 0-255.")
    pixel_range = pixel_range or detect_range(array, name, row_name)
    if pixel_range == FULL_RANGE and array.dtype == np.uint8:
        return array, pixel_range
    low, high = parse_range(pixel_range)
    # The least and the greatest settle it (NaN fails both comparisons): a mask of the values
    # outside, to name the first, costs 8x more and is made only then.
    if array.size and not (array.min() >= low and array.max() <= high):
        outside = ~((array >= low) & (array <= high))
        first = np.unravel_index(np.argmax(outside), array.shape)
        raise DataError(
            f"{name}: {row_name(int(first[0]))} holds {array[first].item():.10g}, outside the "
            f"pixel range {low:g} to {high:g} (pixel_range {pixel_range}); {remedy or own_range()}."
        )
    if (low, high) == (0, 255):
        fractions = np.issubdtype(array.dtype, np.floating) and (array != np.round(array)).any()
        if fractions:  # 0.5 between two levels is not a pixel value
            looks = " (they look scaled to [0, 1]: multiply by 255)" if array.max() <= 1 else ""
            raise DataError(f"{name}: holds fractions{looks}; expected integer pixels 0-255.")
        return array.astype(np.uint8), pixel_range
    if np.issubdtype(array.dtype, np.integer) and high - low <= 255:  # a table of each value
        table = _scaled(np.arange(int(low), int(high) + 1), low, high)
        return _looked_up(array, table, int(low), in_place), pixel_range
    return _scaled(array, low, high), pixel_range


def _looked_up(array: np.ndarray, table: np.ndarray, low: int, in_place: bool) -> np.ndarray:
    """`table[value - low]` for each integer value of `array`, a few images at a time, into
    `array` itself when it is uint8 and `in_place`."""
    pixels = array if in_place and array.dtype == np.uint8 else np.empty(array.shape, np.uint8)
    rows = max(1, SCALE_CHUNK // max(1, array[:1].size))
    for start in range(0, len(array), rows):
        part = array[start : start + rows]
        pixels[start : start + rows] = table[part - low if low else part]
    return pixels


def _scaled(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """`array`'s values from [low, high] to uint8 0-255, rounded, a few images at a time: in
    float32 at once, 0/1 bitmaps took 4x their size again (docs/benchmarks.md, hostile input)."""
    pixels = np.empty(array.shape, np.uint8)
    factor = np.float32(255 / (high - low))
    rows = max(1, SCALE_CHUNK // max(1, array[:1].size))
    for start in range(0, len(array), rows):
        part = array[start : start + rows].astype(np.float32)
        part -= np.float32(low)
        part *= factor
        np.rint(part, out=part)
        pixels[start : start + rows] = part
    return pixels
