"""Writing predictions as they are made: CSV, JSON lines, or a Kaggle submission.

A file is written under a temporary name beside `out` and renamed into place when every input
has a row, so `out` is either absent or complete: a batch job that dies, or a Ctrl-C, never
leaves a half file that a later step could take for the whole (the temporary file is removed;
one left by a killed process is removed by the next writer of `out`). `-`, a FIFO or a character
device (`/dev/stdout`, a terminal) is written as a stream instead: nothing there is replaced.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import stat
import sys
import typing
from pathlib import Path

from convnet.errors import ConfigError, setting
from convnet.files import atomic_file, remove_stale_temporaries, special_kind

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
    """The format asked for, else the one `out`'s extension names, else CSV for a stream
    without one (`-`, `/dev/stdout`, a FIFO); None for plain text on stdout (no `out`, no
    format).

    Raises:
        ConfigError: an unknown format, or a file's name whose extension names none.
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
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    if not suffix and _is_stream(out):
        return "csv"
    named = f"its extension {suffix!r}" if suffix else "a name without an extension"
    raise ConfigError(
        f"{out}: cannot tell the format from {named}; name it .csv or .jsonl, or pass "
        f"{setting('format')} (csv, jsonl or kaggle)."
    )


def _is_stream(out: str | Path) -> bool:
    """Whether `out` is stdout (`-`), or an existing FIFO or character device."""
    if str(out) == "-":
        return True
    try:
        return _streams(os.stat(out).st_mode)
    except OSError:
        return False


def _streams(mode: int) -> bool:
    """Whether a file of `mode` is written as a stream: a FIFO or a character device."""
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


# OWASP's CSV injection guidance: a spreadsheet runs a cell that starts with one of these as a
# formula (`=cmd|' /C calc'!A0`, a file name is anyone's to choose); a leading ' makes it text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Rows with any text the file system gave (names that are not UTF-8 arrive as surrogates).
_TEXT = {"encoding": "utf-8", "errors": "backslashreplace", "newline": ""}


def spreadsheet_safe(value):
    """`value`, with a `'` before it when it is text a spreadsheet would take for a formula."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


class PredictionWriter:
    """Writes one row per input to `out` (atomically, see the module), to a stream, or to stdout.

    Rows are `top_classes` dicts, or {"file", "error"} for an input that could
    not be read. The CSV has columns file, class, probability, then class_2, probability_2, ...
    up to `top_k`, then error (empty but for unreadable files), in every row. Kaggle's has ImageId
    (the 1-based row of the test CSV) and Label: the class as the training data wrote it, its
    name when names are numbers (digits), else its index (Fashion-MNIST's 0-9). CSV is written
    in the csv module's default dialect (CRLF ends a row; a cell holding a comma, a quote, CR or
    LF is quoted), and text cells that start as a formula would are prefixed with `'`.

    Every `flush_every` rows (a batch of predictions), the rows are passed on to the file: a
    reader of the temporary file, of stdout or of a FIFO sees them as they come.

    Attributes:
        stream: True when the rows go to a stream (`-` or no `out`: stdout; a FIFO, a character
            device) rather than to a file renamed into place.

    Raises:
        ConfigError: on opening, when `out` cannot be written (a folder, no permission), or is a
            symbolic link to a file (the link is not replaced), a block device or a socket.
    """

    def __init__(
        self,
        out: str | Path | None,
        format: str | None,
        top_k: int = 3,
        class_names: list[str] | None = None,
        flush_every: int = 1,
    ):
        self.out, self.format, self.top_k = (Path(out) if out else None), format, top_k
        self.flush_every = flush_every
        self.class_names = list(class_names or [])
        self.rows = 0
        self.stream = True
        self._opened = contextlib.ExitStack()
        self._file: typing.TextIO = sys.stdout
        try:
            if self.out is not None and str(self.out) != "-":
                self._file = self._open(self.out)
            self._csv = csv.writer(self._file)
            if format == "csv":
                ranks = range(2, top_k + 1)
                columns = [name for k in ranks for name in (f"class_{k}", f"probability_{k}")]
                self._write_row(["file", "class", "probability", *columns, "error"])
            elif format == "kaggle":
                self._write_row(["ImageId", "Label"])
        except BaseException as error:  # the temporary file goes, whatever stopped us
            self._opened.__exit__(type(error), error, error.__traceback__)
            raise

    def _open(self, out: Path) -> typing.TextIO:
        """A stream for stdout, a FIFO or a character device; else a new file, atomically."""
        try:
            found = out.stat()  # through a link: a link to a FIFO is written through
        except FileNotFoundError:
            found = None
        except OSError as error:
            raise ConfigError(f"{out}: cannot write ({error.strerror or error}).") from None
        if found and _is_stdout(found):  # /dev/stdout, or the file stdout is redirected to
            return sys.stdout
        if found and _streams(found.st_mode):
            return self._opened.enter_context(_open_stream(out))
        if found and stat.S_ISDIR(found.st_mode):
            raise ConfigError(f"{out}: a folder; expected a file name for the predictions.")
        if out.is_symlink():
            raise ConfigError(
                f"{out}: a symbolic link; refusing to replace the link with the predictions: "
                f"name the file it points to, {os.path.realpath(out)}, or remove the link."
            )
        if found and not stat.S_ISREG(found.st_mode):
            raise ConfigError(
                f"{out}: {special_kind(found.st_mode)}; expected a file name for the "
                "predictions, a FIFO, a character device or -."
            )
        self.stream = False
        remove_stale_temporaries(out)
        try:
            return self._opened.enter_context(atomic_file(out, "w", **_TEXT))
        except OSError as error:
            raise ConfigError(f"{out}: cannot write ({error.strerror or error}).") from None

    def write(self, row: dict) -> None:
        """Writes one input's row (nothing without a format: the caller shows the rows)."""
        self.rows += 1
        if self.format is None:
            return
        if self.format == "jsonl":
            with self._naming_failures():
                self._file.write(json.dumps(row) + "\n")
        elif self.format == "kaggle":
            self._write_row([self.rows, self._label(row["class"])])
        elif "error" in row:
            self._write_row([row["file"], "", "", *[""] * (2 * self.top_k - 2), row["error"]])
        else:
            others = [value for t in row["top"][1:] for value in (t["class"], t["probability"])]
            padding = [""] * (2 * self.top_k - 2 - len(others))  # fewer classes than top_k
            self._write_row([row["file"], row["class"], row["probability"], *others, *padding, ""])
        if self.rows % self.flush_every == 0:
            self.flush()

    def _write_row(self, cells: list) -> None:
        with self._naming_failures():
            self._csv.writerow([spreadsheet_safe(cell) for cell in cells])

    def flush(self) -> None:
        """Passes the rows written so far on to the file."""
        with self._naming_failures():
            self._file.flush()

    @contextlib.contextmanager
    def _naming_failures(self) -> typing.Iterator[None]:
        """A write that fails (a full disk, a FIFO's reader gone) as one line naming `out`; on
        stdout, a reader gone (`| head`) is a BrokenPipeError, which the CLI ends on quietly."""
        try:
            yield
        except BrokenPipeError:
            if self._file is not sys.stdout:
                raise ConfigError(f"{self.out}: cannot write (its reader has gone).") from None
            raise
        except OSError as error:
            raise ConfigError(
                f"{self.out or 'stdout'}: cannot write ({error.strerror or error})."
            ) from None

    def _label(self, name: str):
        return name if name.isascii() and name.isdigit() else self.class_names.index(name)

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        """Publishes the file when every row is in (`kind` is None); else removes it."""
        with self._naming_failures():  # renaming the file into place, closing a stream
            if kind is None and self._file is sys.stdout:
                self._file.flush()
            self._opened.__exit__(kind, error, traceback)


def _is_stdout(found: os.stat_result) -> bool:
    """Whether `found` is the file this process's stdout writes to."""
    try:
        return os.path.samestat(found, os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError):  # no stdout, or one without a descriptor
        return False


@contextlib.contextmanager
def _open_stream(out: Path) -> typing.Iterator[typing.TextIO]:
    """`out`, a FIFO or a character device, opened to write: neither created nor truncated, so a
    file put there since it was looked at is refused rather than overwritten. Opening a FIFO
    waits for its reader, as a shell's `>` does."""
    try:
        fd = os.open(out, os.O_WRONLY)
    except OSError as error:
        raise ConfigError(f"{out}: cannot write ({error.strerror or error}).") from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
        os.close(fd)
        raise ConfigError(f"{out}: changed while it was opened; run the command again.")
    with os.fdopen(fd, "w", **_TEXT) as file:
        yield file
