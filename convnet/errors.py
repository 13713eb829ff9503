"""Errors a user can fix (the CLI prints their message on one line and exits 2), and warnings
(printed as `convnet: warning: ...`; the command goes on).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

# The packages whose frames a warning is not attributed to: convnet, and the libraries that call
# back into it (a Keras callback, an Optuna objective).
_OWN_FRAMES = ("convnet", "keras", "tensorflow", "jax", "torch", "optuna")
# Set while a command runs (`on_the_command_line`): its messages name settings as flags. An
# environment variable rather than a module global, so that the processes a command starts (a
# tune's workers) speak as it does.
COMMAND_LINE_ENV = "CONVNET_COMMAND_LINE"


class ConvnetError(Exception):
    """Base class for every error convnet raises on purpose."""


class DataError(ConvnetError, ValueError):
    """Input data is missing, unreadable or not what was expected."""


class ConfigError(ConvnetError, ValueError):
    """A configuration key or value is unknown or of the wrong type."""


class RunError(ConvnetError):
    """A run folder is missing, incomplete, or cannot be written."""


class DiskFull(RunError):
    """The disk of a run folder filled up; the run is left "interrupted", to resume once space is
    freed."""


class ExportError(ConvnetError):
    """A model could not be exported."""


class BackendError(ConvnetError):
    """The Keras backend asked for cannot be used in this process."""


class ConvnetWarning(UserWarning):
    """Something the user should know that does not stop the command; the CLI prints it as
    `convnet: warning: ...`."""


class DataMismatchWarning(ConvnetWarning):
    """Runs compared side by side were not trained or tested on the same data."""


class UnderTrainingWarning(ConvnetWarning):
    """A run makes fewer optimizer steps than its preset needs to learn
    (`convnet.models.registry.under_training`)."""


def warn(message: str, category: type[Warning]) -> None:
    """Issues a warning as the line of the user's code that led to it: in a notebook, Python
    shows the cell's `convnet.train(...)`, not a line of convnet's own, and counts it there.
    Where no such line is on the stack (a thread of convnet's), it names the caller."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in _OWN_FRAMES:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level if frame is not None else 2)


def setting(name: str, value: object = ...) -> str:
    """`name` set to `value` as the user writes it where they are: `--epochs 22` on the command
    line, `epochs=22` in Python; `--stream` and `stream=True`; without a value, `--epochs` and
    `epochs=...`."""
    if _on_the_command_line():
        flag = f"--{name.replace('_', '-')}"
        if value is ... or value is True:
            return flag
        return f"--no-{flag[2:]}" if value is False else f"{flag} {value}"
    return f"{name}={'...' if value is ... else repr(value)}"


def command(name: str, **settings: object) -> str:
    """The convnet command `name` with `settings` as the user runs it where they are:
    `convnet train --resume runs/a` on the command line, `convnet.train(resume='runs/a')` in
    Python."""
    if _on_the_command_line():
        return " ".join(["convnet", name, *(setting(k, v) for k, v in settings.items())])
    given = ", ".join(f"{k}={str(v)!r}" for k, v in settings.items())
    return f"convnet.{name}({given})"


def _on_the_command_line() -> bool:
    return os.environ.get(COMMAND_LINE_ENV) == "1"


@contextlib.contextmanager
def on_the_command_line() -> Iterator[None]:
    """While the block runs, messages name settings as command-line flags (`setting`)."""
    before = os.environ.get(COMMAND_LINE_ENV)
    os.environ[COMMAND_LINE_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(COMMAND_LINE_ENV, None)
        else:
            os.environ[COMMAND_LINE_ENV] = before
