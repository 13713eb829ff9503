"""The data of one training run: the sets `load_train_test` gives, cut to `limit`, checked, split
for validation and weighted (`load_training_data`), data given in Python read in their place
(`read_given`), and the settings the data decides written back into the config
(`fitted_to_data`).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from convnet.data.dataset import FASHION_MNIST_CLASSES, DataRecord, Dataset
from convnet.data.loading import (
    HeldOutTestWarning,
    load_config_data,
    load_source,
    resolve_class_names,
)
from convnet.data.memory import KeptRecords, read_memory
from convnet.data.split import split
from convnet.data.weights import class_weights
from convnet.errors import DataError
from convnet.models.recipe import resolve_augment
from convnet.models.registry import check_image_size

if TYPE_CHECKING:  # for annotations only: config sits above data and imports data.settings
    from convnet.config import TrainConfig


@dataclass(frozen=True)
class TrainingData:
    """The data of one training run.

    The training data before the validation split is kept as its record, not as a Dataset:
    `train` and `validation` hold its examples again between them, and streamed, its index
    alone is 4 bytes an example (33 MB for 8 GB of doodles), in memory its images a copy.

    Attributes:
        record: the training data after `limit`, before the validation split, as the run's
            manifest records it.
        light_background: whether its images are mostly light at the border
            (`Dataset.background_is_light`).
        test: the test set, relabelled to the training classes.
        train: what `fit` trains on. The trainer lets it go before the test pass, with
            `validation` (`convnet.training.trainer.Session.test_set`).
        validation: the held-out part of the training data, or None when `val_split` is 0.
        test_split: the share of the source held out as `test`, or None if it had a test set.
        class_weight: each class index's weight in the loss, or None for equal weights.
        kept: the records of the data given in Python, which the run keeps in its folder
            (`convnet.data.memory.KeptRecords`), or None.
    """

    record: DataRecord
    light_background: bool
    test: Dataset
    train: Dataset
    validation: Dataset | None
    test_split: float | None = None
    class_weight: dict[int, float] | None = None
    kept: KeptRecords | None = None


def read_given(config: TrainConfig, memory: dict) -> dict[str, Dataset]:
    """The Datasets of data given in Python in place of `config.train` or `config.test`.

    Args:
        config: the other settings: label column, class names, pixel range.
        memory: "train" and/or "test": a DataFrame or (x, y) arrays (`convnet.data.memory`).

    Returns:
        A Dataset by argument. A test set is read in the training data's pixel range, as files
        are.

    Raises:
        DataError: naming the argument and the place at fault.
    """
    names = resolve_class_names(config.class_names, Path(""))
    options = (config.label_column, names)
    sets = {}
    if "train" in memory:
        sets["train"] = read_memory(memory["train"], "train", *options, config.pixel_range)
    if "test" in memory:
        train_range = sets["train"].pixel_range if sets else config.pixel_range
        if train_range is None and config.train:  # the training source's, detected
            source = load_source(
                config.train, config.format, config.label_column, names, None, 1, config.data_dir
            )
            train_range = source["train"].pixel_range
        sets["test"] = read_memory(memory["test"], "test", *options, train_range)
    return sets


def load_training_data(
    config: TrainConfig, given: dict | None = None, keep: bool = False, again: bool = False
) -> TrainingData:
    """Reads, limits and splits the data `config` names, as `train` and `lr-find` use it.

    Args:
        config: the settings naming the data.
        given: Datasets of data given in Python (`read_given`) in place of the paths `config`
            names.
        keep: make the records a run keeps of `given` (`TrainingData.kept`).
        again: a run's data read again (to resume it, to calibrate its export): a test set held
            out of it was announced when it began (`HeldOutTestWarning`), and is not again.

    Raises:
        DataError: the data cannot be read, or the sets do not fit together.
    """
    with warnings.catch_warnings():
        if again:
            warnings.simplefilter("ignore", HeldOutTestWarning)
        full, test, test_split = load_config_data(config, config.limit, given)
    check_image_size(config.preset, full.image_shape, full.source)
    if config.limit:  # read whole when a test set was held out of it (`load_config_data`)
        full = full.take(slice(0, config.limit))
    check_classes(full)
    train, validation = split(full, config.recipe().val_split, config.seed, config.stratify)
    weights = class_weights(config.class_weight, train)
    kept = KeptRecords(given) if keep and given else None
    record, light = DataRecord.of(full), full.background_is_light()
    return TrainingData(record, light, test, train, validation, test_split, weights, kept)


def check_classes(data: Dataset) -> None:
    """Refuses training data of fewer than two classes, before any training.

    Raises:
        DataError: naming the source and the one class it holds.
    """
    present = np.unique(data.y)
    if len(present) < 2:
        only = f" ({data.class_names[present[0]]!r})" if len(present) else ""
        raise DataError(
            f"{data.source}: the training data holds one class{only}; expected images of at "
            "least two classes to tell apart."
        )


def fitted_to_data(config: TrainConfig, data: TrainingData) -> TrainConfig:
    """`config` with the settings the data decides written in, so that config.yaml holds them
    and every later command reads the run's data and images alike: the pixel range found, the
    share held out as the test set, and the augmentation left to the data (`resolve_augment`).
    """
    augment = resolve_augment(
        config.recipe(),
        data.train.image_shape,
        mirror_symmetric=data.train.class_names == FASHION_MNIST_CLASSES,
    )
    return dataclasses.replace(
        config,
        pixel_range=data.train.pixel_range,
        test_split=data.test_split,
        overrides=config.overrides | augment,
    )
