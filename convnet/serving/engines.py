"""What computes the probabilities: the Keras model or its ONNX export, behind one micro-batcher.

Both engines take uint8 pixels of shape (N, H, W, C) and return float32 probabilities (N, classes).
`MicroBatcher` gathers the requests that arrive while the model is busy into one batch: one model
call for 16 waiting single-image requests costs far less than 16 calls.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from convnet.errors import ConvnetError
from convnet.evaluation import TestTimeAugmentation
from convnet.runs import MODEL_FILE, Run

ENGINES = ("keras", "onnx")


class Engine:
    """A loaded model: `predict(x)` maps uint8 pixels (N, H, W, C) to probabilities (N, K).

    Attributes:
        name: "keras" or "onnx".
        input_shape: the model's (H, W, C).
        num_classes: the number of outputs.
        class_names: the name of each output, in order; their indexes ("0", "1", ...) when
            nothing records names.
    """

    name = "engine"

    def __init__(
        self,
        forward: Callable[[np.ndarray], np.ndarray],
        input_shape,
        tta: TestTimeAugmentation | None = None,
        class_names: tuple[str, ...] | None = None,
    ):
        self._forward = forward
        self.input_shape = tuple(int(d) for d in input_shape)
        self.tta = tta or TestTimeAugmentation()
        self.num_classes = int(self._forward(np.zeros((1, *self.input_shape), np.uint8)).shape[1])
        self.class_names = tuple(class_names or (str(i) for i in range(self.num_classes)))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for a batch, averaged over the views the run's TTA settings ask for."""
        return self.tta.average(self._forward, np.asarray(x, dtype=np.uint8))


class KerasEngine(Engine):
    """The run's `model.keras`, called through one traced graph (no per-call `predict` setup);
    `class_names` are the run's."""

    name = "keras"

    def __init__(
        self,
        model,
        tta: TestTimeAugmentation | None = None,
        class_names: tuple[str, ...] | None = None,
    ):
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.uint8)
            graph = tf.function(lambda x: model(x, training=False), input_signature=[spec])

            def forward(x):
                return graph(x).numpy()
        else:

            def forward(x):
                return np.asarray(model.predict_on_batch(x))

        super().__init__(forward, model.input_shape[1:], tta, class_names)


class OnnxEngine(Engine):
    """An ONNX export of the model, run by ONNX Runtime on one thread.

    Its class names are those the file records (`convnet.exporter.CLASS_NAMES_KEY`), so the
    file alone names its answers; `class_names` stand in for them in a file exported before
    convnet recorded them.

    One intra-op thread: the server's other core parses HTTP while the model runs, and on two
    shared cores a second ONNX thread made single-image calls 2.5x slower (0.12 vs 0.30 ms).
    """

    name = "onnx"

    def __init__(
        self,
        path: str | Path,
        tta: TestTimeAugmentation | None = None,
        threads: int = 1,
        class_names: tuple[str, ...] | None = None,
    ):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0]

        def forward(x):
            return session.run(None, {feed.name: x})[0]

        recorded = _recorded_names(path, session.get_modelmeta().custom_metadata_map)
        super().__init__(forward, feed.shape[1:], tta, recorded or class_names)
        if recorded is not None and len(recorded) != self.num_classes:
            raise ConvnetError(
                f"{path}: its metadata names {len(recorded)} classes, but the model gives "
                f"{self.num_classes} outputs; export it again (convnet export)."
            )


def _recorded_names(path: str | Path, metadata: dict[str, str]) -> tuple[str, ...] | None:
    """The class names an ONNX export's metadata records; None for one made before convnet
    recorded them.

    Raises:
        ConvnetError: the record is not a JSON list of names.
    """
    from convnet.exporter import CLASS_NAMES_KEY  # as `_engine`: the exporter imports Keras

    if CLASS_NAMES_KEY not in metadata:
        return None
    try:
        names = json.loads(metadata[CLASS_NAMES_KEY])
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConvnetError(
            f"{path}: its metadata's {CLASS_NAMES_KEY} is not a JSON list of names; export "
            "it again (convnet export)."
        )
    return tuple(names)


def load_engine(run: Run, engine: str = "keras") -> Engine:
    """Loads a run's model into an engine.

    The ONNX engine uses `RUN/model.onnx` when it is newer than `model.keras` (see
    `convnet export`); otherwise it exports one into a temporary folder, leaving the run as it was.

    Raises:
        ConvnetError: an unknown engine name.
        RunError: the run has no model, or its record names other classes than the model has
            outputs (every answer would be named wrongly).
    """
    loaded = _engine(run, engine)
    run.check_outputs(loaded.num_classes)
    return loaded


def _engine(run: Run, engine: str) -> Engine:
    tta = TestTimeAugmentation.of(run.config().recipe())
    if engine == "keras":
        from convnet.models.factory import load_model  # Keras, which the ONNX engine needs not

        return KerasEngine(load_model(run.model_file), tta, run.class_names())
    if engine != "onnx":
        raise ConvnetError(f"Unknown engine {engine!r}; expected one of {list(ENGINES)}.")
    from convnet.exporter import averaged_views, export_model

    onnx_file = run.path / "model.onnx"
    keras_file = run.path / MODEL_FILE
    if onnx_file.is_file() and onnx_file.stat().st_mtime >= keras_file.stat().st_mtime:
        # An export made with the run's views averages them in its graph; one made with
        # --no-tta, or by an older convnet, is one view, which the engine then averages.
        views = tta if averaged_views(onnx_file) != tta.count else None
        return OnnxEngine(onnx_file, views, class_names=run.class_names())
    with tempfile.TemporaryDirectory(prefix="convnet-onnx-") as tmp:
        return OnnxEngine(export_model(run.path, "onnx", Path(tmp) / "model.onnx"))


class MicroBatcher:
    """Gathers concurrent predictions into batches computed on one model thread.

    While the model computes one batch, the event loop keeps reading requests; everything that
    queued up meanwhile (up to `max_batch` images) becomes the next batch. A lone request waits
    for nothing: there is no timer, so batching only happens under load.

    Args:
        predict: the engine's `predict`.
        max_batch: stop adding requests to a batch once it holds this many images. A single
            larger request is never split. Defaults to 64.
        on_batch: called with each batch's number of images before the model computes it (the
            server's batch-size histogram). Defaults to None.
    """

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        max_batch: int = 64,
        on_batch: Callable[[int], object] | None = None,
    ):
        self._predict = predict
        self.max_batch = max_batch
        self._on_batch = on_batch
        self._pending: list[tuple[np.ndarray, asyncio.Future]] = []
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="convnet-model")

    async def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for `x`, computed together with whatever else is waiting."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((x, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, size = [], 0
            while self._pending and (
                not batch or size + len(self._pending[0][0]) <= self.max_batch
            ):
                batch.append(self._pending.pop(0))
                size += len(batch[-1][0])
            inputs = [x for x, _ in batch]
            if self._on_batch is not None:
                self._on_batch(size)
            try:
                joined = np.concatenate(inputs) if len(inputs) > 1 else inputs[0]
                probabilities = await loop.run_in_executor(self._executor, self._predict, joined)
            except Exception as error:  # every waiting request gets the failure, not a hang
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            start = 0
            for x, future in batch:
                if not future.done():
                    future.set_result(probabilities[start : start + len(x)])
                start += len(x)

    def close(self) -> None:
        """Stops the model thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)
