"""The runnable code of a model card's "How to use", one per export format: the exported file
loaded with its own runtime (ONNX Runtime, LiteRT's interpreter, TensorFlow), its class names
read back from where the export keeps them, and one image classified. `{file}`, `{shape}` and
`{labels}` are filled in for the export the card describes.
"""

SNIPPETS = {
    "onnx": """
import json

import numpy as np
import onnxruntime as ort

session = ort.InferenceSession("{file}", providers=["CPUExecutionProvider"])
class_names = json.loads(session.get_modelmeta().custom_metadata_map["class_names"])
pixels = np.zeros(({shape}), np.uint8)
probabilities = session.run(None, {{session.get_inputs()[0].name: pixels}})[0]
print(class_names[probabilities[0].argmax()], probabilities[0].max())
""",
    "litert": """
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

class_names = Path("{labels}").read_text(encoding="utf-8").splitlines()
interpreter = Interpreter("{file}")
interpreter.allocate_tensors()
given, answer = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
pixels = np.zeros(({shape}), np.uint8)
interpreter.set_tensor(given["index"], pixels)
interpreter.invoke()
probabilities = interpreter.get_tensor(answer["index"])
print(class_names[probabilities[0].argmax()], probabilities[0].max())
""",
    "savedmodel": """
import tensorflow as tf

model = tf.saved_model.load("{file}")
pixels = tf.zeros(({shape}), tf.uint8)
answer = model.signatures["serving_default"](pixels=pixels)
print(answer["class"][0].numpy().decode(), answer["probabilities"][0].numpy().max())
""",
}
