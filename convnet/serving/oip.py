"""The Open Inference Protocol's model, whatever carries it: what the served model takes and
gives, an infer request read into model inputs, and the outputs made from its probabilities.
`protocol_v2` carries it over REST, `serving.grpc` over gRPC; neither reads or writes a tensor
itself.

The model's name is the run folder's name (`seed-20250101-120000`), and a run is version "1" of
its model. It takes one input, `input`: pixels shaped (N, H, W, C) in any of `DATATYPES` whose
values are whole pixel values in the training data's range (uint8 for most), or BYTES of shape
(N,) or (N, 1), each element an encoded image (PNG, JPEG, ...; base64 in JSON) decoded and fitted
as `/v1/predict` does. It gives `probabilities` (FP32, (N, classes)) and `class` (BYTES, (N,), the
most likely class's name); a requested output with the `classification` parameter K is instead
BYTES (N, K) of Triton's `score:index:label`.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from convnet.errors import DataError
from convnet.inputs import pixels_to_inputs
from convnet.serving.payloads import Limits, PayloadTooLarge, check_total_pixels, decode_file

INPUT = "input"
OUTPUTS = ("probabilities", "class")
MODEL_VERSION = "1"
EXTENSIONS = ["binary_tensor_data", "classification"]
# The protocol's datatypes that can hold pixel values, and their NumPy types (little-endian, as
# the binary extension and gRPC's raw contents lay them out). BOOL and BF16 cannot.
DATATYPES = {
    "UINT8": np.uint8,
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.int8,
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
BYTES = "BYTES"


class UnknownModel(DataError):
    """The request names a model or version this server does not serve (HTTP 404)."""

    status_code = 404


class InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None


@dataclass
class OutputTensor:
    """One output of an answer: a numeric array, or for BYTES an object array of `bytes`."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    binary: bool = False

    def values(self) -> list:
        """The values for JSON: numbers, or strings for BYTES."""
        if self.datatype == BYTES:
            return [v.decode() for v in self.data.ravel()]
        return self.data.ravel().tolist()

    def raw(self) -> bytes:
        """The values as the binary extension and gRPC's raw contents hold them: little-endian,
        and each BYTES element after its 4-byte little-endian length."""
        if self.datatype == BYTES:
            return b"".join(struct.pack("<I", len(v)) + v for v in self.data.ravel())
        return self.data.astype(DATATYPES[self.datatype], copy=False).tobytes()


def server_metadata(version: str | None) -> dict:
    return {"name": "convnet", "version": version, "extensions": EXTENSIONS}


def model_metadata(info: dict) -> dict:
    return {
        "name": info["run"],
        "versions": [MODEL_VERSION],
        "platform": "onnxruntime_onnx" if info["engine"] == "onnx" else "keras",
        "inputs": [{"name": INPUT, "datatype": "UINT8", "shape": [-1, *info["input_shape"]]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(info["class_names"])]},
            {"name": "class", "datatype": BYTES, "shape": [-1]},
        ],
    }


def check_model(info: dict, name: str, version: str | None = None) -> None:
    """Raises:
    UnknownModel: `name` is not the served run, or `version` is given and is not "1".
    """
    if name != info["run"]:
        raise UnknownModel(f"unknown model {name!r}; this server serves {info['run']!r}.")
    if version not in (None, "", MODEL_VERSION):
        raise UnknownModel(
            f"model {name!r} has no version {version!r}; it has version {MODEL_VERSION!r}."
        )


def decode_request(
    request: InferRequest, raw: list[bytes | None], input_shape, info: dict, limits: Limits
) -> tuple[str | None, list[RequestedOutput], np.ndarray]:
    """An infer request's id, the outputs it asks for and the model's uint8 inputs (N, H, W, C);
    blocking, for a worker thread.

    Args:
        request: the request; each input's values are in its `data` (numbers, flat or nested;
            for BYTES, base64 strings or `bytes`) unless `raw` has them.
        raw: per input, its values as bytes (the binary extension, gRPC's raw contents), or None.

    Raises:
        DataError: naming the input or output and what was expected (HTTP 400, gRPC
            INVALID_ARGUMENT); PayloadTooLarge past the image limits.
    """
    if [i.name for i in request.inputs] != [INPUT]:
        raise DataError(
            f"inputs named {[i.name for i in request.inputs]}; expected one input, {INPUT!r}."
        )
    wanted = request.outputs or [RequestedOutput(name=name) for name in OUTPUTS]
    unknown = [o.name for o in wanted if o.name not in OUTPUTS]
    if unknown:
        raise DataError(f"unknown outputs {unknown}; the model has {list(OUTPUTS)}.")
    for output in wanted:
        _classes_asked(output, len(info["class_names"]))  # refused before any decoding
    tensor = request.inputs[0]
    if tensor.datatype == BYTES:
        x = _images(tensor, raw[0], input_shape, info, limits)
    else:
        array = _tensor(tensor, raw[0], input_shape, limits)
        x = pixels_to_inputs(array, input_shape, INPUT, info["pixel_range"])
    return request.id, wanted, x


def infer_outputs(
    probabilities: np.ndarray, wanted: list[RequestedOutput], info: dict, binary: bool = False
) -> list[OutputTensor]:
    """The outputs asked for, in their order.

    Args:
        binary: the request's `binary_data_output`: every output binary unless its own
            `binary_data` parameter says otherwise.
    """
    names = info["class_names"]
    outputs = []
    for output in wanted:
        parameters = output.parameters or {}
        k = _classes_asked(output, len(names))
        if k:
            top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
            data = np.array(
                [
                    [f"{probabilities[n, i]:f}:{i}:{names[i]}".encode() for i in row]
                    for n, row in enumerate(top)
                ],
                dtype=object,
            ).reshape(len(probabilities), k)
            tensor = OutputTensor(output.name, BYTES, [len(probabilities), k], data)
        elif output.name == "probabilities":
            tensor = OutputTensor(output.name, "FP32", list(probabilities.shape), probabilities)
        else:
            data = np.array([names[i].encode() for i in probabilities.argmax(1)], dtype=object)
            tensor = OutputTensor(output.name, BYTES, [len(probabilities)], data)
        tensor.binary = bool(parameters.get("binary_data", binary))
        outputs.append(tensor)
    return outputs


def _classes_asked(output: RequestedOutput, count: int) -> int:
    """The `classification` parameter's K (0 when not asked).

    Raises:
        DataError: K is not a whole number from 1 to the number of classes, or is asked of
            `class`, which is already one name per image.
    """
    k = (output.parameters or {}).get("classification")
    if k is None:
        return 0
    if output.name != "probabilities":
        raise DataError(f"{output.name}: classification is for the 'probabilities' output.")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= count:
        raise DataError(
            f"{output.name}: classification {k!r}; expected a whole number from 1 to {count}."
        )
    return k


def _images(
    tensor: InferInput, raw: bytes | None, input_shape, info: dict, limits: Limits
) -> np.ndarray:
    """BYTES elements, each an encoded image (or `.npy` array), as model inputs."""
    shape = tuple(tensor.shape)
    if len(shape) not in (1, 2) or shape[0] < 1 or (len(shape) == 2 and shape[1] != 1):
        raise DataError(f"{tensor.name}: BYTES shape {list(shape)}; expected [N] or [N, 1].")
    if shape[0] > limits.max_images:
        raise PayloadTooLarge(f"over {limits.max_images:,} images in one request.")
    if raw is not None:
        elements = _length_prefixed(tensor.name, raw)
    elif tensor.data is not None:
        elements = [_element_bytes(tensor.name, i, v) for i, v in enumerate(_flat(tensor.data))]
    else:
        raise DataError(f"{tensor.name}: no data; send data or binary_data_size.")
    if len(elements) != shape[0]:
        raise DataError(
            f"{tensor.name}: {len(elements):,} elements; shape {list(shape)} needs {shape[0]:,}."
        )
    files = [(f"{tensor.name}[{i}]", data, None) for i, data in enumerate(elements)]
    check_total_pixels(files, limits)
    batches = [
        decode_file(
            name, data, None, input_shape, info["background_is_light"], limits, info["pixel_range"]
        )
        for name, data, _ in files
    ]
    x = np.concatenate(batches)
    if len(x) > limits.max_images:
        raise PayloadTooLarge(f"over {limits.max_images:,} images in one request.")
    return x


def _flat(data: list) -> list:
    """A nested JSON list's elements in row-major order."""
    flat = []
    for value in data:
        flat.extend(_flat(value) if isinstance(value, list) else [value])
    return flat


def _element_bytes(name: str, index: int, value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            pass
    raise DataError(f"{name}[{index}]: expected an encoded image as a base64 string.")


def _length_prefixed(name: str, raw: bytes) -> list[bytes]:
    """The elements of a binary BYTES tensor: each a 4-byte little-endian length, then that
    many bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise DataError(f"{name}[{len(elements)}]: its 4-byte length is cut short.")
        (length,) = struct.unpack_from("<I", raw, offset)
        if offset + 4 + length > len(raw):
            raise DataError(
                f"{name}[{len(elements)}]: length {length:,} runs past the tensor's "
                f"{len(raw):,} bytes."
            )
        elements.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return elements


def _tensor(tensor: InferInput, raw: bytes | None, input_shape, limits: Limits) -> np.ndarray:
    """A pixel input's values as an array of its declared shape and datatype."""
    dtype = DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise DataError(
            f"{tensor.name}: datatype {tensor.datatype!r}; expected one of {[*DATATYPES, BYTES]}."
        )
    shape = tuple(tensor.shape)
    if len(shape) != 4 or shape[1:] != tuple(input_shape) or shape[0] < 1:
        raise DataError(
            f"{tensor.name}: shape {list(shape)}; expected [N, {', '.join(map(str, input_shape))}]."
        )
    if shape[0] > limits.max_images:
        raise PayloadTooLarge(f"over {limits.max_images:,} images in one request.")
    size = int(np.prod(shape))
    if raw is not None:
        itemsize = np.dtype(dtype).itemsize
        if len(raw) != size * itemsize:
            raise DataError(
                f"{tensor.name}: {len(raw):,} bytes of data; {size:,} {tensor.datatype} values "
                f"take {size * itemsize:,}."
            )
        return np.frombuffer(raw, dtype).reshape(shape)
    if tensor.data is None:
        raise DataError(f"{tensor.name}: no data; send data or binary_data_size.")
    try:
        array = np.asarray(tensor.data, np.float64)
    except (ValueError, TypeError):
        raise DataError(f"{tensor.name}: data is not a rectangular array of numbers.") from None
    except OverflowError:  # JSON integers have no limit; 10**400 is past float64's
        raise DataError(f"{tensor.name}: data holds an integer too large for a pixel.") from None
    if array.size != size:
        raise DataError(
            f"{tensor.name}: {array.size:,} values; shape {list(shape)} needs {size:,}."
        )
    return array.reshape(shape)
