"""The run in your hand: a trained run folder and its model, for Python and notebooks.

`convnet.train` returns one and `convnet.load` opens one on disk. It reads the folder through
`convnet.runs.Run` (the record on disk, no framework), and imports the framework only when
something needs the model. In Jupyter it shows its report inline.
"""

from __future__ import annotations

import functools
import html
from pathlib import Path
from typing import TYPE_CHECKING

from convnet import framework, runs
from convnet.config import TrainConfig
from convnet.errors import ConfigError
from convnet.reports.html import HtmlPage

if TYPE_CHECKING:  # `import convnet` stays free of NumPy until data is handled
    import numpy as np


class Run:
    """A run folder with its model, as `convnet.train` leaves it.

    Attributes:
        path: the run folder.
        is_chief: whether this process wrote the folder (process 0 of a distributed run; the
            others hold a scratch folder).

    Example:
        >>> run = convnet.train(preset="fast", train=(x_train, y_train), test=df_test)
        >>> run.test_accuracy, run.class_names
        >>> run.predict(x_new).argmax(axis=1)      # N x K probabilities, as Keras' predict
        >>> run.history[["accuracy", "val_accuracy"]].plot()
        >>> run                                      # in Jupyter: the report
        >>> convnet.load("runs/fast-20261206-101500").evaluate(x_test, y_test)
    """

    def __init__(self, path: str | Path, is_chief: bool = True):
        self._folder = runs.Run(path)
        self.path = self._folder.path
        self.is_chief = is_chief

    def __repr__(self) -> str:
        accuracy = self.metrics.get("test_accuracy")
        score = f", test accuracy {accuracy:.4f}" if accuracy is not None else ""
        return f"Run('{self.path}': {self.config.preset}, {self._folder.status()}{score})"

    @property
    def run(self) -> Path:
        """The run folder (as `path`)."""
        return self.path

    @property
    def config(self) -> TrainConfig:
        """The settings the run was trained with."""
        return self._folder.config()

    @property
    def metrics(self) -> dict:
        """metrics.json: test loss and accuracy, per-class scores, timings."""
        return self._folder.read_json("metrics.json")

    @property
    def manifest(self) -> dict:
        """manifest.json: status, data checksums, versions, machine, command."""
        return self._folder.read_json("manifest.json")

    @property
    def test_accuracy(self) -> float | None:
        return self.metrics.get("test_accuracy")

    @property
    def test_loss(self) -> float | None:
        return self.metrics.get("test_loss")

    @property
    def wall_seconds(self) -> float | None:
        return self.metrics.get("wall_seconds")

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """The model's classes, by the index of its outputs."""
        return self._folder.class_names()

    @property
    def history(self):
        """history.csv as a pandas DataFrame: one row per epoch, loss, accuracy, val_*, times;
        `epoch` counts from 1, as Keras' progress and the report's curves do."""
        import pandas as pd

        history = self.path / "history.csv"
        if not history.is_file():
            return pd.DataFrame()
        frame = pd.read_csv(history, na_values=["NA"])
        frame["epoch"] += 1  # CSVLogger's epochs count from 0
        return frame.dropna(axis="columns", how="all")  # val_* without a validation split

    @functools.cached_property
    def model(self):
        """The Keras model (model.keras), loaded once; it takes raw uint8 pixels."""
        self._folder.require_model()
        framework.load_for_run(self.config.backend)
        from convnet.models.factory import load_model

        model = load_model(self._folder.model_file)
        self._folder.check_outputs(model.output_shape[-1])
        return model

    def predict(self, x, batch_size: int = 1024, tta: bool = True) -> np.ndarray:
        """Class probabilities of images, read as the run reads its inputs.

        Args:
            x: an array of images, (N, H, W), (N, H, W, C), (N, H*W) or one image, in the
                training data's pixel range; a DataFrame of pixel columns; PIL images; or paths
                of image, .npy or CSV files (`convnet.inputs.python_inputs`).
            batch_size: images per model call. Defaults to 1024.
            tta: average the run's test-time views (`flip`, `shift_tta`), as its test metrics
                did. Defaults to True.

        Returns:
            float32 probabilities of shape (N, number of classes), as `keras.Model.predict`;
            `class_names` names the columns.

        Raises:
            DataError: naming `x`, for anything that is not images of the model's shape.
            ConfigError: a `batch_size` below 1.
        """
        from convnet.evaluation import predict_proba

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1. Received: {batch_size!r}.")
        x = self._inputs(x, "x")
        return predict_proba(self.model, x, batch_size, self._views(tta))

    def evaluate(self, x=None, y=None, tta: bool = True) -> dict:
        """Test loss and accuracy of the model, on the run's own test set or on (x, y).

        Args:
            x: images in any layout `convnet.data.memory` takes, with `y` their labels (integer
                indexes of `class_names`, or the names); or a DataFrame in the Kaggle layout,
                `y` None; or None for the run's own test set.
            y: the labels of `x`.
            tta: average the run's test-time views. Defaults to True.

        Returns:
            {"test_loss", "test_accuracy", "test_balanced_accuracy", "test_examples",
            "test_data"}.

        Raises:
            DataError: data that is not images of the model's shape, or labels the run does
                not know.
        """
        from convnet.data import matched_to_training
        from convnet.data.memory import read_memory
        from convnet.evaluation import evaluate

        if x is None:
            if y is not None:
                raise ConfigError("evaluate: y was given without x; pass both, or neither.")
            test = self._folder.load_test()
        else:
            reading = self._folder.input_reading()
            value = x if y is None else (x, y)
            test = read_memory(value, "test", pixel_range=reading.pixel_range)
            shape = reading.image_shape or self.model.input_shape[1:]
            test = matched_to_training(test, shape, self.class_names or test.class_names)
        return evaluate(self.model, test, tta=self._views(tta))

    def report(self) -> HtmlPage:
        """The run's report.html (written at the end of training; written now if missing),
        which a notebook shows inline."""
        page = self.path / "report.html"
        if not page.is_file():
            from convnet.reports.report import write_report

            write_report(self.path, self.model)
        return HtmlPage(page)

    def _repr_html_(self) -> str:
        if (self.path / "report.html").is_file():
            return self.report()._repr_html_()
        return f"<pre>{html.escape(repr(self))}</pre>"

    def _inputs(self, x, name: str) -> np.ndarray:
        from convnet.inputs import python_inputs

        reading = self._folder.input_reading()
        shape = reading.image_shape or self.model.input_shape[1:]
        return python_inputs(x, shape, name=name, **reading.options())

    def _views(self, tta: bool):
        from convnet.evaluation import TestTimeAugmentation

        return TestTimeAugmentation.of(self.config.recipe(), enabled=tta)


def load(path: str | Path) -> Run:
    """The run in folder `path`, as `convnet.train` returned it.

    Raises:
        RunError: `path` is not a run folder.
    """
    return Run(path)
