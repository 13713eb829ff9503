"""Reading the files of a whole `multipart/form-data` body, refusing a truncated one.

Synchronous, so a worker thread can parse while the event loop answers other requests: on two
cores Starlette's async parser held the loop for 0.6 s on a body of 16,384 small parts. A body
must end with its closing boundary `--BOUNDARY--`; python-multipart calls `on_end` only there,
and parts cut short are otherwise dropped without a word.
"""

from __future__ import annotations

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from convnet.errors import DataError


class MalformedBody(DataError):
    """The request body is not what its Content-Type says (HTTP 400)."""

    status_code = 400


class _Parts:
    """python-multipart's callbacks, gathering each part that has a file name."""

    def __init__(self):
        self.files: list[tuple[str, bytes, str | None]] = []
        self.ended = False
        self._headers: dict[bytes, bytes] = {}
        self._field = self._value = b""
        self._part: tuple[str, bytearray, str | None] | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._headers.clear,
            "on_header_field": self._on_field,
            "on_header_value": self._on_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }

    def _on_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        if b"filename" not in options:  # a form field, which the service ignores
            self._part = None
            return
        name = (options[b"filename"] or options.get(b"name") or b"file").decode("utf-8", "replace")
        media = self._headers.get(b"content-type", b"").decode("latin-1").strip() or None
        self._part = (name, bytearray(), media)

    def _on_data(self, data: bytes, start: int, end: int) -> None:
        if self._part is not None:
            self._part[1].extend(data[start:end])

    def _on_part_end(self) -> None:
        if self._part is not None:
            name, data, media = self._part
            self.files.append((name, bytes(data), media))
            self._part = None

    def _on_end(self) -> None:
        self.ended = True


def multipart_files(content_type: str, body: bytes) -> list:
    """The (file name, bytes, media type) of each file part of a whole multipart body.

    Args:
        content_type: the request's Content-Type header, holding the boundary.
        body: the whole request body.

    Raises:
        MalformedBody: no boundary, a malformed body, or one cut before its closing boundary.
    """
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise MalformedBody(
            "multipart/form-data without a boundary; expected a Content-Type like "
            "'multipart/form-data; boundary=...'."
        )
    parts = _Parts()
    try:
        MultipartParser(boundary, parts.callbacks()).write(body)
    except FormParserError as error:
        raise MalformedBody(f"malformed multipart body ({error}).") from None
    if not parts.ended:
        closing = "--" + boundary.decode("latin-1") + "--"
        raise MalformedBody(
            f"truncated multipart body: it ends before the closing boundary {closing!r}; "
            "send the whole body."
        )
    return parts.files
