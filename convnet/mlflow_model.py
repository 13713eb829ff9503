"""A run's exported ONNX graph as an MLflow model (`mlflow.pyfunc`), served without TensorFlow.

`convnet train --mlflow` logs this file as the model's code (MLflow's "models from code"), with
the ONNX export of `convnet export` as its artifact. MLflow runs the logged copy to load the
model, so loading and predicting need MLflow, NumPy and ONNX Runtime only: not convnet, Keras
or TensorFlow.

Example:
    >>> model = mlflow.pyfunc.load_model("runs:/RUN_ID/model")
    >>> probabilities = model.predict(x)  # x: uint8 images (N, H, W, C); N x K float32
    >>> model.metadata.metadata["class_names"]
"""

from __future__ import annotations

import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

ONNX_ARTIFACT = "onnx"  # the key of the ONNX file in the model's artifacts
# Images per ONNX Runtime call, as `convnet.Run.predict` takes them. The graph stacks each
# image's test-time views into its batch: with shift_tta 1 and flip, 18 times as many images.
BATCH = 1024


class OnnxClassifier(mlflow.pyfunc.PythonModel):
    """Class probabilities from an ONNX export of a run: raw uint8 pixels in, the run's
    test-time views averaged inside the graph."""

    def load_context(self, context) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(
            context.artifacts[ONNX_ARTIFACT], providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.classes = self.session.get_outputs()[0].shape[-1]

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        """N x K float32 class probabilities of `model_input`, uint8 images (N, H, W, C)."""
        images = np.asarray(model_input)
        batches = [
            self.session.run(None, {self.input_name: images[start : start + BATCH]})[0]
            for start in range(0, len(images), BATCH)
        ]
        if not batches:
            return np.zeros((0, self.classes), np.float32)
        return np.concatenate(batches).astype(np.float32, copy=False)


def signature(image_shape: tuple[int, ...], classes: int) -> ModelSignature:
    """The model's signature: uint8 images (N, *image_shape) in, float32 (N, classes) out."""
    return ModelSignature(
        Schema([TensorSpec(np.dtype(np.uint8), (-1, *image_shape))]),
        Schema([TensorSpec(np.dtype(np.float32), (-1, classes))]),
    )


def requirements() -> list[str]:
    """The packages this module imports, pinned to the versions here as MLflow pins those it
    infers (inferring them would load the model in another process first)."""
    import onnxruntime

    pinned = {"mlflow-skinny": mlflow, "numpy": np, "onnxruntime": onnxruntime}
    return [f"{name}=={module.__version__}" for name, module in pinned.items()]


# MLflow loads the logged copy of this file under a name of its own and takes the model this
# call sets; importing the module as part of convnet leaves MLflow's state alone.
if __name__ != "convnet.mlflow_model":
    mlflow.models.set_model(OnnxClassifier())
