"""Data-parallel training on several devices and hosts, on the backend's own distributed engine.

JAX: `jax.distributed.initialize` joins the processes (one per host), then
`keras.distribution.DataParallel` replicates the model over every device of every process; each
process feeds its own shard and gradients are all-reduced (gloo on CPU, NCCL on GPU). TensorFlow
keeps `tf.distribute.MirroredStrategy` on one host (Keras 3 cannot fit under
`MultiWorkerMirroredStrategy`). The global batch and learning rate stay as configured. Process 0
writes the run folder; the others write to a scratch folder removed at exit, so every process runs
the same trainer code (collectives must be entered by all). The torch backend trains on one
device. `convnet.backend.select` chooses the backend before Keras is imported; `setup` starts
training.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass

import keras
import numpy as np

from convnet import topology
from convnet.backend import CPU_DEVICE_COUNT
from convnet.data.dataset import Dataset
from convnet.errors import ConfigError
from convnet.models.factory import load_model
from convnet.topology import DistributedError


@dataclass
class Context:
    """Where this process stands in a training job, and the hooks the trainer calls.

    Attributes:
        backend: the Keras backend.
        num_processes: processes in the job (one per host, usually).
        process_id: this process's rank; 0 is the chief, which writes the run folder.
        devices: data-parallel devices used by each process.
        device_kind: "cpu", "gpu", ...
        coordinator: HOST:PORT of process 0's coordination service, when several processes.
        engine: the distribution in use, or None for plain single-device training.
    """

    backend: str
    num_processes: int = 1
    process_id: int = 0
    devices: int = 1
    device_kind: str = "cpu"
    coordinator: str | None = None
    engine: str | None = None

    @property
    def is_chief(self) -> bool:
        return self.process_id == 0

    def topology(self) -> dict:
        """What the manifest records about the job's shape."""
        names = ("backend", "device_kind", "engine", "coordinator")
        return (
            {"processes": self.num_processes, "devices_per_process": self.devices}
            | {"devices": self.num_processes * self.devices}
            | {name: getattr(self, name) for name in names}
        )

    def local_batch(self, global_batch: int) -> int:
        """The batch this process feeds `fit`: its share of the global batch.

        Raises:
            ConfigError: the global batch does not split evenly over the devices.
        """
        total = self.num_processes * self.devices
        if global_batch % total:
            raise ConfigError(
                f"batch_size must be divisible by the {total} devices ({self.num_processes} "
                f"process(es) x {self.devices}). Received: batch_size={global_batch}."
            )
        return global_batch // self.num_processes

    def check_recipe(self, recipe) -> None:
        """Refuses a recipe this job cannot train: a global batch that does not split evenly over
        the devices, or a time budget over several processes (each would plan its own epochs).

        Raises:
            ConfigError: saying which, and what to set instead.
        """
        self.local_batch(recipe.batch_size)
        if recipe.time_budget and self.num_processes > 1:
            raise ConfigError(
                "time_budget works in one process: each process would plan its own epochs. "
                "Set --time-budget 0 and --epochs instead."
            )

    def shard(self, data: Dataset | None) -> Dataset | None:
        """This process's equal share of `data` (every process must run as many steps).

        Each share is trimmed to a multiple of the devices per process, so even the last, partial
        batch splits evenly over the devices. Streamed data stays in its files: the share is a
        view of its rows, and this process reads those alone.
        """
        if data is None or self.engine is None:
            return data
        per_process = len(data) // self.num_processes
        per_process -= per_process % self.devices
        if per_process == 0:
            raise ConfigError(
                f"{data.source}: {len(data)} examples cannot be shared by "
                f"{self.num_processes * self.devices} devices."
            )
        stop = per_process * self.num_processes
        return data.take(np.arange(self.process_id, stop, self.num_processes))

    def out(self, out: str | None) -> str | None:
        """The run folder to create: the chief's own, a scratch folder for the others."""
        if self.is_chief:
            return out
        scratch = tempfile.mkdtemp(prefix=f"convnet-process{self.process_id}-")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        return os.path.join(scratch, "run")

    def finish(self, model):
        """Ends the distribution after `fit`; returns a model that predicts and saves locally.

        JAX variables span every process's devices and predictions spanning other processes
        cannot be fetched: a `.keras` round trip (which keeps the optimizer) makes a local copy.
        """
        if self.backend == "jax" and self.engine:
            with tempfile.TemporaryDirectory(prefix="convnet-") as scratch:
                path = os.path.join(scratch, "model.keras")
                model.save(path)
                keras.distribution.set_distribution(None)
                model = load_model(path, safe_mode=False)  # our own file
        elif self.engine:
            import tensorflow as tf

            tf.distribute.experimental_set_strategy(None)
        return model


def setup(config, resume: bool = False) -> Context:
    """Joins the processes and installs the distribution the config asks for.

    `convnet.topology` reads the settings: from the config, else from the environment or a
    SLURM, Open MPI or Kubernetes job (JAX only).

    Args:
        config: a TrainConfig (backend, devices, num_processes, process_id, coordinator,
            join_timeout).
        resume: the run continues an earlier one (one process only).

    Returns:
        The Context whose hooks the trainer calls.

    Raises:
        DistributedError: the backend cannot do what was asked, or a process did not join
            within `config.join_timeout` seconds.
        ConfigError: inconsistent settings.
    """
    backend = keras.backend.backend()
    num_processes, process_id, coordinator, several = topology.check(config, backend, resume)
    if backend == "jax":
        context = _setup_jax(config, num_processes, process_id, coordinator, several)
    elif backend == "tensorflow":
        context = _setup_tensorflow(config.devices or 1)
    else:
        context = Context(backend)
    context.check_recipe(config.recipe())  # fails before any folder is made
    return context


def _setup_jax(config, num_processes, process_id, coordinator, several: bool) -> Context:
    import jax

    if several:
        _join(jax, coordinator, num_processes, process_id, config.join_timeout)
    local = jax.local_devices()
    wanted = config.devices or (len(local) if several else 1)
    if wanted > len(local):
        raise DistributedError(
            f"--devices {wanted}: this process sees {len(local)} {local[0].platform} device(s). "
            f"For CPU devices set XLA_FLAGS={CPU_DEVICE_COUNT}={wanted} before JAX is imported "
            "(the convnet command does this)."
        )
    context = Context(
        "jax",
        jax.process_count(),
        jax.process_index(),
        wanted,
        local[0].platform,
        coordinator if several else None,
    )
    if context.num_processes == 1 and wanted == 1:
        return context
    chosen = [
        device
        for rank in range(context.num_processes)
        for device in [d for d in jax.devices() if d.process_index == rank][:wanted]
    ]
    distribution = keras.distribution.DataParallel(devices=chosen)
    distribution.auto_shard_dataset = False  # each process feeds its own shard
    keras.distribution.set_distribution(distribution)
    context.engine = "keras.distribution.DataParallel"
    return context


def _join(jax, coordinator: str | None, num_processes, process_id, timeout: int) -> None:
    """`jax.distributed.initialize`, failing with a message a user can act on.

    When peers do not join in time, jaxlib aborts the whole process (LOG(FATAL), exit 134)
    instead of raising. A watchdog, armed for `timeout` seconds while JAX waits a little longer,
    prints the reason the way the CLI prints errors and exits 2 first: the one place convnet
    ends the process itself, because the engine would end it anyway.
    """
    if jax.distributed.is_initialized():
        return
    where = f"process {process_id} of {num_processes}" if num_processes else "this process"
    message = (
        f"{where}: not every process joined coordinator {coordinator or '(auto-detected)'} "
        f"within {timeout} s; start all of them with the same --coordinator and "
        "--num-processes and distinct --process-id values, or raise --join-timeout."
    )
    watchdog = threading.Timer(timeout, _give_up, args=(message,))
    watchdog.daemon = True
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=timeout + 30,
            shutdown_timeout_seconds=timeout,
        )
    except Exception as error:  # jaxlib raises XlaRuntimeError, RuntimeError or ValueError
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise DistributedError(f"{where}: cannot join the other processes ({reason}).") from None
    finally:
        watchdog.cancel()


def _give_up(message: str) -> None:
    print(f"convnet: error: {message}", file=sys.stderr, flush=True)
    os._exit(2)


def _setup_tensorflow(devices: int) -> Context:
    if devices <= 1:
        return Context("tensorflow")
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if len(gpus) < devices:
            raise DistributedError(f"--devices {devices}: this host has {len(gpus)} GPU(s).")
        names, kind = [f"/gpu:{i}" for i in range(devices)], "gpu"
    else:
        cpu = tf.config.list_physical_devices("CPU")[0]
        # Several logical CPU devices, so one host can run the mirrored path; this fails once
        # TensorFlow has started, and then the check below tells whether it has enough.
        with contextlib.suppress(RuntimeError):
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * devices
            )
        logical = tf.config.list_logical_devices("CPU")
        if len(logical) < devices:
            raise DistributedError(
                f"--devices {devices}: TensorFlow already started with {len(logical)} CPU "
                "device(s); pass --devices before anything else runs TensorFlow."
            )
        names, kind = [d.name for d in logical[:devices]], "cpu"
    tf.distribute.experimental_set_strategy(tf.distribute.MirroredStrategy(names))
    return Context(
        "tensorflow", devices=devices, device_kind=kind, engine="tf.distribute.MirroredStrategy"
    )
