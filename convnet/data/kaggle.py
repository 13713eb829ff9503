"""Writing the Kaggle layout of Fashion-MNIST: `label,pixel1,...,pixel784`, one row per image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from convnet.data.dataset import Dataset
from convnet.data.sources import load_fashion_mnist
from convnet.files import write_atomic

KAGGLE_NAMES = {"train": "fashion-mnist_train.csv", "test": "fashion-mnist_test.csv"}


def write_kaggle_csv(data: Dataset, path: str | Path) -> Path:
    """Writes `data` as a Kaggle-style CSV, atomically."""
    pixels = data.x.reshape(len(data), -1)
    names = ["label"] + [f"pixel{j + 1}" for j in range(pixels.shape[1])]
    table = np.column_stack([data.y.astype(np.int64), pixels])
    text = pl.DataFrame(table, schema=names, orient="row").write_csv()
    return write_atomic(path, text.encode())


def export_fashion_mnist_csv(out_dir: str | Path, data_dir: str | Path | None = None) -> list[Path]:
    """Writes `fashion-mnist_train.csv` and `fashion-mnist_test.csv` (the seed's inputs)."""
    splits = load_fashion_mnist(data_dir)
    return [
        write_kaggle_csv(splits[split], Path(out_dir) / name)
        for split, name in KAGGLE_NAMES.items()
    ]
