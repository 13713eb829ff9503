"""Training step time of a preset's network: Keras' BatchNormalization against the fused one,
float32 against bfloat16 compute, side by side in one process.

    python -m bench.step_time --preset best --batch-size 256

Each variant trains `--steps` steps on random uint8 images after a warm-up, twice in turn
(ABCD ABCD), and reports the median milliseconds per step of its faster round. The ratios are
the result.
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import keras
import numpy as np

from convnet.models import builders
from convnet.models.factory import create_model

VARIANTS = [
    ("keras", "float32"),
    ("fused", "float32"),
    ("keras", "mixed_bfloat16"),
    ("fused", "mixed_bfloat16"),
]


class StepTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def build(preset: str, batch_norm: str, precision: str) -> keras.Model:
    layer = builders.FusedBatchNormalization
    if batch_norm == "keras":
        layer = keras.layers.BatchNormalization
    with mock.patch.object(builders, "FusedBatchNormalization", layer):
        model = create_model(preset, precision=precision)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy")
    return model


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="best")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.batch_size * 4, 28, 28, 1), dtype=np.uint8)
    y = keras.utils.to_categorical(rng.integers(0, 10, len(x)), 10)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size).repeat()
    models = {v: build(args.preset, *v) for v in VARIANTS}
    medians: dict[tuple, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(2):
        for variant, model in models.items():
            timer = StepTimes()
            fit = {"steps_per_epoch": args.steps, "epochs": 1, "verbose": 0, "shuffle": False}
            model.fit(data, **fit | {"steps_per_epoch": 5})  # warm-up (and tracing)
            model.fit(data, **fit, callbacks=[timer])
            medians[variant].append(statistics.median(timer.times) * 1000)
    base = min(medians[VARIANTS[0]])
    results = {
        f"{bn} batch norm, {precision}": {
            "ms_per_step": round(min(ms), 1),
            "speedup": round(base / min(ms), 2),
        }
        for (bn, precision), ms in medians.items()
    }
    print(f"{args.preset}, batch {args.batch_size}:")
    for name, r in results.items():
        print(f"  {name:38s} {r['ms_per_step']:7.1f} ms/step  {r['speedup']:.2f}x")
    return results


if __name__ == "__main__":
    main()
