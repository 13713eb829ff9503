"""Writing predictions as they are made: CSV, JSON lines, or a Kaggle submission.

A file is written under a temporary name beside `out` and renamed into place when every input
has a row, so `out` is either absent or complete: a batch job that dies, or a Ctrl-C, never
leaves a half file that a later step could take for the whole (the temporary file is removed).
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import sys
import typing
from pathlib import Path

from convnet.errors import ConfigError
from convnet.files import replace_durably

FORMATS = ("csv", "jsonl", "kaggle")
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def top_classes(name: str, probabilities, class_names: list[str] | None, top_k: int) -> dict:
    """The `top_k` most probable classes for one input.

    Returns:
        {"file": name, "class", "probability" (of the most probable), "top": [{"class",
        "probability"}, ...]}.
    """
    class_names = class_names or [str(i) for i in range(len(probabilities))]
    order = probabilities.argsort()[::-1][:top_k]
    top = [{"class": class_names[i], "probability": float(probabilities[i])} for i in order]
    return {"file": name, **top[0], "top": top}


def output_format(out: str | Path | None, format: str | None) -> str | None:
    """The format asked for, else the one `out`'s extension names; None for plain text on
    stdout (no `out`, no format).

    Raises:
        ConfigError: an unknown format, or an `out` whose extension names none.
    """
    if format is not None:
        if format not in FORMATS:
            raise ConfigError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}.")
        return format
    if out is None:
        return None
    if Path(out).is_dir():
        raise ConfigError(f"{out}: a folder; expected a file name for the predictions.")
    suffix = Path(out).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ConfigError(
            f"{out}: cannot tell the format from {suffix or 'no extension'!r}; name it .csv or "
            ".jsonl, or pass --format csv|jsonl|kaggle."
        )
    return _SUFFIXES[suffix]


class PredictionWriter:
    """Writes one row per input to `out` (atomically, see the module) or to stdout.

    Rows are `top_classes` dicts, or {"file", "error"} for an input that could
    not be read. The CSV has columns file, class, probability, then class_2, probability_2, ...
    up to `top_k`, then error (empty but for unreadable files). Kaggle's has ImageId (the 1-based
    row of the test CSV) and Label: the class as the training data wrote it, its name when names
    are numbers (digits), else its index (Fashion-MNIST's 0-9).

    Raises:
        ConfigError: on opening, when `out` cannot be written (a folder, no permission).
    """

    def __init__(
        self,
        out: str | Path | None,
        format: str | None,
        top_k: int = 3,
        class_names: list[str] | None = None,
    ):
        self.out, self.format, self.top_k = (Path(out) if out else None), format, top_k
        self.class_names = list(class_names or [])
        self.rows = 0
        self._tmp: Path | None = None
        self._file: typing.TextIO = sys.stdout
        if self.out is not None:
            self._open()
        self._csv = csv.writer(self._file, lineterminator="\n")
        if format == "csv":
            ranks = range(2, top_k + 1)
            columns = [name for k in ranks for name in (f"class_{k}", f"probability_{k}")]
            self._csv.writerow(["file", "class", "probability", *columns, "error"])
        elif format == "kaggle":
            self._csv.writerow(["ImageId", "Label"])

    def _open(self) -> None:
        if self.out.is_dir():
            raise ConfigError(f"{self.out}: a folder; expected a file name for the predictions.")
        self._tmp = self.out.with_name(f".{self.out.name}.{secrets.token_hex(4)}.tmp")
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as error:
            raise ConfigError(f"{self.out}: cannot write ({error.strerror or error}).") from None
        self._file = os.fdopen(fd, "w", newline="", encoding="utf-8")

    def write(self, row: dict) -> None:
        """Writes one input's row (nothing without a format: the caller shows the rows)."""
        self.rows += 1
        if self.format is None:
            return
        if self.format == "jsonl":
            self._file.write(json.dumps(row) + "\n")
        elif self.format == "kaggle":
            self._csv.writerow([self.rows, self._label(row["class"])])
        elif "error" in row:
            self._csv.writerow([row["file"], "", "", *[""] * (2 * self.top_k - 2), row["error"]])
        else:
            others = [value for t in row["top"][1:] for value in (t["class"], t["probability"])]
            padding = [""] * (2 * self.top_k - 2 - len(others))  # fewer classes than top_k
            self._csv.writerow([row["file"], row["class"], row["probability"], *others, *padding])

    def flush(self) -> None:
        """Passes the rows written so far on to the file (after each batch: a reader of the
        temporary file, or of stdout, sees progress)."""
        self._file.flush()

    def _label(self, name: str):
        return name if name.isdigit() else self.class_names.index(name)

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if self._tmp is None:
            self.flush()
            return
        try:
            self._file.close()
            if kind is None:
                replace_durably(self._tmp, self.out)
        finally:
            self._tmp.unlink(missing_ok=True)
