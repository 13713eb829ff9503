"""The one record that travels through convnet: uint8 NHWC pixels, integer labels, class names."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from convnet.errors import DataError

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class Dataset:
    """Images and labels.

    Attributes:
        x: uint8 array of shape (N, H, W, C).
        y: int64 array of shape (N,), values in [0, len(class_names)).
        class_names: one name per class index.
        source: where the data came from, for messages and the manifest.
    """

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if self.x.dtype != np.uint8 or self.x.ndim != 4 or 0 in self.x.shape[1:]:
            raise DataError(
                f"{self.source}: images must be uint8 of shape (N, H, W, C), H, W and C not 0. "
                f"Received: dtype={self.x.dtype}, shape={self.x.shape}."
            )
        if self.y.shape != (len(self.x),):
            raise DataError(
                f"{self.source}: {len(self.x)} images but labels of shape {self.y.shape}; "
                "expected one label per image."
            )
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= len(self.class_names)):
            raise DataError(
                f"{self.source}: labels must be in [0, {len(self.class_names) - 1}]. "
                f"Received: min={self.y.min()}, max={self.y.max()}."
            )

    def __len__(self) -> int:
        return len(self.x)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def take(self, index: np.ndarray | slice) -> Dataset:
        """Returns the examples at `index`, sharing class names and source."""
        return Dataset(self.x[index], self.y[index], self.class_names, self.source)

    def checksum(self) -> str:
        """SHA-256 of pixels and labels, for the manifest."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.x).data)
        digest.update(self.y.astype("<i8").tobytes())
        return digest.hexdigest()

    def background_is_light(self) -> bool:
        """Whether image borders are mostly light (dark items on white, unlike Fashion-MNIST)."""
        return border_is_light(self.x[:1000])


def border_is_light(images: np.ndarray) -> bool:
    """Whether the outermost rows and columns of (N, H, W[, C]) images are mostly light."""
    edges = [images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]]
    return bool(np.concatenate([edge.ravel() for edge in edges]).mean() > 127)


MAX_CLASSES = 10_000  # far beyond any MNIST-like task; a larger label is a corrupt file


def as_pixels(array: np.ndarray, name: str) -> np.ndarray:
    """`array` as uint8 pixels, if every value is an integer from 0 to 255 (of any numeric type).

    Raises:
        DataError: naming `name`, for any other value or type; a fraction is not rounded, since
            values such as 0.8 usually mean pixels scaled to [0, 1].
    """
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{name}: holds {array.dtype}; expected pixel values, integers 0-255.")
    if array.size and (
        not np.isfinite(array).all()
        or array.min() < 0
        or array.max() > 255
        or (array != np.round(array)).any()
    ):
        scaled = np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1
        hint = " (not scaled to [0, 1])" if scaled else ""
        raise DataError(f"{name}: holds values outside the integers 0-255; expected pixels{hint}.")
    return array.astype(np.uint8)


def numbered_class_names(labels: np.ndarray, source: str = "") -> tuple[str, ...]:
    """Class names "0", "1", ... for integer labels that come without names.

    Raises:
        DataError: a label of MAX_CLASSES or more (which would make that many classes).
    """
    count = int(labels.max()) + 1 if len(labels) else 0
    if count > MAX_CLASSES:
        raise DataError(
            f"{source}: label {count - 1} would make {count} classes; expected labels from 0 "
            f"to at most {MAX_CLASSES - 1}, or pass --class-names."
        )
    return tuple(str(i) for i in range(count))
