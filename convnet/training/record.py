"""A training's record in its run folder's manifest: what it began with (the data and its
checksums, versions, machine, topology), each time it resumed, and how it stopped: interrupted,
to resume, or failed, with the error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import shutil
import time
from pathlib import Path

import keras

from convnet.config import TrainConfig
from convnet.data import DataRecord, TrainingData
from convnet.errors import DiskFull, command
from convnet.machine import machine, versions
from convnet.models.precision import resolve_precision
from convnet.run_folders import process_record
from convnet.runs import Run
from convnet.training import distributed
from convnet.training.callbacks import DiskRoom, disk_full


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; the message says how to resume. The CLI exits 130."""


def begin_run(
    run_dir: Path,
    config: TrainConfig,
    command,
    data: TrainingData,
    context: distributed.Context,
) -> Run:
    """Writes the data given in Python, config.yaml and the manifest of a run that begins."""
    if data.kept and context.is_chief:  # where config.yaml says the data is
        data.kept.write({"train": config.train, "test": config.test})
    run = Run.begin(run_dir, config)
    train = data.train
    run.write_json(
        "manifest.json",
        {
            "status": "running",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "preset": config.preset,
            "precision": resolve_precision(config.recipe().precision),
            "seed": config.seed,
            "command": command,
            "data": {
                "train": dataclasses.asdict(data.record),
                "test": dataclasses.asdict(DataRecord.of(data.test)),
                "class_names": list(train.class_names),
                "image_shape": list(train.image_shape),
                "background_is_light": data.light_background,
                # "streamed" from the files a batch at a time, or held in "memory"
                "feed": train.feed,
            },
            "process": process_record(),
            "versions": versions(keras.backend.backend()),
            "machine": machine() | {"auto_precision": resolve_precision("auto")},
            "topology": context.topology(),
        },
    )
    return run


def mark_resumed(run: Run, command, context: distributed.Context, feed: str) -> None:
    manifest = run.read_json("manifest.json")
    resumes = manifest.get("resumes", []) + [
        {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command, "feed": feed}
    ]
    run.write_json(
        "manifest.json",
        manifest
        | {
            "status": "running",
            "process": process_record(),
            "resumes": resumes,
            "topology": context.topology(),
        },
    )


@contextlib.contextmanager
def recording_status(run: Run):
    """Marks the manifest "interrupted" on Ctrl-C and "failed" on an error, then re-raises."""
    try:
        yield
    except KeyboardInterrupt:
        _set_status(run, "interrupted")
        raise TrainingInterrupted(
            f"interrupted; resume with: {command('train', resume=run.path)}"
        ) from None
    except DiskFull:
        _set_status(run, "interrupted")
        raise
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            _set_status(run, "failed", error=f"{type(error).__name__}: {error}")
            raise
        _set_status(run, "interrupted")
        free = shutil.disk_usage(run.path).free
        raise disk_full(run.path, free, free + DiskRoom.MARGIN, "when a write failed") from None
    except BaseException as error:
        _set_status(run, "failed", error=f"{type(error).__name__}: {error}")
        raise


def _set_status(run: Run, status: str, **extra) -> None:
    with contextlib.suppress(OSError):
        run.set_status(status, **extra)
