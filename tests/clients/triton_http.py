"""Triton's own HTTP client (`tritonclient.http`) against a running server.

    python triton_http.py HOST:PORT MODEL IMAGES.npy IMAGE.png

Runs live, ready, server and model metadata, and infer with JSON and binary tensors both ways,
an encoded image as BYTES and Triton's classification extension; prints what it got as JSON.
"""

import json
import sys

import numpy as np
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException


def text(value) -> str:
    """A BYTES element: bytes from binary outputs, str from JSON ones."""
    return value.decode() if isinstance(value, bytes) else value


def main(address: str, model: str, images: str, png: str) -> dict:
    x = np.load(images)
    with open(png, "rb") as file:
        encoded = file.read()
    client = triton.InferenceServerClient(address)
    got = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "versioned_ready": client.is_model_ready(model, "1"),
        "server": client.get_server_metadata(),
        "model": client.get_model_metadata(model, "1"),
    }
    for binary in (False, True):
        tensor = triton.InferInput("input", list(x.shape), "UINT8")
        tensor.set_data_from_numpy(x, binary_data=binary)
        outputs = [
            triton.InferRequestedOutput("probabilities", binary_data=binary),
            triton.InferRequestedOutput("class", binary_data=binary),
        ]
        result = client.infer(model, [tensor], outputs=outputs, model_version="1")
        got[f"binary_{binary}"] = {
            "probabilities": result.as_numpy("probabilities").tolist(),
            "class": [text(c) for c in result.as_numpy("class")],
        }
    for datatype in ("FP16", "INT16"):
        tensor = triton.InferInput("input", list(x.shape), datatype)
        tensor.set_data_from_numpy(x.astype(triton.triton_to_np_dtype(datatype)))
        result = client.infer(model, [tensor])
        got[datatype] = result.as_numpy("probabilities").tolist()
    tensor = triton.InferInput("input", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([encoded], dtype=np.object_))
    got["png"] = client.infer(model, [tensor]).as_numpy("probabilities").tolist()
    tensor = triton.InferInput("input", list(x.shape), "UINT8")
    tensor.set_data_from_numpy(x)
    top = [triton.InferRequestedOutput("probabilities", class_count=2)]
    classes = client.infer(model, [tensor], outputs=top).as_numpy("probabilities")
    got["classification"] = [[text(v) for v in row] for row in classes]
    try:
        client.infer(model, [tensor], model_version="7")
        got["bad_version"] = None
    except InferenceServerException as error:
        got["bad_version"] = str(error)
    client.close()
    return got


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
