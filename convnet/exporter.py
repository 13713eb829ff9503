"""Exporting a run's model to ONNX, a TensorFlow SavedModel or LiteRT, taking the same raw uint8
pixels and scoring like the run.

All go through Keras' own `Model.export` (ONNX via tf2onnx, LiteRT via TensorFlow's converter),
so the exported graph is the trained model, `Rescaling` included: a caller feeds (N, H, W, C)
uint8 pixels and gets softmax probabilities. A run with test-time augmentation exports a graph
that averages the same views (`convnet.evaluation.TestTimeAugmentation`), so the export
reproduces the run's metrics.json; `tta=False` exports one view.

Every export names its classes, from the run's records: an ONNX file in its `metadata_props`
(`CLASS_NAMES_KEY`, with the pixel range and the views it averages, so `serve --engine onnx` needs
no run folder for them and does not average again); a SavedModel in its `serving_default`
signature, which returns the most likely class's name beside the probabilities; a LiteRT file in
`labels.txt` beside it. A model card, `MODEL_CARD.md` (`convnet.model_card`), goes beside the file,
or inside the SavedModel's folder. Where an export goes, and what it may replace there:
`convnet.export_files`.
"""

from __future__ import annotations

import itertools
import json
import shutil
import warnings
from pathlib import Path

import numpy as np

from convnet.data.settings import parse_range
from convnet.errors import ExportError, setting
from convnet.evaluation import TestTimeAugmentation
from convnet.export_files import (
    FORMATS,
    check_beside,
    check_quantize,
    destination,
    labels_text,
    staging_folder,
    swap_in,
)
from convnet.model_card import (
    CARD_FILE,
    LABELS_FILE,
    Export,
    model_card,
)
from convnet.models.factory import load_model
from convnet.runs import Run

# LiteRT's post-training quantizations: none, float16 weights, int8 weights with float
# activations ("dynamic range"), and int8 weights and activations calibrated on images ("int8").
QUANTIZE = ("none", "float16", "dynamic", "int8")
# ONNX metadata keys: how many test-time views the graph averages (the key older exports
# carry, so convnet versions from before the others still read it), the class names by output
# index (a JSON list), and the pixel range the run's data spanned (JSON [low, high]; the graph
# takes them scaled to uint8 0-255).
TTA_VIEWS_KEY = "convnet_tta_views"
CLASS_NAMES_KEY = "class_names"
PIXEL_RANGE_KEY = "pixel_range"
ONNX_OUTPUT = "probabilities"
# Validation images that calibrate int8 activations: TensorFlow's guide suggests 100 to 500.
CALIBRATION_IMAGES = 500


def export_model(
    run: str | Path,
    format: str = "onnx",
    out: str | Path | None = None,
    quantize: str = "none",
    tta: bool = True,
) -> Path:
    """Writes a run's model as ONNX, a TensorFlow SavedModel or a LiteRT flatbuffer, with its
    class names (see the module's docstring) and a model card, `MODEL_CARD.md`.

    Args:
        run: the run folder.
        format: "onnx" (one `.onnx` file), "savedmodel" (a folder) or "litert" (one `.tflite`
            file). Defaults to "onnx".
        out: where to write it. Defaults to `RUN/model.onnx`, `RUN/saved_model` or
            `RUN/model.tflite`. A file format given an existing folder goes inside it; anything
            else already there is replaced only if it is an earlier export of the same format.
        quantize: for LiteRT, one of `QUANTIZE`: "none" (float32, the default), "float16"
            weights, "dynamic" (int8 weights), or "int8" (weights and activations, calibrated on
            the run's validation images; input stays uint8 pixels, output float32).
        tta: average the run's test-time views inside the graph, as the run scores its test
            set. Defaults to True; False exports one view.

    Returns:
        The path written.

    Raises:
        ExportError: an unknown format or quantization, a quantization for a format other than
            LiteRT, int8 for a run without validation data, a destination that is not new or an
            earlier export, a MODEL_CARD.md or labels.txt beside it that describes another
            model, or the exporter failed.
        RunError: the run folder has no model.
    """
    if format not in FORMATS:
        raise ExportError(f"Unknown export format {format!r}; expected one of {sorted(FORMATS)}.")
    if quantize not in QUANTIZE:
        raise ExportError(f"Unknown quantization {quantize!r}; expected one of {list(QUANTIZE)}.")
    check_quantize(format, quantize)
    run = Run(run)
    out = destination(Path(out) if out else run.path / FORMATS[format], format)
    calibration = _calibration_images(run) if quantize == "int8" else None
    views = TestTimeAugmentation.of(run.config().recipe(), enabled=tta)
    trained = load_model(run.model_file)
    run.check_outputs(trained.output_shape[-1])
    record = _record(run, trained, format, out, views.count, quantize)
    check_beside(run, out, record)
    model = _in_inference_mode(trained, views)
    # Keras refuses to export a model that has never been called; one tiny batch builds it.
    model.predict(np.zeros((1, *model.input_shape[1:]), np.uint8), verbose=0)
    staging = staging_folder(out)
    # Keras names a LiteRT file by its suffix; the others keep the destination's name.
    target = staging / (FORMATS[format] if format == "litert" else out.name)
    try:
        with warnings.catch_warnings():
            # Keras' tf2onnx shim probes `np.object`, which NumPy answers with a FutureWarning.
            warnings.filterwarnings("ignore", "In the future `np.object`", FutureWarning)
            _write(model, target, format, quantize, calibration, record.class_names)
        beside = _label(run, target, out, record)
        swap_in(target, out, staging / "previous", beside)
    except (ValueError, TypeError, RuntimeError, ImportError) as error:
        raise ExportError(f"{run.path}: {format} export failed ({error}).") from None
    except OSError as error:
        raise ExportError(f"{out}: cannot write there ({error.strerror}).") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _record(run: Run, model, format: str, out: Path, views: int, quantize: str) -> Export:
    """What the labels and the model card say of this export of `run`'s `model`."""
    count = model.output_shape[-1]
    low, high = parse_range(run.input_reading().pixel_range)
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    return Export(
        format=format,
        file="." if format == "savedmodel" else out.name,
        input_shape=tuple(model.input_shape[1:]),
        # A run older than the record of its names: the indexes, as `serve` names them.
        class_names=run.class_names() or tuple(str(i) for i in range(count)),
        pixel_range=tuple(int(v) if v.is_integer() else v for v in (low, high)),
        parameters=model.count_params(),
        layers=tuple(_layer_name(layer) for layer in layers),
        views=views,
        run_views=TestTimeAugmentation.of(run.config().recipe()).count,
        quantize=quantize,
    )


def _layer_name(layer) -> str:
    """A layer's kind and width, for the card: "Conv2D(32)", "Dense(10)", "MaxPooling2D"."""
    width = getattr(layer, "filters", None) or getattr(layer, "units", None)
    return f"{type(layer).__name__}({width})" if width else type(layer).__name__


def _write(model, target: Path, format: str, quantize: str, calibration, names) -> None:
    if format == "onnx":
        model.export(str(target), format="onnx", verbose=False)
    elif format == "savedmodel":
        _write_savedmodel(model, target, names)
    else:
        model.export(
            str(target), format="litert", verbose=False, **_converter(quantize, calibration)
        )


def _write_savedmodel(model, target: Path, names: tuple[str, ...]) -> None:
    """A SavedModel whose `serving_default` signature returns `probabilities` (float32 N x K)
    and `class` (the most likely class's name, a string per image).

    Its `serve` endpoint still returns the probabilities alone, as `Model.export` writes it, so
    code written for earlier exports keeps working.
    """
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    pixels = [tf.TensorSpec((None, *model.input_shape[1:]), model.input.dtype, name="pixels")]

    def labelled(pixels):
        probabilities = model(pixels)
        classes = tf.gather(tf.constant(names), tf.argmax(probabilities, axis=-1))
        return {"probabilities": probabilities, "class": classes}

    archive.add_endpoint("serve", model, pixels)
    # By this name it is TF Serving's default, instead of Keras' alias of the first endpoint.
    archive.add_endpoint("serving_default", labelled, pixels)
    archive.write_out(str(target), verbose=False)


def _converter(quantize: str, calibration: np.ndarray | None) -> dict:
    """TensorFlow's LiteRT converter settings for a quantization (Keras passes them on)."""
    import tensorflow as tf

    # Builtin ops only: a graph needing TensorFlow's own ops would not load in a plain LiteRT
    # interpreter, so that fails here rather than on the device.
    settings = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    if quantize == "none":
        return settings
    settings["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        settings["target_spec"]["supported_types"] = [tf.float16]
    elif quantize == "int8":

        def representative():
            for image in calibration:
                yield [image[np.newaxis]]

        settings["representative_dataset"] = representative
    return settings


def _calibration_images(run: Run) -> np.ndarray:
    """Up to `CALIBRATION_IMAGES` of the run's validation images, spread over the classes by the
    seeded split."""
    from convnet.data import load_training_data

    validation = load_training_data(run.config(), again=True).validation
    if validation is None or not len(validation):
        raise ExportError(
            f"{run.path}: {setting('quantize', 'int8')} is calibrated on the run's validation "
            f"images, and the run has none (val_split 0); use {setting('quantize', 'dynamic')} "
            f"or {setting('quantize', 'float16')}."
        )
    return validation.x[:CALIBRATION_IMAGES]


def _label(run: Run, target: Path, out: Path, record: Export) -> list[tuple[Path, Path]]:
    """Writes the class names into the staged export, and its model card (and a LiteRT file's
    labels) beside it or, for a SavedModel, inside it.

    Returns:
        The staged files that go beside the export, each with the name it is given there.
    """
    if record.format == "onnx":
        _record_metadata(target, record)
    if record.format == "savedmodel":
        (target / CARD_FILE).write_text(model_card(run, record), encoding="utf-8")
        return []
    staged = target.parent / CARD_FILE
    staged.write_text(model_card(run, record), encoding="utf-8")
    beside = [(staged, CARD_FILE)]
    if record.format == "litert":
        # Beside the model, not embedded as LiteRT metadata: tflite-support's writer is
        # unmaintained (0.4.4, 2023; no wheels past Python 3.11, and it pins protobuf < 4,
        # which TensorFlow no longer runs on), and MediaPipe's copy of it (0.10.35, 1.2.3)
        # fails on import: its wheels lack the `mediapipe.tasks.cc` module it loads.
        (target.parent / LABELS_FILE).write_text(labels_text(record), encoding="utf-8")
        beside.append((target.parent / LABELS_FILE, LABELS_FILE))
    return [(path, out.parent / name) for path, name in beside]


def _record_metadata(path: Path, record: Export) -> None:
    """Writes into the ONNX file's metadata its class names, the pixel range of the run's data
    and how many test-time views its graph averages; names its output `probabilities` and the
    batch dimension `batch`, as the SavedModel and the server name them, where the converter
    left `Identity:0` and `unk__49`."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    named = {graph.output[0].name: ONNX_OUTPUT}
    for node in graph.node:
        node.input[:] = [named.get(name, name) for name in node.input]
        node.output[:] = [named.get(name, name) for name in node.output]
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = named.get(value.name, value.name)
    for value in [*graph.input, *graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.metadata_props[:]  # an ONNX file with duplicate keys is invalid
    metadata = {
        CLASS_NAMES_KEY: json.dumps(list(record.class_names), ensure_ascii=False),
        PIXEL_RANGE_KEY: json.dumps(list(record.pixel_range)),
        TTA_VIEWS_KEY: str(record.views),
    }
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def averaged_views(path: str | Path) -> int:
    """How many test-time views the graph of an ONNX export averages: 1 for exports made before
    convnet recorded it (they averaged none)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    recorded = {p.key: p.value for p in model.metadata_props}.get(TTA_VIEWS_KEY, "1")
    return int(recorded)


def _in_inference_mode(model, views: TestTimeAugmentation):
    """`model` wrapped so the traced graph calls it with `training=False`, averaging `views`.

    Traced as it is, a model with augmentation layers runs in training mode: Keras' `Random*`
    layers default to `training=True`, which reaches the BatchNorm layers after them. The ONNX
    export of `best` then held random ops ONNX Runtime cannot load, and normalised each batch
    by its own statistics.

    The views are those of `TestTimeAugmentation.views`, in its order, stacked into one batch
    for one model call (as `TestTimeAugmentation.average` does) and averaged per image.
    """
    import keras
    from keras import ops

    inputs = keras.Input(model.input_shape[1:], dtype=model.input.dtype, name="pixels")
    if views.count == 1:
        return keras.Model(inputs, model(inputs, training=False), name=model.name)
    s = views.shift
    height, width = model.input_shape[1:3]
    # LiteRT pads float32 but not uint8 tensors: the shifted views are float32 copies of the
    # pixels, which the model's input takes back to uint8 exactly (they are whole numbers).
    padded = ops.pad(ops.cast(inputs, "float32"), [[0, 0], [s, s], [s, s], [0, 0]]) if s else inputs
    batch = []
    for dy, dx in itertools.product(range(-s, s + 1), repeat=2):
        # `_shifted`: moved down by dy and right by dx, zero-filled.
        view = padded[:, s - dy : s - dy + height, s - dx : s - dx + width, :]
        batch.append(view)
        if views.flip:
            batch.append(ops.flip(view, axis=2))
    probabilities = model(ops.concatenate(batch, axis=0), training=False)
    per_view = ops.reshape(probabilities, (len(batch), -1, probabilities.shape[-1]))
    return keras.Model(inputs, ops.mean(per_view, axis=0), name=model.name)
