"""NumPy `.npz` archives: `x_train`, `y_train`, optionally `x_test`, `y_test`, `class_names`."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from convnet.data.dataset import Dataset, numbered_class_names
from convnet.data.pixels import to_pixels
from convnet.errors import DataError


def read_npz(
    path: str | Path,
    class_names: tuple[str, ...] | None = None,
    pixel_range: str | None = None,
) -> dict[str, Dataset]:
    """Reads the splits an archive holds.

    Args:
        path: an `.npz` file. Keys `x_train`/`y_train` (or `x`/`y`), and `x_test`/`y_test` if
            the archive carries a test split. Images are (N, H, W) or (N, H, W, C), values 0-255.
        class_names: names for the labels; else the archive's `class_names`, else "0", "1", ...
        pixel_range: "LOW,HIGH" of the images' values, or None to detect it from the training
            images (`convnet.data.pixels`); the test images are read in the same range.

    Returns:
        {"train": Dataset} and, where present, "test".

    Raises:
        DataError: a missing key, pickled objects, or values that are not pixels or labels.
    """
    path = Path(path)
    arrays = _load_arrays(path)
    if class_names is None and "class_names" in arrays:
        names = arrays["class_names"]
        if names.ndim != 1:
            raise DataError(
                f"{path}: 'class_names' has shape {names.shape}; expected a 1-D array of names."
            )
        class_names = tuple(str(name) for name in names)
    splits = {}
    for split, (x_key, y_key) in {
        "train": ("x_train", "y_train") if "x_train" in arrays else ("x", "y"),
        "test": ("x_test", "y_test"),
    }.items():
        if x_key not in arrays and split == "test":
            continue
        for key in (x_key, y_key):
            if key not in arrays:
                raise DataError(
                    f"{path}: missing array {key!r}; expected x_train, y_train (and optionally "
                    f"x_test, y_test). Found: {', '.join(sorted(arrays)) or 'nothing'}."
                )
        x, pixel_range = _images(path, x_key, arrays[x_key], pixel_range)
        splits[split] = (x, _labels(path, y_key, arrays[y_key]))
    names = class_names or numbered_class_names(
        np.concatenate([y for _, y in splits.values()]), str(path)
    )
    return {
        split: Dataset(x, y, names, f"{path}:{split}", pixel_range)
        for split, (x, y) in splits.items()
    }


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array in the archive, refusing pickles, broken zips and single `.npy` files."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataError(
                f"{path}: holds a single .npy array; expected an .npz archive of named arrays "
                "(x_train, y_train, ...)."
            )
        with loaded as archive:
            return {key: archive[key] for key in archive.files}
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found.") from None
    except (
        ValueError,
        OSError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
        NotImplementedError,  # zip versions and compressions zipfile cannot read
        RuntimeError,  # encrypted zip members
    ) as error:
        raise DataError(f"{path}: not a readable .npz archive of plain arrays ({error}).") from None
    except MemoryError:
        raise DataError(
            f"{path}: an array's header declares more data than fits in memory."
        ) from None


def _images(path: Path, key: str, x: np.ndarray, pixel_range: str | None):
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4 or x.size == 0:
        raise DataError(
            f"{path}: {key!r} has shape {x.shape}; expected (N, H, W) or (N, H, W, C) images, "
            "none of size 0."
        )
    return to_pixels(x, f"{path}: {key!r}", pixel_range)


def _labels(path: Path, key: str, y: np.ndarray) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"{path}: {key!r} has dtype {y.dtype} and shape {y.shape}; expected 1-D integer labels."
        )
    return y.astype(np.int64)
