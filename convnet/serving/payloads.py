"""Reading a prediction request's body into model inputs, within limits.

A request is multipart files (images or `.npy` arrays) or JSON (`images`: base64 files,
`pixels`: raw 0-255 arrays). Images go through `convnet.inputs`, the same preprocessing as
`convnet predict`. Every problem is a `DataError` subclass carrying its HTTP status.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from convnet.data.pixels import FULL_RANGE
from convnet.errors import DataError
from convnet.inputs import image_file_to_inputs, npy_to_inputs, pixels_to_inputs

NPY_MAGIC = b"\x93NUMPY"


class PayloadTooLarge(DataError):
    """The request is over the size or image-count limit (HTTP 413)."""

    status_code = 413


class UnsupportedMedia(DataError):
    """The request or one of its files is not of a type the server reads (HTTP 415)."""

    status_code = 415


@dataclass(frozen=True)
class Limits:
    """What one prediction request may hold.

    Attributes:
        max_bytes: the request body, in bytes. Defaults to 16 MiB (about 20,000 28x28 images as
            one `.npy`).
        max_pixels: pixels of one decoded image (width x height); bigger ones are refused before
            decoding, so a small file cannot unpack into gigabytes. Defaults to 36 million.
        max_images: images in one request. Defaults to 16,384.
    """

    max_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 36_000_000
    max_images: int = 16_384


class PredictJSON(BaseModel):
    """A JSON prediction request: base64-encoded files and/or raw pixel arrays."""

    images: list[str] = Field(
        default_factory=list,
        description="Base64-encoded image files (PNG, JPEG, ...) or .npy arrays; data: URLs "
        "are accepted.",
    )
    pixels: list[Any] | None = Field(
        None,
        description="Raw pixels from 0 to 255, shaped (H, W), (H, W, C), (N, H, W) or "
        "(N, H, W, C).",
    )


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused as soon as it is known to exceed `max_bytes`.

    Raises:
        PayloadTooLarge: the declared or received length is over the limit.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(
            f"request body of {int(declared):,} bytes; the limit is {max_bytes:,}."
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"request body over the limit of {max_bytes:,} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_request(
    request: Request,
    input_shape,
    light_background: bool,
    limits: Limits,
    pixel_range: str = FULL_RANGE,
) -> tuple[list[str], np.ndarray]:
    """Names and uint8 model inputs (N, H, W, C) for every file or array in the request; arrays
    hold values in `pixel_range`, the training data's (`convnet.data.pixels`).

    Raises:
        DataError: (or a subclass) naming what is wrong.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, limits.max_bytes)
    if content_type == "multipart/form-data":
        files = await _multipart_files(request, body, limits)
    elif content_type == "application/json":
        files = _json_files(body, input_shape)
    else:
        raise UnsupportedMedia(
            f"content type {content_type or 'none'!r}; send multipart/form-data files or "
            "application/json."
        )
    if not files:
        raise DataError("no images in the request; send at least one file, image or pixel array.")
    names, arrays = [], []
    for name, data, media in files:
        if isinstance(data, np.ndarray):
            batch = pixels_to_inputs(data, input_shape, name, pixel_range)
        else:
            batch = decode_file(
                name, data, media, input_shape, light_background, limits, pixel_range
            )
        names += [name] if len(batch) == 1 else [f"{name}[{i}]" for i in range(len(batch))]
        arrays.append(batch)
        if len(names) > limits.max_images:
            raise PayloadTooLarge(f"over {limits.max_images:,} images in one request.")
    return names, np.concatenate(arrays) if len(arrays) > 1 else arrays[0]


def decode_file(
    name: str,
    data: bytes,
    media: str | None,
    input_shape,
    light_background: bool,
    limits: Limits,
    pixel_range: str = FULL_RANGE,
) -> np.ndarray:
    """One uploaded file (an image or a `.npy` array) as uint8 inputs (N, H, W, C).

    Raises:
        UnsupportedMedia: the file declares a non-image type and is not a `.npy` array.
        DataError: the file cannot be read, or is too large once decoded.
    """
    if data.startswith(NPY_MAGIC):
        return npy_to_inputs(io.BytesIO(data), input_shape, name, pixel_range)
    if media and not media.startswith("image/") and media != "application/octet-stream":
        raise UnsupportedMedia(f"{name}: type {media!r} is not an image or a .npy array.")
    return image_file_to_inputs(data, input_shape, light_background, name, limits.max_pixels)


async def _multipart_files(request: Request, body: bytes, limits: Limits) -> list:
    async def stream():
        yield body

    parser = MultiPartParser(request.headers, stream(), max_files=limits.max_images, max_fields=100)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise DataError(f"malformed multipart body ({error}).") from None
    files = []
    for field, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.append((value.filename or field, await value.read(), value.content_type))
    await form.close()
    return files


def _json_files(body: bytes, input_shape) -> list:
    try:
        payload = PredictJSON.model_validate_json(body)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()
        )
        raise DataError(f"invalid JSON request ({problems}).") from None
    files: list[tuple[str, Any, str | None]] = []
    for i, text in enumerate(payload.images):
        encoded = text
        if text.startswith("data:"):
            _, comma, encoded = text.partition(",")
            if not comma:
                raise DataError(
                    f"images[{i}]: a data: URL without a comma; expected data:<type>;base64,<data>."
                )
        try:
            files.append((f"images[{i}]", base64.b64decode(encoded, validate=True), None))
        except (binascii.Error, ValueError):
            raise DataError(f"images[{i}]: not valid base64.") from None
    if payload.pixels is not None:
        try:
            array = np.asarray(payload.pixels)
        except (ValueError, TypeError):
            raise DataError("pixels: not a rectangular array of numbers.") from None
        files.append(("pixels", array, None))
    return files
