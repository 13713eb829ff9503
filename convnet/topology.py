"""The processes and devices a training asks for, and what its backend can do of it.

Read from the config, else from $CONVNET_COORDINATOR, $CONVNET_NUM_PROCESSES and
$CONVNET_PROCESS_ID, else from a SLURM, Open MPI or Kubernetes job. No framework is imported
here: `convnet.api.train` refuses what cannot be trained before it reads the data and imports
Keras (it took 3 s to say so), and `convnet.training.distributed.setup` checks again with the
backend Keras runs on, then joins the processes.
"""

from __future__ import annotations

import os

from convnet.errors import BackendError, ConfigError, setting

ENVIRONMENT = {
    "coordinator": "CONVNET_COORDINATOR",
    "num_processes": "CONVNET_NUM_PROCESSES",
    "process_id": "CONVNET_PROCESS_ID",
}


class DistributedError(BackendError):
    """The backend cannot train as asked, or the processes did not all join."""


def check(
    config, backend: str, resume: bool = False
) -> tuple[int | None, int | None, str | None, bool]:
    """The topology `config` asks for, refused where `backend` cannot train it.

    Returns:
        (num_processes, process_id, coordinator, several): `several` is whether the training
        runs on more than one process.

    Raises:
        ConfigError: inconsistent settings, or a variable that is not a number.
        DistributedError: the backend cannot train as asked, or a resume on several processes.
    """
    num_processes, process_id, coordinator, cluster = requested(config)
    several = (num_processes or 1) > 1 or cluster is not None
    if backend == "torch" and (config.devices or 1) > 1:
        raise DistributedError(
            f"{setting('devices', config.devices)}: the torch backend trains on one device here; "
            f"pass {setting('backend', 'jax')} (or tensorflow on one machine) for data-parallel "
            "training."
        )
    if backend != "jax" and several:
        raise DistributedError(
            f"training on several processes needs the jax backend (received: {backend}); "
            "Keras 3 cannot fit under TensorFlow's MultiWorkerMirroredStrategy. "
            f"Install convnet[jax] and pass {setting('backend', 'jax')}."
        )
    if resume and several:
        raise DistributedError("resuming a run trained on several processes is not supported.")
    return num_processes, process_id, coordinator, several


def requested(config) -> tuple[int | None, int | None, str | None, str | None]:
    """(num_processes, process_id, coordinator, cluster kind) from the config or environment."""
    values = {key: getattr(config, key) for key in ENVIRONMENT}
    for key, variable in ENVIRONMENT.items():
        text = os.environ.get(variable)
        if values[key] is None and text:
            integer = key != "coordinator"
            digits = text.strip()  # ASCII only: isdigit() takes "²", which int() refuses
            if integer and not (digits.isascii() and digits.isdigit() and len(digits) <= 9):
                raise ConfigError(f"${variable} must be an integer. Received: {text!r}.")
            values[key] = int(text) if integer else text
    num, rank, coordinator = values["num_processes"], values["process_id"], values["coordinator"]
    cluster = detect_cluster() if num is None and coordinator is None and rank is None else None
    if num is None and (coordinator or rank is not None):
        raise ConfigError(
            f"{setting('coordinator')} and {setting('process_id')} need "
            f"{setting('num_processes')} too."
        )
    if num is not None and num > 1 and cluster is None:
        if coordinator is None or rank is None:
            raise ConfigError(
                f"{setting('num_processes', num)} needs {setting('coordinator', 'HOST:PORT')} "
                f"(process 0's address) and {setting('process_id')} (0 to {num - 1}) on every "
                "process, or the variables "
                f"{', '.join(ENVIRONMENT.values())}."
            )
        if not 0 <= rank < num:
            raise ConfigError(f"process_id must be in [0, {num}). Received: process_id={rank}.")
    host, _, port = (coordinator or "").rpartition(":")
    if coordinator and not (
        host and port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 65535
    ):
        raise ConfigError(
            f"coordinator must be HOST:PORT (process 0's address, such as 10.0.0.1:1234). "
            f"Received: {coordinator!r}."
        )
    return num, rank, coordinator, cluster


def detect_cluster() -> str | None:
    """The kind of multi-process job this process runs in, if JAX can read its topology."""
    env = os.environ
    if (
        "SLURM_JOB_ID" in env
        and "SLURM_STEP_NODELIST" in env
        and env.get("SLURM_NTASKS", "1") != "1"
    ):
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in env:
        return "ompi"
    if "KUBERNETES_SERVICE_HOST" in env and "JOB_COMPLETION_INDEX" in env:
        return "kubernetes"
    return None
