"""Exporting a run's model to ONNX or a TensorFlow SavedModel that takes the same raw uint8 pixels.

Both go through Keras' own `Model.export` (ONNX via tf2onnx underneath), so the exported graph is
the trained model, `Rescaling` included: a caller feeds (N, H, W, C) uint8 pixels and gets softmax
probabilities, exactly like `model.keras`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from convnet.errors import ConvnetError
from convnet.runs import Run

FORMATS = {"onnx": "model.onnx", "savedmodel": "saved_model"}


class ExportError(ConvnetError):
    """A model could not be exported."""


def export_model(run: str | Path, format: str = "onnx", out: str | Path | None = None) -> Path:
    """Writes a run's model as ONNX or as a TensorFlow SavedModel.

    Args:
        run: the run folder.
        format: "onnx" (one `.onnx` file) or "savedmodel" (a folder). Defaults to "onnx".
        out: where to write it. Defaults to `RUN/model.onnx` or `RUN/saved_model`.

    Returns:
        The path written.

    Raises:
        ExportError: an unknown format, or the exporter failed.
        RunError: the run folder has no model.
    """
    if format not in FORMATS:
        raise ExportError(f"Unknown export format {format!r}; expected one of {sorted(FORMATS)}.")
    run = Run(run)
    out = Path(out) if out else run.path / FORMATS[format]
    model = run.load_model()
    # Keras refuses to export a model that has never been called; one tiny batch builds it.
    model.predict(np.zeros((1, *model.input_shape[1:]), np.uint8), verbose=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Export beside the destination, then rename: a reader never sees half an export.
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    target = staging / out.name
    try:
        keras_format = "onnx" if format == "onnx" else "tf_saved_model"
        model.export(str(target), format=keras_format, verbose=False)
        if out.is_dir():
            shutil.rmtree(out)
        os.replace(target, out)
    except (ValueError, TypeError, RuntimeError, ImportError) as error:
        raise ExportError(f"{run.path}: {format} export failed ({error}).") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
