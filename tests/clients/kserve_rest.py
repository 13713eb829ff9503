"""KServe's own REST client (`kserve.InferenceRESTClient`, protocol v2) against a running server.

    python kserve_rest.py URL MODEL IMAGES.npy IMAGE.png [API_KEY]

Runs what a KServe user would (live, ready, model ready, infer as JSON, with binary inputs and
outputs, and with an encoded image as BYTES) and prints what it got as JSON for the test to judge.
"""

import asyncio
import json
import sys

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput


def request(model, x, datatype, binary, outputs=None, parameters=None) -> InferRequest:
    tensor = InferInput("input", list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    return InferRequest(
        model, [tensor], request_id="k1", request_outputs=outputs, parameters=parameters
    )


def answer(response) -> dict:
    return {
        "id": response.id,
        "outputs": {o.name: o.as_numpy().tolist() for o in response.outputs},
    }


def decoded(values):
    return [[v.decode() if isinstance(v, bytes) else v for v in row] for row in values]


async def main(url: str, model: str, images: str, png: str, key: str | None) -> dict:
    x = np.load(images)
    with open(png, "rb") as file:
        encoded = file.read()
    headers = {"authorization": f"Bearer {key}"} if key else None
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=60)) as client:
        got = {
            "live": await client.is_server_live(url),
            "ready": await client.is_server_ready(url),
            "model_ready": await client.is_model_ready(url, model, headers=headers),
        }
        json_in = await client.infer(url, request(model, x, "UINT8", False), model, headers)
        got["json"] = answer(json_in)
        binary = request(
            model,
            x,
            "UINT8",
            True,
            outputs=[RequestedOutput("probabilities", {"binary_data": True})],
        )
        got["binary"] = answer(await client.infer(url, binary, model, headers))
        images_in = request(model, np.array([encoded], dtype=np.object_), "BYTES", True)
        got["png"] = answer(await client.infer(url, images_in, model, headers))
        top = request(
            model,
            x,
            "UINT8",
            True,
            outputs=[RequestedOutput("probabilities", {"classification": 2})],
        )
        result = answer(await client.infer(url, top, model, headers))
        got["classification"] = decoded(result["outputs"]["probabilities"])
        try:
            await client.infer(url, request(model, x[:, :5], "UINT8", False), model, headers)
            got["bad_shape"] = None
        except httpx.HTTPStatusError as error:
            got["bad_shape"] = {"status": error.response.status_code, "message": str(error)}
    return got


if __name__ == "__main__":
    url, model, images, png = sys.argv[1:5]
    key = sys.argv[5] if len(sys.argv) > 5 else None
    print(json.dumps(asyncio.run(main(url, model, images, png, key))))
