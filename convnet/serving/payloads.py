"""Reading a prediction request's body into model inputs, within limits.

A request is multipart files (images or `.npy` arrays) or JSON (`images`: base64 files,
`pixels`: raw 0-255 arrays). Images go through `convnet.inputs`, the same preprocessing as
`convnet predict`. Every problem is a `DataError` subclass carrying its HTTP status.

The body is read on the event loop; parsing and decoding it run in a worker thread, so one
heavy request cannot stall `/healthz` or the other requests.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import anyio
import numpy as np
from PIL import Image
from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request

from convnet.data.pixels import FULL_RANGE
from convnet.errors import DataError
from convnet.inputs import image_file_to_inputs, npy_to_inputs, pixels_to_inputs
from convnet.serving.multipart import multipart_files

NPY_MAGIC = b"\x93NUMPY"
ModelT = TypeVar("ModelT", bound=BaseModel)


class PayloadTooLarge(DataError):
    """The request is over the size or image-count limit (HTTP 413)."""

    status_code = 413


class RequestTimeout(DataError):
    """The request body did not arrive in time (HTTP 408)."""

    status_code = 408


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
        max_request_pixels: pixels of all the image files of one request together, read from
            their headers before any is decoded. Defaults to 100 million, about 1 s of decoding:
            a request of 200 blank 6000 x 6000 PNGs (1 MB) took 60 s. Raw arrays (`.npy`, JSON
            pixels) hold at most `max_bytes` values and are not counted.
        body_timeout: seconds for the whole body to arrive; slower clients get a 408. A
            deadline for the whole body rather than for each chunk, which a client sending a
            byte at a time would meet forever. Defaults to 30 (16 MiB then needs 4.5 Mbit/s).
    """

    max_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 36_000_000
    max_images: int = 16_384
    max_request_pixels: int = 100_000_000
    body_timeout: float = 30.0


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


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request body, refused as soon as it is known to exceed `limits.max_bytes`.

    Raises:
        PayloadTooLarge: the declared or received length is over the limit.
        RequestTimeout: the body took longer than `limits.body_timeout` seconds.
        ClientDisconnect: the client went away before sending the whole body.
    """
    max_bytes = limits.max_bytes
    declared = byte_count(request.headers.get("content-length", ""))
    if declared is not None and declared > max_bytes:
        raise PayloadTooLarge(f"request body of {declared:,} bytes; the limit is {max_bytes:,}.")
    chunks, size = [], 0
    try:
        with anyio.fail_after(limits.body_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"request body over the limit of {max_bytes:,} bytes.")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            f"request body incomplete after {limits.body_timeout:g} s ({size:,} bytes "
            "received); send the whole body at once."
        ) from None
    return b"".join(chunks)


def byte_count(text: str) -> int | None:
    """A header's count of bytes, or None if `text` is not one: 1 to 18 ASCII digits.

    Not `str.isdigit()`, which takes "²" that `int()` then refuses, nor `int()` alone, which
    takes " 1_0 " and "٣" and refuses over 4,300 digits; 18 digits already count an exabyte.
    """
    return int(text) if re.fullmatch(r"[0-9]{1,18}", text) else None


async def parse_request(
    request: Request,
    input_shape,
    light_background: bool,
    limits: Limits,
    pixel_range: str = FULL_RANGE,
    limiter: anyio.CapacityLimiter | None = None,
) -> tuple[list[str], np.ndarray]:
    """Names and uint8 model inputs (N, H, W, C) for every file or array in the request; arrays
    hold values in `pixel_range`, the training data's (`convnet.data.pixels`).

    Args:
        limiter: the worker threads that parse and decode bodies, shared by all requests; the
            ones waiting for a thread hold only their body. Defaults to anyio's (40 threads).

    Raises:
        DataError: (or a subclass) naming what is wrong.
    """
    content_type = request.headers.get("content-type", "")
    media = _media_type(content_type)
    if media not in ("multipart/form-data", "application/json"):
        raise UnsupportedMedia(
            f"content type {media or 'none'!r}; send multipart/form-data files or application/json."
        )
    body = await read_body(request, limits)
    decode = partial(
        decode_body, content_type, body, input_shape, light_background, limits, pixel_range
    )
    return await anyio.to_thread.run_sync(decode, limiter=limiter)


def decode_body(
    content_type: str,
    body: bytes,
    input_shape,
    light_background: bool,
    limits: Limits,
    pixel_range: str = FULL_RANGE,
) -> tuple[list[str], np.ndarray]:
    """`parse_request`'s work after the body has arrived; blocking, for a worker thread."""
    if _media_type(content_type) == "multipart/form-data":
        files = multipart_files(content_type, body)
    else:
        files = _json_files(body, input_shape)
    if not files:
        raise DataError("no images in the request; send at least one file, image or pixel array.")
    if len(files) > limits.max_images:
        raise PayloadTooLarge(f"over {limits.max_images:,} images in one request.")
    check_total_pixels(files, limits)
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


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def check_total_pixels(files: list, limits: Limits) -> None:
    """Refuses a request whose image files together decode into too many pixels.

    Raises:
        PayloadTooLarge: the sum of the images' width x height is over `max_request_pixels`.
    """
    counts = (_image_pixels(data) for _, data, _ in files if isinstance(data, bytes))
    # An image over max_pixels is left to decode_file, which refuses it by name.
    total = sum(n for n in counts if n <= limits.max_pixels)
    if total > limits.max_request_pixels:
        raise PayloadTooLarge(
            f"the images hold {total:,} pixels in all; the limit is "
            f"{limits.max_request_pixels:,} pixels per request."
        )


def _image_pixels(data: bytes) -> int:
    """Width x height from an image file's header (no decoding); 0 for other files."""
    if data.startswith(NPY_MAGIC):
        return 0
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.width * image.height
    except Exception:  # Pillow's many errors for a bad file; decode_file reports them by name
        return 0


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


def parse_json(schema: type[ModelT], body: bytes, what: str = "JSON request") -> ModelT:
    """`body` read as `schema`.

    Raises:
        DataError: "invalid {what} (...)", naming each field that is wrong and why.
    """
    try:
        return schema.model_validate_json(body)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()
        )
        raise DataError(f"invalid {what} ({problems}).") from None


def _json_files(body: bytes, input_shape) -> list:
    payload = parse_json(PredictJSON, body)
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
