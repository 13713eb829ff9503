"""Triton's gRPC client (tritonclient.grpc) against `convnet serve --grpc-port`, as a user runs it.

    triton_grpc.py HOST:PORT MODEL IMAGES.npy KEY

Prints one JSON document: what each call answered, and the status and message of each call the
server should refuse. The inputs go raw (`raw_input_contents`), as tritonclient sends them, and
typed (`InferTensorContents`), through the client's own stub and messages.
"""

import json
import sys

import numpy as np
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException


def main(address: str, model: str, images: str, key: str) -> dict:
    x = np.load(images)
    auth = {"authorization": f"Bearer {key}"}
    client = triton.InferenceServerClient(address)
    server = client.get_server_metadata(headers=auth)
    metadata = client.get_model_metadata(model, headers=auth)
    answers = {
        "live": client.is_server_live(),  # without the key: the health checks are open
        "ready": client.is_server_ready(),
        "server_metadata": {
            "name": server.name,
            "version": server.version,
            "extensions": list(server.extensions),
        },
        "model_metadata": {
            "name": metadata.name,
            "versions": list(metadata.versions),
            "platform": metadata.platform,
            "inputs": [tensor(t) for t in metadata.inputs],
            "outputs": [tensor(t) for t in metadata.outputs],
        },
        "model_ready": client.is_model_ready(model, headers=auth),
        "raw": infer_raw(client, model, x, auth),
        "typed": infer_typed(client, model, x, auth),
        "refused": refusals(client, model, x, key),
    }
    # The server still answers after refusing an over-size message.
    answers["after_refusals"] = infer_raw(client, model, x[:2], {"x-api-key": key})
    client.close()
    return answers


def tensor(metadata) -> dict:
    return {"name": metadata.name, "datatype": metadata.datatype, "shape": list(metadata.shape)}


def infer_raw(client, model: str, x: np.ndarray, headers: dict) -> dict:
    pixels = triton.InferInput("input", list(x.shape), "UINT8")
    pixels.set_data_from_numpy(x)
    result = client.infer(model, [pixels], request_id="raw-1", headers=headers)
    return {
        "id": result.get_response().id,
        "raw_outputs": len(result.get_response().raw_output_contents),
        "probabilities": result.as_numpy("probabilities").tolist(),
        "class": [name.decode() for name in result.as_numpy("class")],
    }


def infer_typed(client, model: str, x: np.ndarray, headers: dict) -> dict:
    request = service_pb2.ModelInferRequest(model_name=model, id="typed-1")
    pixels = request.inputs.add(name="input", datatype="UINT8", shape=list(x.shape))
    pixels.contents.uint_contents.extend(x.ravel().tolist())
    # tritonclient sends numbers raw only; its stub sends any message of the protocol.
    response = client._client_stub.ModelInfer(request, metadata=list(headers.items()))
    probabilities, classes = response.outputs
    return {
        "id": response.id,
        "raw_outputs": len(response.raw_output_contents),
        "probabilities": np.reshape(
            probabilities.contents.fp32_contents, list(probabilities.shape)
        ).tolist(),
        "class": [name.decode() for name in classes.contents.bytes_contents],
    }


def refusals(client, model: str, x: np.ndarray, key: str) -> dict:
    def pixels(array, shape=None):
        tensor = triton.InferInput("input", shape or list(array.shape), "UINT8")
        tensor.set_data_from_numpy(array)
        return [tensor]

    auth = {"authorization": f"Bearer {key}"}
    calls = {
        "no_key": lambda: client.infer(model, pixels(x)),
        "wrong_key": lambda: client.infer(model, pixels(x), headers={"x-api-key": key + "x"}),
        "metadata_no_key": lambda: client.get_model_metadata(model),
        # 22,000 images of 784 bytes: past the 16 MiB a message may hold
        "too_large": lambda: client.infer(
            model, pixels(np.zeros((22000, *x.shape[1:]), np.uint8)), headers=auth
        ),
        "too_many": lambda: client.infer(
            model, pixels(np.zeros((16385, *x.shape[1:]), np.uint8)), headers=auth
        ),
        "bad_shape": lambda: client.infer(model, pixels(x[:1, ..., 0]), headers=auth),
        "unknown_model": lambda: client.infer("nope", pixels(x), headers=auth),
        "unknown_version": lambda: client.infer(model, pixels(x), model_version="2", headers=auth),
    }
    refused = {}
    for name, call in calls.items():
        try:
            call()
            refused[name] = None
        except InferenceServerException as error:
            refused[name] = {"status": error.status().split(".")[-1], "message": error.message()}
    return refused


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
