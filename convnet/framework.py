"""Importing Keras, with the backend `convnet.backend.select` chose: the one place convnet imports
it on purpose. Entry points call `load` once they have checked their input, so a refusal of bad
input never waits for a framework.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import sys

from convnet import backend as backends
from convnet.errors import BackendError

_quiet = False


def quiet(enabled: bool = True) -> None:
    """Whether `load` drops what the frameworks' C++ code writes to stderr while they start.

    TensorFlow's oneDNN and absl lines are written before any of its log settings apply; the CLI
    asks for quiet unless `-v`. Library users keep their stderr untouched by default.
    """
    global _quiet
    _quiet = enabled


def load(backend: str | None = None, devices: int | None = None) -> str:
    """Imports Keras with the backend `convnet.backend.select` chooses; returns its name.

    Raises:
        ConfigError: an unknown backend.
        BackendError: Keras was imported already with another backend, or the backend's
            framework is not installed.
    """
    wanted = backends.select(backend, devices)
    if platform.machine().lower() in ("x86_64", "amd64"):
        # TensorFlow turns its oneDNN kernels on by itself only where the CPU has AVX-512 VNNI,
        # bfloat16 or AMX; elsewhere (AVX2 alone) its own convolutions made a `fast` training
        # step 1.5x slower (docs/benchmarks.md). A value the user set wins.
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if _quiet:  # and TensorFlow's own log lines after its start, below warnings
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _muted_stderr(_quiet):
        try:
            import keras

            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                # Finding the devices now logs the CUDA build's "failed call to cuInit" (no GPU)
                # here, muted, rather than at the first operation.
                tf.config.list_physical_devices()
        except ImportError as error:
            install = "convnet" if wanted == backends.DEFAULT else f"'convnet[{wanted}]'"
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


def load_for_run(recorded: str | None) -> str:
    """Imports Keras to read a run trained on the `recorded` backend.

    A run's model.keras reads on every backend, so the recorded one is a preference: Keras
    already imported, or $KERAS_BACKEND, wins; a recorded backend that is not installed here
    gives way to the default.
    """
    if "keras" in sys.modules or os.environ.get("KERAS_BACKEND") or recorded is None:
        return load()
    if importlib.util.find_spec(recorded) is None:
        return load(backends.DEFAULT)
    return load(recorded)


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
