"""Importing Keras, with the backend `convnet.backend.select` chose: the one place convnet imports
it on purpose. Entry points call `load` once they have checked their input, so a refusal of bad
input never waits for a framework.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import platform
import sys

from convnet import backend as backends
from convnet.errors import BackendError
from convnet.files import cache_dir

_quiet: bool | None = None  # None: as the user's TF_CPP_MIN_LOG_LEVEL says, else quiet
_lean = False

# What Keras imports only for features convnet never asks of it: scikit-learn (and SciPy's
# statistics with it) for its scikit-learn wrappers, matplotlib for its image gallery, pandas for
# DataFrame inputs (a command gives it arrays), IPython to tell a notebook in its file editor.
# Without pandas and IPython too, `convnet summary seed` took 2.00 s instead of 2.15 on
# TensorFlow, 1.07 instead of 1.35 on JAX, 2.02 instead of 2.31 on torch (Intel Xeon AMX, 3 runs
# each). Not requests: TensorFlow's own import needs it.
KERAS_EXTRAS = ("sklearn", "matplotlib", "pandas", "IPython")
# JAX compiles a model's functions anew in each process, unless a cache on disk keeps them. It
# keeps every compilation, the smallest too: for a `best` run, 32 entries instead of the 13 that
# take over 0.1 s. A second identical `best` training then took 8.8 s instead of 9.4 (16.1 s with
# no cache), and `evaluate` of the run 2.9 s instead of 3.2; the first training took no longer
# (Intel Xeon AMX, 2 cores).
XLA_CACHE_MIN_SECONDS = 0.0
XLA_CACHE_MAX_BYTES = 256 * 2**20  # then the least recently used entries go


def quiet(enabled: bool | None = True) -> None:
    """Whether `load` hides what the frameworks' C++ code writes to stderr while they start.

    TensorFlow writes its oneDNN, CUDA and absl lines (`I0000 ... oneDNN custom operations are
    on`, `E0000 ... failed call to cuInit`) before its log settings apply, so hiding them means
    sending file descriptor 2 to /dev/null while `load` imports it (in Jupyter, fd 2 reaches the
    notebook). They are hidden by default, in Python as on the command line, unless you set
    TF_CPP_MIN_LOG_LEVEL=0; a call here decides over both. An error importing the framework
    still reaches you: BackendError, with its message.

    Args:
        enabled: True hides the lines, False shows them (`convnet -v`), None leaves it to
            TF_CPP_MIN_LOG_LEVEL as before any call. Defaults to True.

    Example:
        >>> convnet.framework.quiet(False)  # before the first `convnet.train`
    """
    global _quiet
    _quiet = enabled


def lean(enabled: bool = True) -> None:
    """Whether `load` imports Keras without `KERAS_EXTRAS`, the libraries it imports only for
    features convnet does not use: 1.2 s of the 4.1 s a TensorFlow command took to import Keras
    (Intel Xeon AMX; what it gives a command: docs/benchmarks.md, bench.cli_latency).

    The command line turns it on: its processes run convnet alone, and a command that draws
    plots imports matplotlib when it draws them. In Python it stays off, so the Keras you use
    beside convnet keeps its scikit-learn wrappers and image gallery.

    A lean process also moves what the import made into the collector's permanent generation
    (`gc.freeze`), which is never scanned: modules, classes and functions that live as long as
    the process. Each full collection otherwise walked them all again.
    """
    global _lean
    _lean = enabled


def _hides_startup() -> bool:
    """Whether `load` hides the frameworks' start-up lines: see `quiet`."""
    if _quiet is not None:
        return _quiet
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip() != "0"


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
        # step 1.5x slower (docs/benchmarks.md, bench.peer_step). A value the user set wins.
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    hide = _hides_startup()
    if hide:  # and TensorFlow's own log lines after its start, below errors; a level set wins
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    imported = "keras" in sys.modules
    with _muted_stderr(hide), _collector_paused():
        try:
            unused = () if wanted == "jax" else ("jax",)
            with backends.not_installed(*unused, *(KERAS_EXTRAS if _lean else ())):
                import keras

            if keras.backend.backend() == "jax":
                _cache_jax_compilations()
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
    if _lean and not imported:  # once: later, what a command made would be frozen with it
        gc.freeze()
    actual = keras.backend.backend()
    if backend and actual != backend:
        raise BackendError(
            f"backend {backend} was asked for, but Keras was already imported with {actual}; "
            f"set KERAS_BACKEND={backend} before importing keras."
        )
    return actual


@contextlib.contextmanager
def _collector_paused():
    """No garbage collection while the frameworks import. Their 300,000 objects are nearly all
    kept (modules, classes, functions), yet the allocations made Python walk them in 5 full
    collections, which found 1,858 objects to free: 0.28 s of `convnet evaluate`'s 2.6 s. With
    this and `gc.freeze` (`lean`), `evaluate` took 2.66 s instead of 2.90 and a 1-epoch training
    5.13 s instead of 5.67 (Intel Xeon AMX; docs/benchmarks.md, bench.cli_latency)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _cache_jax_compilations() -> None:
    """Keeps JAX's compiled code in `~/.cache/convnet/xla` for the next process, unless a cache
    folder is set already (`$JAX_COMPILATION_CACHE_DIR`, or `jax.config` before convnet)."""
    import jax

    if jax.config.jax_compilation_cache_dir is not None:
        return
    jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", XLA_CACHE_MIN_SECONDS)
    with contextlib.suppress(AttributeError):  # JAX before the option keeps all it caches
        jax.config.update("jax_compilation_cache_max_size", XLA_CACHE_MAX_BYTES)


def planned(backend: str | None = None, devices: int | None = None) -> str:
    """The backend `load(backend, devices)` runs Keras on, before it is imported: Keras' own once
    it is, else the one `convnet.backend.select` chooses."""
    keras = sys.modules.get("keras")
    return keras.backend.backend() if keras else backends.select(backend, devices)


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


def startup_lines_hidden():
    """A block in which the frameworks' C++ lines are hidden as while they start (`quiet`), for
    steps that write more of them, such as TensorFlow's LiteRT converter."""
    return _muted_stderr(_hides_startup())


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
