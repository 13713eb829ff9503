"""What this machine and this install are, for run manifests and benchmarks, and the process's
own resources. No framework import."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("convnet", "keras", "tensorflow-cpu", "tensorflow", "jax", "torch", "numpy")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (Linux), or an empty set where they cannot be read."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.partition(":")[2].split())
    return set()


def cpu_name(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def process_seconds() -> float | None:
    """Seconds since this process started, by the kernel's clock (Linux); None elsewhere.

    Unlike a clock started in Python, it counts the interpreter's start and every import.
    """
    try:
        stat = Path("/proc/self/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError):
        return None
    # Field 22, start time in clock ticks after boot; fields are counted after the name's ")".
    started = int(stat.rpartition(")")[2].split()[19]) / os.sysconf("SC_CLK_TCK")
    return max(uptime - started, 0.0)


def machine() -> dict:
    """What this machine is: training time depends on it more than on anything else (an epoch of
    `best` takes 23 s to 220 s on 2 cores, by CPU: docs/benchmarks.md, bench.time_to_accuracy)."""
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "hostname": platform.node(),
    }


def versions(backend: str | None = None) -> dict:
    """Python's version, the Keras backend, and the versions of the packages that shape a run."""
    found = {"python": sys.version.split()[0], "keras_backend": backend}
    for package in PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def trim_heap() -> None:
    """Hands the pages the C heap holds free back to the system: glibc's `malloc_trim`, where
    the C library has it. glibc keeps what a model call frees in its arenas, and over the 96
    calls of 2 million streamed test images the process grew by 55 MB that way; trimmed after
    each call, the run's peak was 1,179 MB, not 1,207 (bench.scale_stages, 8 GB)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _c_library():
    library = ctypes.CDLL(None)
    return library if hasattr(library, "malloc_trim") else None


_LIBC = _c_library()
