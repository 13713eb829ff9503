"""Callbacks convnet adds to Keras' own."""

from __future__ import annotations

import time

import keras


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` and `elapsed_seconds` (since training began) to each epoch's logs.

    Place it before `CSVLogger` so the history file records the times.
    """

    def on_train_begin(self, logs=None):
        self.elapsed = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        self.elapsed += seconds
        if logs is not None:
            logs["epoch_seconds"] = seconds
            logs["elapsed_seconds"] = self.elapsed
