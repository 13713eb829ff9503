"""What `--precision auto` computes in: what the device at hand computes natively.

- A GPU of compute capability 8.0 or more (NVIDIA Ampere and later) computes bfloat16 natively:
  mixed_bfloat16, which needs no loss scaling.
- An older GPU with tensor cores (7.x, Volta and Turing): mixed_float16. Keras wraps the optimizer
  in a `LossScaleOptimizer` for this policy when the model is compiled, so small gradients do not
  underflow.
- A GPU below 7.0, or one whose capability is not reported: float32 (float16 is no faster there).
- A CPU with AMX or AVX-512 BF16, with the TensorFlow backend, whose oneDNN kernels compute
  bfloat16 natively: mixed_bfloat16. Other CPUs, and the JAX and torch backends' CPU kernels
  (not known to gain from it): float32.

`choose_precision` is the rule, a pure function; `resolve_precision` asks the backend which device
it has. Tests fake the device, since no GPU is at hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from convnet.errors import ConfigError
from convnet.machine import cpu_flags
from convnet.models.recipe import PRECISIONS

BFLOAT16_CPU_FLAGS = {"amx_bf16", "avx512_bf16"}


@dataclass(frozen=True)
class Accelerator:
    """The first accelerator the backend trains on.

    Attributes:
        name: the device's name, for the manifest.
        compute_capability: (major, minor) for CUDA GPUs; None where not reported.
    """

    name: str
    compute_capability: tuple[int, int] | None = None


def choose_precision(
    precision: str, backend: str, accelerator: Accelerator | None, flags: set[str]
) -> str:
    """`precision`, with "auto" resolved by the rule in this module's docstring.

    Raises:
        ConfigError: `precision` is not one of `PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision must be one of {', '.join(PRECISIONS)}. Received: {precision!r}."
        )
    if precision != "auto":
        return precision
    if accelerator is not None:
        capability = accelerator.compute_capability
        if capability is None or capability < (7, 0):
            return "float32"
        return "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16"
    if backend == "tensorflow" and flags & BFLOAT16_CPU_FLAGS:
        return "mixed_bfloat16"
    return "float32"


def find_accelerator(backend: str) -> Accelerator | None:
    """The backend's first GPU, or None when it trains on the CPU."""
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        details = tf.config.experimental.get_device_details(gpus[0])
        return Accelerator(
            details.get("device_name", gpus[0].name), details.get("compute_capability")
        )
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform not in ("gpu", "cuda", "rocm"):
            return None
        capability = getattr(device, "compute_capability", None)
        major, _, minor = str(capability or "").partition(".")
        numbers = (int(major), int(minor or 0)) if major.isascii() and major.isdigit() else None
        return Accelerator(device.device_kind, numbers)
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return None
        return Accelerator(torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
    return None


def resolve_precision(precision: str) -> str:
    """`precision`, with "auto" resolved for the device Keras' backend trains on."""
    import keras

    if precision != "auto":
        return choose_precision(precision, "", None, set())
    backend = keras.backend.backend()
    return choose_precision(precision, backend, find_accelerator(backend), cpu_flags())
