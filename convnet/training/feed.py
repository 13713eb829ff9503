"""The batches `fit` trains on: one endless feed per fit, each epoch's order a function of
(seed, epoch) alone, so a resumed run sees exactly the batches an uninterrupted one would.

Keras makes a new iterator every epoch for arrays and finite datasets, and the first step of
about half the epochs then waited for it; with one endless feed and `steps_per_epoch` it keeps a
single iterator for the whole fit (docs/benchmarks.md, bench.step_time). TensorFlow gets a
tf.data pipeline; JAX and torch an `EpochBatches` over NumPy, so neither imports TensorFlow.

Streamed data (`convnet.data.streamed`) goes through the same orders: each batch's images are read
from their files when it is made (`read_batch`), and its labels made one-hot then, so that nothing
the size of the data is held. Streamed or in memory, a seed gives the same batches.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np

from convnet.data.dataset import Dataset


def one_hot(data: Dataset) -> np.ndarray:
    return keras.utils.to_categorical(data.y, data.num_classes)


def read_batch(
    data: Dataset, positions: np.ndarray, targets: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images, one-hot labels) of the examples at `positions` of `data`: streamed images
    are read now, and the labels taken from `targets` (all of them one-hot) or made one-hot."""
    if targets is None:
        labels = keras.utils.to_categorical(data.y[positions], data.num_classes)
    else:
        labels = targets[positions]
    return data.x[positions], labels


def epoch_steps(examples: int, batch_size: int) -> int:
    """Batches in one pass over `examples`, the last one partial."""
    return -(-examples // batch_size)


def batches(data: Dataset, batch_size: int, shuffle_seed: int | None = None, first_epoch: int = 0):
    """Endless (uint8 images, one-hot labels) batches, and the number that makes one pass.

    Each pass is one epoch, its last batch partial. With `shuffle_seed`, epoch e's order is a
    stateless shuffle keyed by (seed, e): the same in every iterator, so a run resumed at
    `first_epoch` sees the order an uninterrupted run gives that epoch (Keras' JAX trainer draws
    a batch from one iterator before training from another, and a reshuffling iterator would
    share its state between them).
    """
    steps = epoch_steps(len(data), batch_size)
    if keras.backend.backend() == "tensorflow":
        return _tf_batches(data, batch_size, shuffle_seed, first_epoch), steps
    return EpochBatches(data, batch_size, shuffle_seed, first_epoch), steps


def _tf_batches(data: Dataset, batch_size: int, shuffle_seed: int | None, first_epoch: int):
    """The tf.data feed. Its autotuner is off: destroying an iterator waits for the autotuner's
    model thread, which held up the end of `fit` (docs/benchmarks.md, bench.step_time)."""
    import tensorflow as tf

    # int32 while it fits: 30 MB less per 7 million examples, and the same shuffles. The
    # positions are made for each epoch, not held for the whole fit beside the epoch's order.
    dtype = tf.int32 if len(data) < 2**31 else tf.int64

    def epoch_batches(epoch):
        order = tf.range(len(data), dtype=dtype)
        if shuffle_seed is not None:
            seed = tf.stack([tf.constant(shuffle_seed, tf.int64), epoch])
            order = tf.random.experimental.stateless_shuffle(order, seed=seed)
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    batched = tf.data.Dataset.counter(first_epoch).flat_map(epoch_batches)
    if data.feed == "streamed":
        pairs = batched.map(_tf_reader(tf, data))
    else:
        x, y = tf.constant(data.x), tf.constant(one_hot(data))
        pairs = batched.map(lambda i: (tf.gather(x, i), tf.gather(y, i)))
    options = tf.data.Options()
    options.autotune.enabled = False
    return pairs.prefetch(2).with_options(options)


def _tf_reader(tf, data: Dataset):
    """The tf.data map from a batch of positions to its (images, one-hot labels), read by
    `read_batch` in the pipeline's own thread while the model trains on the batch before.

    It holds `data` weakly, as the trainer's session holds it while `fit` runs: TensorFlow keeps
    a `numpy_function`'s Python callable after the pipeline is gone, and held strongly, the
    training set's index would stay through the test pass (`trainer.Session.test_set`)."""
    image_shape, classes = data.image_shape, data.num_classes
    held = weakref.ref(data)

    def read(positions):
        images, labels = tf.numpy_function(
            lambda at: read_batch(held(), at), [positions], (tf.uint8, tf.float64), stateful=False
        )
        images.set_shape((None, *image_shape))
        labels.set_shape((None, classes))
        return images, labels

    return read


class EpochBatches(keras.utils.PyDataset):
    """Endless (uint8 images, one-hot labels) batches read by index: batch i is batch
    i % steps of epoch `first_epoch + i // steps`, in that epoch's order.

    Each batch is a pure function of (seed, epoch, step), with no state for Keras' epoch hooks
    to move: Keras calls them once more per `fit` than there are epochs (it resets the feed
    before the first), and builds the model from a batch of an iterator it then throws away.
    """

    def __init__(self, data: Dataset, batch_size: int, shuffle_seed: int | None, first_epoch: int):
        super().__init__()  # one worker, no enqueuer: batches are made on the calling thread
        self.data = data
        # In memory, every label one-hot at once; streamed, a batch's at a time (345 classes of
        # 50 million doodles would take 138 GB one-hot).
        self.targets = None if data.feed == "streamed" else one_hot(data)
        self.batch_size, self.shuffle_seed, self.first_epoch = batch_size, shuffle_seed, first_epoch
        self.steps = epoch_steps(len(data), batch_size)
        self._epoch, self._order = None, None  # the epoch under way and its order

    @property
    def num_batches(self) -> None:
        return None  # endless: `fit` counts `steps_per_epoch`

    def order(self, epoch: int) -> np.ndarray:
        """The examples in epoch `epoch`'s order."""
        if epoch != self._epoch:
            self._epoch, self._order = epoch, np.arange(len(self.data))
            if self.shuffle_seed is not None:
                rng = np.random.default_rng([self.shuffle_seed, epoch])
                self._order = rng.permutation(len(self.data))
        return self._order

    def __getitem__(self, index: int):
        epoch, step = divmod(index, self.steps)
        order = self.order(self.first_epoch + epoch)
        picked = order[step * self.batch_size : (step + 1) * self.batch_size]
        return read_batch(self.data, picked, self.targets)
