"""How a config writes down its data: the formats, the data sets fetched by name, and a pixel
range as "LOW,HIGH". Plain Python, so that `convnet.config` checks these settings without
loading a reader (numpy, polars, Pillow).
"""

from __future__ import annotations

from pathlib import Path

from convnet.errors import ConfigError

FORMATS = ("csv", "npz", "idx", "folder")
# Datasets fetched by name wherever a data source is named (`convnet.data.catalogue`), and
# Quick, Draw!'s classes as "quickdraw:CLASS,CLASS".
DATASET_NAMES = ("fashion-mnist", "mnist", "kmnist", "emnist-letters")
QUICKDRAW = "quickdraw"


def is_dataset_name(source: str | Path) -> bool:
    """Whether a data source names a dataset to fetch ("mnist", "quickdraw:cat,dog") rather than
    a path. A name is a string, as a flag or a YAML value gives it: "./mnist" and
    `Path("mnist")` are paths, so that a folder named like a dataset can still be read."""
    return isinstance(source, str) and (
        source in DATASET_NAMES or source.partition(":")[0] == QUICKDRAW
    )


def parse_range(spec: str, name: str = "pixel_range") -> tuple[float, float]:
    """(low, high) from "LOW,HIGH", such as "0,16" or "-1,1".

    Raises:
        ConfigError: not two numbers with LOW < HIGH.
    """
    try:
        low, high = (float(part) for part in spec.split(","))
    except ValueError:
        low = high = None
    if low is None or not low < high:
        raise ConfigError(
            f"{name} must be LOW,HIGH with LOW < HIGH, such as 0,255, 0,16, 0,1 or -1,1. "
            f"Received: {spec!r}."
        )
    return low, high
