"""The train/validation split, seeded and optionally stratified, as the seed does it."""

from __future__ import annotations

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
    `train_test_split(X, y, test_size=0.3, random_state=42)`.

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
    # scikit-learn takes a second or more to import: only a split pays for it.
    from sklearn.model_selection import train_test_split

    index = np.arange(len(data))
    try:
        train_index, val_index = train_test_split(
            index,
            test_size=val_fraction,
            random_state=seed,
            stratify=data.y if stratify else None,
        )
    except ValueError as error:
        raise DataError(
            f"{data.source}: cannot split {len(data)} examples by {what}={val_fraction}: {error}"
        ) from None
    return data.take(train_index), data.take(val_index)
