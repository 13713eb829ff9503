"""Exporting a run's model to ONNX or a TensorFlow SavedModel that takes the same raw uint8 pixels.

Both go through Keras' own `Model.export` (ONNX via tf2onnx underneath), so the exported graph is
the trained model, `Rescaling` included: a caller feeds (N, H, W, C) uint8 pixels and gets softmax
probabilities, exactly like `model.keras`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from convnet.errors import ConvnetError
from convnet.models.factory import load_model
from convnet.runs import Run

FORMATS = {"onnx": "model.onnx", "savedmodel": "saved_model"}


class ExportError(ConvnetError):
    """A model could not be exported."""


def export_model(run: str | Path, format: str = "onnx", out: str | Path | None = None) -> Path:
    """Writes a run's model as ONNX or as a TensorFlow SavedModel.

    Args:
        run: the run folder.
        format: "onnx" (one `.onnx` file) or "savedmodel" (a folder). Defaults to "onnx".
        out: where to write it. Defaults to `RUN/model.onnx` or `RUN/saved_model`. An ONNX
            model given an existing folder goes inside it as `model.onnx`; anything else already
            there is replaced only if it is an earlier export of the same format.

    Returns:
        The path written.

    Raises:
        ExportError: an unknown format, a destination that is not new or an earlier export, or
            the exporter failed.
        RunError: the run folder has no model.
    """
    if format not in FORMATS:
        raise ExportError(f"Unknown export format {format!r}; expected one of {sorted(FORMATS)}.")
    run = Run(run)
    out = _destination(Path(out) if out else run.path / FORMATS[format], format)
    model = _in_inference_mode(load_model(run.model_file))
    # Keras refuses to export a model that has never been called; one tiny batch builds it.
    model.predict(np.zeros((1, *model.input_shape[1:]), np.uint8), verbose=0)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # Export beside the destination, then rename: a reader never sees half an export.
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    except FileExistsError:  # mkdir's answer when the parent is a file
        raise ExportError(f"{out}: cannot write there ({out.parent} is a file).") from None
    except OSError as error:
        raise ExportError(f"{out}: cannot write there ({error.strerror}).") from None
    target = staging / out.name
    try:
        keras_format = "onnx" if format == "onnx" else "tf_saved_model"
        with warnings.catch_warnings():
            # Keras' tf2onnx shim probes `np.object`, which NumPy answers with a FutureWarning.
            warnings.filterwarnings("ignore", "In the future `np.object`", FutureWarning)
            model.export(str(target), format=keras_format, verbose=False)
        _swap_in(target, out, staging / "previous")
    except (ValueError, TypeError, RuntimeError, ImportError) as error:
        raise ExportError(f"{run.path}: {format} export failed ({error}).") from None
    except OSError as error:
        raise ExportError(f"{out}: cannot write there ({error.strerror}).") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _in_inference_mode(model):
    """`model` wrapped so the traced graph calls it with `training=False`.

    Traced as it is, a model with augmentation layers runs in training mode: Keras' `Random*`
    layers default to `training=True`, which reaches the BatchNorm layers after them. The ONNX
    export of `best` then held random ops ONNX Runtime cannot load, and normalised each batch
    by its own statistics.
    """
    import keras

    inputs = keras.Input(model.input_shape[1:], dtype=model.input.dtype, name="pixels")
    return keras.Model(inputs, model(inputs, training=False), name=model.name)


def _destination(out: Path, format: str) -> Path:
    """Where the export goes; refuses to replace anything that is not an earlier export.

    An ONNX export into an existing folder is written inside it as `model.onnx`, and replaces
    only an `.onnx` file; a SavedModel replaces only a folder holding an earlier SavedModel.
    """
    if format == "onnx" and out.is_dir():
        out = out / FORMATS["onnx"]
    if not out.exists() and not out.is_symlink():
        return out
    if format == "onnx" and (out.is_dir() or out.suffix.lower() != ".onnx"):
        raise ExportError(
            f"{out}: exists and is not an .onnx file; pass an --out that is new, a folder, or an "
            "earlier .onnx export."
        )
    if format == "savedmodel" and not (out / "saved_model.pb").is_file():
        raise ExportError(
            f"{out}: exists and is not a SavedModel; pass an --out that is new or an earlier "
            "SavedModel export."
        )
    return out


def _swap_in(new: Path, out: Path, aside: Path) -> None:
    """Renames `new` to `out`; an earlier export there goes `aside` first, and back on failure."""
    if not out.is_dir():
        os.replace(new, out)  # atomic for a file, whether or not one was there
        return
    os.replace(out, aside)
    try:
        os.replace(new, out)
    except OSError:
        os.replace(aside, out)
        raise
