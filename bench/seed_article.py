"""The seed article's pipeline as written, the benchmarks' reference. Do not tune it.

Usage: python -m bench.seed_article TRAIN_CSV TEST_CSV [SEED] [EPOCHS]
Prints one JSON line: timings (s), final test loss and accuracy, per-epoch validation accuracy.
Only the timing, the JSON output, `keras.Input` (Keras 3's spelling of `input_shape=`) and the
epoch count (15 unless given, for the benchmark's quick mode) are added.
"""

import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from keras import layers, models  # noqa: E402
from keras.utils import to_categorical  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402


def main(train_csv: str, test_csv: str, seed: int = 0, epochs: int = 15) -> dict:
    keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    fashion_mnist_train = pd.read_csv(train_csv)
    fashion_mnist_test = pd.read_csv(test_csv)
    load_seconds = time.perf_counter() - started

    model = models.Sequential()
    model.add(keras.Input(shape=(28, 28, 1)))
    model.add(layers.Conv2D(32, (3, 3), activation="relu"))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.Flatten())
    model.add(layers.Dense(64, activation="relu"))
    model.add(layers.Dense(10, activation="softmax"))
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])

    X = np.array(fashion_mnist_train.iloc[:, 1:])
    y = to_categorical(np.array(fashion_mnist_train.iloc[:, 0]))
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.3, random_state=42)
    X_test = np.array(fashion_mnist_test.iloc[:, 1:])
    y_test = to_categorical(np.array(fashion_mnist_test.iloc[:, 0]))
    X_train = X_train.reshape(X_train.shape[0], 28, 28, 1)
    X_test = X_test.reshape(X_test.shape[0], 28, 28, 1)
    X_val = X_val.reshape(X_val.shape[0], 28, 28, 1)
    X_train = X_train.astype("float32") / 255
    X_val = X_val.astype("float32") / 255
    X_test = X_test.astype("float32") / 255

    fit_started = time.perf_counter()
    history = model.fit(
        X_train, y_train, validation_data=(X_val, y_val), epochs=epochs, batch_size=512, verbose=0
    )
    fit_seconds = time.perf_counter() - fit_started
    test_loss, test_acc = model.evaluate(X_test, y_test, verbose=0)
    wall_seconds = time.perf_counter() - started
    return {
        "load_seconds": load_seconds,
        "fit_seconds": fit_seconds,
        "wall_seconds": wall_seconds,
        "epochs": epochs,
        "test_loss": float(test_loss),
        "test_accuracy": float(test_acc),
        "val_accuracy": [float(a) for a in history.history["val_accuracy"]],
    }


if __name__ == "__main__":
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 15
    print(json.dumps(main(sys.argv[1], sys.argv[2], seed, epochs)))
