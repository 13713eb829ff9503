"""Which Keras backend a process uses, chosen before Keras is first imported (it reads the choice
once), and the one place convnet imports Keras on purpose.

No framework is imported here until `load` runs, so commands that need none (`--help`, `presets`,
`runs`, every refusal of bad input) never pay for one.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

from convnet.errors import ConfigError, ConvnetError

BACKENDS = ("tensorflow", "jax", "torch")
DEFAULT = "tensorflow"
_CPU_DEVICE_COUNT = "--xla_force_host_platform_device_count"
_quiet = False


class BackendError(ConvnetError):
    """The backend asked for cannot be used in this process."""


def select(backend: str | None = None, devices: int | None = None) -> str:
    """Chooses the Keras backend for this process, before Keras is imported.

    Args:
        backend: one of `BACKENDS`; None keeps $KERAS_BACKEND, else tensorflow.
        devices: data-parallel devices per process; with JAX on a CPU, asks XLA for that many CPU
            devices (only the CPU platform reads the flag, and only before JAX starts).

    Returns:
        The backend chosen.

    Raises:
        ConfigError: an unknown backend.
    """
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(
            f"backend must be one of {', '.join(BACKENDS)}. Received: backend={backend!r}."
        )
    chosen = backend or os.environ.get("KERAS_BACKEND") or DEFAULT
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = chosen
    flags = os.environ.get("XLA_FLAGS", "")
    several = isinstance(devices, int) and devices > 1
    if chosen == "jax" and several and _CPU_DEVICE_COUNT not in flags and "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = f"{flags} {_CPU_DEVICE_COUNT}={devices}".strip()
    return chosen


def quiet(enabled: bool = True) -> None:
    """Whether `load` drops what the frameworks' C++ code writes to stderr while they start.

    TensorFlow's oneDNN and absl lines are written before any of its log settings apply; the CLI
    asks for quiet unless `-v`. Library users keep their stderr untouched by default.
    """
    global _quiet
    _quiet = enabled


def load(backend: str | None = None, devices: int | None = None) -> str:
    """Imports Keras with the backend `select` chooses, and returns the backend's name.

    Raises:
        ConfigError: an unknown backend.
        BackendError: Keras was imported already with another backend, or the backend's
            framework is not installed.
    """
    wanted = select(backend, devices)
    if _quiet:  # and TensorFlow's own log lines after its start, below warnings
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _muted_stderr(_quiet):
        try:
            keras = importlib.import_module("keras")
            if keras.backend.backend() == "tensorflow":
                importlib.import_module("tensorflow")  # its start-up lines, muted with Keras'
        except ImportError as error:
            install = "convnet" if wanted == DEFAULT else f"'convnet[{wanted}]'"
            raise BackendError(
                f"the {wanted} backend cannot be imported ({error}); pip install {install}."
            ) from None
    actual = keras.backend.backend()
    if backend and actual != backend:
        raise BackendError(
            f"backend {backend} was asked for, but Keras was already imported with {actual}; "
            f"set KERAS_BACKEND={backend} before importing keras."
        )
    return actual


@contextlib.contextmanager
def _muted_stderr(enabled: bool):
    """Sends file descriptor 2 to /dev/null while the block runs, when `enabled`."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
