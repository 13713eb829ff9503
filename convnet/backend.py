"""Which Keras backend a process uses, chosen before Keras is first imported (it reads the choice
once). No framework is imported here: `convnet.framework.load` imports Keras after the choice.
"""

from __future__ import annotations

import contextlib
import os
import sys

from convnet.errors import ConfigError

BACKENDS = ("tensorflow", "jax", "torch")
DEFAULT = "tensorflow"
# Keras writes a SavedModel only through TensorFlow, and ONNX on JAX needs jax2onnx, which cannot
# convert max-pooling; a run's model.keras is the same on every backend, so exports (and the
# ONNX engine, which exports) load it on TensorFlow.
EXPORT_BACKEND = "tensorflow"
# XLA's flag for several CPU devices in one process; read once, when JAX starts.
CPU_DEVICE_COUNT = "--xla_force_host_platform_device_count"


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
    if chosen == "jax" and several and CPU_DEVICE_COUNT not in flags and "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_DEVICE_COUNT}={devices}".strip()
    return chosen


@contextlib.contextmanager
def not_installed(*names: str, hidden: bool = True):
    """While the block runs, the packages `names` read as not installed, as on a machine
    without them: their import raises ImportError, so a library that imports one only to be
    thorough skips it. One imported already is left alone, and an import after the block works
    as usual.

    Keras seeds TensorFlow wherever it is installed, and TensorFlow (and Keras on torch, for its
    Orbax checkpoints) imports JAX wherever that is: a framework the process never uses, whose
    import took 1.6 s of a JAX training's start, 0.4 s of every TensorFlow command's and 0.8 s
    of every torch command's (`keras_recipe.seed_everything`, `framework.load`).
    """
    kept_out = [name for name in names if hidden and name not in sys.modules]
    for name in kept_out:
        sys.modules[name] = None
    try:
        yield
    finally:
        for name in kept_out:
            del sys.modules[name]
