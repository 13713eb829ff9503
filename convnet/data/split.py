"""The train/validation split, seeded and optionally stratified, as the seed does it."""

from __future__ import annotations

import math

import numpy as np

from convnet.data.dataset import Dataset
from convnet.errors import DataError


def split(
    data: Dataset,
    val_fraction: float = 0.3,
    seed: int = 42,
    stratify: bool = False,
    what: str = "val_split",
) -> tuple[Dataset, Dataset | None]:
    """Splits off a validation set.

    With the defaults this picks the same rows as the seed's
    `train_test_split(X, y, test_size=0.3, random_state=42)`, and stratified the same rows as
    `train_test_split(..., stratify=y)`.

    Args:
        data: the training data.
        val_fraction: share held out for validation, in [0, 1). 0 means no validation set.
        seed: the shuffle's random state.
        stratify: keep class proportions equal in both parts.
        what: the setting `val_fraction` comes from, for messages.

    Returns:
        (train, validation); validation is None when `val_fraction` is 0.

    Raises:
        DataError: the fraction is out of range or leaves a part empty.
    """
    if not 0 <= val_fraction < 1:
        raise DataError(f"{what} must be in [0, 1). Received: {what}={val_fraction}.")
    if val_fraction == 0:
        return data, None
    cannot = f"{data.source}: cannot split {len(data)} examples by {what}={val_fraction}"
    held = math.ceil(val_fraction * len(data))  # scikit-learn's count for a float test_size
    if held >= len(data):
        raise DataError(f"{cannot}: it leaves no example to train on.")
    if stratify:
        train_index, val_index = stratified_indexes(data.y, held, seed, cannot)
    else:
        order = np.random.RandomState(seed).permutation(len(data))
        train_index, val_index = order[held:], order[:held]
    return data.take(train_index), data.take(val_index)


def stratified_indexes(
    labels: np.ndarray, held: int, seed: int, cannot: str
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held) indexes of a stratified split holding out `held` of `labels`: the rows
    scikit-learn's `StratifiedShuffleSplit` picks for the same seed, drawn from the same random
    stream in the same order. scikit-learn gathers each part in a Python list (about 80 bytes
    an example while it runs: 800 MB for 10 million doodles); here they stay arrays."""
    from sklearn.utils.extmath import _approximate_mode  # how many of each class, ties drawn

    # The labels are class indexes 0..K-1: counting them is scikit-learn's np.unique, and
    # their stable sort the sort of its inverse, without the copies of the labels it makes.
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    kept_count = len(labels) - held
    if counts.min() < 2:
        lonely = np.flatnonzero(counts < 2).size
        raise DataError(f"{cannot}: {lonely} class(es) have a single example; each needs 2.")
    if min(kept_count, held) < len(counts):
        raise DataError(
            f"{cannot}: each part needs an example of each of the {len(counts)} classes; "
            f"one would have {min(kept_count, held)}."
        )
    by_class = np.split(np.argsort(labels, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    kept_per_class = _approximate_mode(counts, kept_count, rng)
    held_per_class = _approximate_mode(counts - kept_per_class, held, rng)
    kept, held_parts = [], []
    for members, n_kept, n_held in zip(by_class, kept_per_class, held_per_class, strict=True):
        shuffled = members.take(rng.permutation(len(members)), mode="clip")
        kept.append(shuffled[:n_kept])
        held_parts.append(shuffled[n_kept : n_kept + n_held])
    kept_index = rng.permutation(np.concatenate(kept))
    return kept_index, rng.permutation(np.concatenate(held_parts))
