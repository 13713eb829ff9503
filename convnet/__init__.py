"""convnet: train, evaluate and serve Keras convolutional networks for image classification."""

import os

# Keras reads its backend once, at first import: choose TensorFlow unless the user chose.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from convnet.api import evaluate, fetch, predict, summary, train  # noqa: E402
from convnet.data import load_source as load_dataset  # noqa: E402
from convnet.models.registry import create_model, list_presets  # noqa: E402

__all__ = [
    "train",
    "evaluate",
    "predict",
    "summary",
    "fetch",
    "load_dataset",
    "list_presets",
    "create_model",
]
