"""A test set matched to the classes of the data a model was trained on: by name, loosely, or
by index."""

from __future__ import annotations

import dataclasses

import numpy as np

from convnet.data.dataset import Dataset
from convnet.errors import DataError


def matched_to_training(
    test_set: Dataset, image_shape: tuple[int, ...], class_names: tuple[str, ...]
) -> Dataset:
    """`test_set`, checked to hold images of the training data's shape and relabelled to its
    classes (`relabel`).

    Raises:
        DataError: another image shape, or a class the training data lacks.
    """
    if test_set.image_shape != tuple(image_shape):
        raise DataError(
            f"{test_set.source}: images of shape {test_set.image_shape}; expected "
            f"{tuple(image_shape)} like the training data."
        )
    return relabel(test_set, tuple(class_names))


def relabel(data: Dataset, class_names: tuple[str, ...]) -> Dataset:
    """`data` with its labels renumbered to index `class_names`, matching classes by name.

    A test set may hold fewer classes than the training data (a folder without one class, a CSV
    whose labels never name one); its own numbering then differs, and only the names agree.
    Integer labels that came without names ("0", "1", ...) are taken as indices. A name that is
    not a training class's matches one written without its case and punctuation ("T-shirt_top"
    for "T-shirt/top", which no folder can be named), else, as digits, indexes the classes.

    Raises:
        DataError: `data` has a class that `class_names` lacks.
    """
    if data.class_names == class_names:
        return data
    unnamed = data.class_names == tuple(str(i) for i in range(len(data.class_names)))
    if unnamed:  # integer labels that came without names: they index the training classes
        if data.y.size and data.y.max() >= len(class_names):
            raise DataError(
                f"{data.source}: label {data.y.max()} is out of range; the training data has "
                f"{len(class_names)} classes, so expected 0 to {len(class_names) - 1}."
            )
        return dataclasses.replace(data, class_names=class_names)
    renumber = np.array(
        [_training_class(name, class_names, data.source) for name in data.class_names],
        dtype=data.y.dtype,
    )
    return dataclasses.replace(data, y=renumber[data.y], class_names=class_names)


def _training_class(name: str, class_names: tuple[str, ...], source: str) -> int:
    """The index in `class_names` of a test set's class `name` (`relabel`).

    Raises:
        DataError: `name` matches no training class, or more than one.
    """
    if name in class_names:
        return class_names.index(name)
    loose = [i for i, known in enumerate(class_names) if _loose(known) == _loose(name)]
    if len(loose) == 1:
        return loose[0]
    if name.isascii() and name.isdigit() and int(name) < len(class_names):
        return int(name)
    raise DataError(
        f"{source}: class {name!r} is not one of the training data's {len(class_names)} "
        f"classes ({', '.join(class_names)}); expected a class's name (case and punctuation "
        f"aside) or its index, 0 to {len(class_names) - 1}."
    )


def _loose(name: str) -> str:
    """`name` without case, spaces and punctuation: "T-shirt/top" and "t-shirt_top" agree."""
    return "".join(c for c in name.casefold() if c.isalnum())
