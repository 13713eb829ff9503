"""KServe's gRPC client (kserve.InferenceGRPCClient, async) against `convnet serve --grpc-port`.

    kserve_grpc.py HOST:PORT MODEL IMAGES.npy KEY

Prints one JSON document: what each call answered, and the status and message of the calls the
server should refuse. The inputs go typed (`InferTensorContents`, KServe's way for a list of
values) and raw (`set_data_from_numpy(..., binary_data=True)`).
"""

import asyncio
import json
import sys

import grpc
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb


async def main(address: str, model: str, images: str, key: str) -> dict:
    x = np.load(images)
    auth = [("authorization", f"Bearer {key}")]
    async with InferenceGRPCClient(address, retries=0) as client:
        # KServe's client has no metadata calls: its own stub and messages make them.
        stub = client._client_stub
        server = await stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=auth)
        metadata = await stub.ModelMetadata(pb.ModelMetadataRequest(name=model), metadata=auth)
        answers = {
            "live": await client.is_server_live(),  # without the key: the checks are open
            "ready": await client.is_server_ready(),
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
            "model_ready": await client.is_model_ready(model, headers=auth),
            "typed": await infer(client, model, x, auth, binary=False),
            "raw": await infer(client, model, x, auth, binary=True),
            "refused": {},
        }
        calls = {
            "no_key": infer(client, model, x, [], binary=True),
            "unknown_model": infer(client, "nope", x, auth, binary=False),
        }
        for name, call in calls.items():
            try:
                await call
                answers["refused"][name] = None
            except grpc.aio.AioRpcError as error:
                answers["refused"][name] = {"status": error.code().name, "message": error.details()}
    return answers


def tensor(metadata) -> dict:
    return {"name": metadata.name, "datatype": metadata.datatype, "shape": list(metadata.shape)}


async def infer(client, model: str, x: np.ndarray, headers: list, binary: bool) -> dict:
    if binary:
        pixels = InferInput("input", list(x.shape), "UINT8")
        pixels.set_data_from_numpy(x, binary_data=True)
    else:
        pixels = InferInput("input", list(x.shape), "UINT8", data=x.ravel().tolist())
    request = InferRequest(model_name=model, infer_inputs=[pixels], request_id=f"kserve-{binary}")
    response = await client.infer(request, headers=headers)
    outputs = {output.name: output for output in response.outputs}
    return {
        "id": response.id,
        "probabilities": outputs["probabilities"].as_numpy().tolist(),
        "class": [
            name.decode() if isinstance(name, bytes) else name
            for name in outputs["class"].as_numpy().ravel()
        ],
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:5]))))
