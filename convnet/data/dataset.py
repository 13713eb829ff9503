"""The one record that travels through convnet: uint8 NHWC pixels, integer labels, class names."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass

import numpy as np

from convnet.data.streamed import StreamedImages
from convnet.errors import DataError, setting

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


CHECKSUM_CHUNK_BYTES = 16 * 2**20  # of images or labels hashed at a time


@dataclass(frozen=True)
class Dataset:
    """Images and labels.

    Attributes:
        x: uint8 array of shape (N, H, W, C), or a `StreamedImages` view of files that are read
            a batch at a time (data bigger than memory).
        y: int64 array of shape (N,), values in [0, len(class_names)); int16 (int32 past
            32,767 classes) when `x` is streamed, since then labels are what grows with the data.
        class_names: one name per class index.
        source: where the data came from, for messages and the manifest.
        pixel_range: "LOW,HIGH" that the source's values spanned before they were scaled to
            0-255 (`convnet.data.pixels`).
    """

    x: np.ndarray | StreamedImages
    y: np.ndarray
    class_names: tuple[str, ...]
    source: str = ""
    pixel_range: str = "0,255"

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
        compact = np.int16 if len(self.class_names) <= 2**15 else np.int32
        if isinstance(self.x, StreamedImages) and self.y.dtype.itemsize > compact().itemsize:
            object.__setattr__(self, "y", self.y.astype(compact))  # labels checked in range above

    def __len__(self) -> int:
        return len(self.x)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def feed(self) -> str:
        """How training reads the images: "streamed" from their files, or from "memory"."""
        return "streamed" if isinstance(self.x, StreamedImages) else "memory"

    def take(self, index: np.ndarray | slice) -> Dataset:
        """Returns the examples at `index`, sharing class names and source. Streamed images
        stay in their files: the result is a view of other rows of them."""
        x = self.x.select(index) if isinstance(self.x, StreamedImages) else self.x[index]
        return dataclasses.replace(self, x=x, y=self.y[index])

    def checksum(self) -> str:
        """SHA-256 of pixels and labels, for the manifest. Read a chunk at a time, so streamed
        images are never held whole, and they hash as the same images in memory do."""
        digest = hashlib.sha256()
        step = max(1, CHECKSUM_CHUNK_BYTES // max(math.prod(self.image_shape), 1))
        for start in range(0, len(self), step):
            digest.update(np.ascontiguousarray(self.x[start : start + step]).data)
        for start in range(0, len(self), CHECKSUM_CHUNK_BYTES // 8):
            digest.update(self.y[start : start + CHECKSUM_CHUNK_BYTES // 8].astype("<i8").data)
        return digest.hexdigest()

    def background_is_light(self) -> bool:
        """Whether image borders are mostly light (dark items on white, unlike Fashion-MNIST)."""
        return border_is_light(self.x[:1000])


@dataclass(frozen=True)
class DataRecord:
    """A Dataset as a run's manifest records it, and as a resumed run checks it again.

    Attributes:
        source: where the data came from.
        examples: how many.
        sha256: `Dataset.checksum`.
    """

    source: str
    examples: int
    sha256: str

    @classmethod
    def of(cls, data: Dataset) -> DataRecord:
        return cls(data.source, len(data), data.checksum())


def border_is_light(images: np.ndarray) -> bool:
    """Whether the outermost rows and columns of (N, H, W[, C]) images are mostly light."""
    edges = [images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]]
    return bool(np.concatenate([edge.ravel() for edge in edges]).mean() > 127)


MAX_CLASSES = 10_000  # far beyond any MNIST-like task; a larger label is a corrupt file


def numbered_class_names(labels: np.ndarray, source: str = "") -> tuple[str, ...]:
    """Class names "0", "1", ... for integer labels that come without names.

    Only the greatest label counts, so `labels` may be just the greatest of each part.

    Raises:
        DataError: a label of MAX_CLASSES or more (which would make that many classes).
    """
    count = int(labels.max()) + 1 if len(labels) else 0
    if count > MAX_CLASSES:
        raise DataError(
            f"{source}: label {count - 1} would make {count} classes; expected labels from 0 "
            f"to at most {MAX_CLASSES - 1}, or pass {setting('class_names')} to name them."
        )
    return tuple(str(i) for i in range(count))
