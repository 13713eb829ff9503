"""Writing the Kaggle layout of Fashion-MNIST: `label,pixel1,...,pixel784`, one row per image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from convnet.data.dataset import Dataset
from convnet.data.sources import load_fashion_mnist
from convnet.files import atomic_file

KAGGLE_NAMES = {"train": "fashion-mnist_train.csv", "test": "fashion-mnist_test.csv"}


def write_kaggle_csv(data: Dataset, path: str | Path) -> Path:
    """Writes `data` as a Kaggle-style CSV, atomically."""
    pixels = data.x.reshape(len(data), -1)
    names = [f"pixel{j + 1}" for j in range(pixels.shape[1])]
    # Columns from the transposed uint8 pixels, each a contiguous row that polars takes as it
    # is: a row-oriented int64 table of labels and pixels took 4 times as long to write
    # (docs/benchmarks.md, bench.cli_latency).
    frame = pl.from_numpy(np.ascontiguousarray(pixels.T), schema=names, orient="col")
    frame.insert_column(0, pl.Series("label", data.y))
    with atomic_file(path) as out:
        frame.write_csv(out)
    return Path(path)


def export_fashion_mnist_csv(out_dir: str | Path, data_dir: str | Path | None = None) -> list[Path]:
    """Writes `fashion-mnist_train.csv` and `fashion-mnist_test.csv` (the seed's inputs)."""
    splits = load_fashion_mnist(data_dir)
    return [
        write_kaggle_csv(splits[split], Path(out_dir) / name)
        for split, name in KAGGLE_NAMES.items()
    ]
