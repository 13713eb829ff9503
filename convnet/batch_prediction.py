"""Classifying files with a run's model: a few at once (`predict`), or any number streamed a batch
at a time (`predict_files`), each row written as its batch finishes (`convnet.predictions`).

Both read and check their inputs with the core first, and load the model, with its framework,
only once an input has been read: a refusal of bad input never waits for Keras.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from convnet import framework
from convnet.errors import ConfigError, DataError, setting
from convnet.interrupts import Deferred
from convnet.predictions import PredictionWriter, output_format
from convnet.runs import InputReading, Run


def predict(
    run: str | Path,
    files: str | Path | list[str | Path],
    top_k: int = 3,
    unsafe: bool = False,
    tta: bool = True,
) -> list[dict]:
    """Classifies image, .npy or CSV files, or folders of images, with a run's model, at once.

    For a few inputs: every one is read into memory first, and any unreadable file stops it.
    `predict_files` streams any number, and goes on past unreadable files.
    `tta=False` makes one model pass per image, ignoring the run's test-time augmentation;
    `unsafe` loads a model that carries Python code (Lambda layers), only for trusted files.
    `files` is a path or a list of them; for arrays or PIL images in hand, use
    `convnet.load(run).predict(x)`.

    Returns:
        One dict per input: {"file", "class", "probability", "top": [{"class", "probability"}]}.

    Raises:
        ConfigError: `top_k` below 1. DataError: an input file cannot be read.
    """
    from convnet.inputs import load_inputs

    files = [files] if isinstance(files, str | os.PathLike) else files  # a path, not its letters
    _check_at_least_one(top_k=top_k)
    run, reading = _prediction_inputs(run)
    shape = reading.image_shape
    if shape:  # the inputs are checked before the framework is imported
        names, x = load_inputs(files, shape, **reading.options())
    model, views = _predictor(run, unsafe, tta)
    if not shape:
        names, x = load_inputs(files, model.input_shape[1:], **reading.options())
    from convnet.evaluation import predict_proba
    from convnet.predictions import top_classes

    probabilities = predict_proba(model, x, tta=views)
    return [
        top_classes(name, p, reading.class_names, top_k)
        for name, p in zip(names, probabilities, strict=True)
    ]


def predict_files(
    run: str | Path,
    paths: str | Path | list[str | Path],
    out: str | Path | None = None,
    format: str | None = None,
    top_k: int = 3,
    batch_size: int = 1024,
    unsafe: bool = False,
    tta: bool = True,
    on_row: Callable[[dict], None] | None = None,
    verbose: int = 1,
) -> dict:
    """Classifies any number of files, streaming: rows are written as each batch finishes.

    Memory holds one batch of inputs (and one `.npy` or CSV file at a time), whatever the count:
    see docs/benchmarks.md, "Batch prediction". A file that cannot be read gets a row with its
    reason in `error` and the rest go on.

    Args:
        run: the run folder.
        paths: image, .npy or CSV files, and folders walked for image files
            (`convnet.inputs.expand_paths`); for `format="kaggle"`, one test CSV.
        out: the file to write, atomically (`convnet.predictions`); None writes to stdout.
        format: "csv", "jsonl" or "kaggle" (ImageId,Label); None takes `out`'s extension, and
            without `out` writes nothing (`on_row` sees every row).
        top_k: classes per row (CSV columns class_2, ... ; JSON "top").
        batch_size: inputs read and classified together.
        unsafe, tta: as for `predict`.
        on_row: called with each row, after it is written (the CLI lists failures).
        verbose: 1 shows a progress bar of the inputs done, in a notebook or on a terminal's
            stderr (`convnet.progress.bar`); 0 none. Defaults to 1.

    Returns:
        {"out", "format", "rows", "failed": [{"file", "error"}], "skipped": [{"file",
        "reason"} of the other files found in folders], "stream": whether the rows went to a
        stream (stdout, `out` a FIFO or a character device) rather than a file}. File names
        that are not UTF-8 are given with their bytes escaped (`convnet.inputs.display_name`).

    Raises:
        ConfigError: `top_k` or `batch_size` below 1, an unknown format, an `out` that cannot be
            written, kaggle for inputs other than one CSV. DataError: a path is missing or of an
            unsupported type, or (kaggle) the test CSV cannot be read. All before any row.
    """
    from convnet.inputs import display_name, skip_reason

    paths = [paths] if isinstance(paths, str | os.PathLike) else paths
    _check_at_least_one(top_k=top_k, batch_size=batch_size)
    format = output_format(out, format)
    files, skipped = _files_to_read(paths, format)
    run, reading = _prediction_inputs(run)
    shown = _progress(files, verbose)
    # Opened first, so an `out` that cannot be written is refused before the model loads.
    writing = PredictionWriter(out, format, top_k, reading.class_names, flush_every=batch_size)
    with writing as writer, shown:
        # Loaded (with its framework) when the first readable input needs it, so inputs that
        # cannot be read are refused without paying for Keras.
        predictor = functools.cache(lambda: _predictor(run, unsafe, tta))
        if reading.image_shape is None:  # older runs record it only in the model
            shape = predictor()[0].input_shape[1:]
            reading = dataclasses.replace(reading, image_shape=shape)
        rows = _stream(predictor, files, reading, top_k, batch_size)
        # A Ctrl-C or SIGTERM waits for the row being made: raised inside the framework (loading
        # the model, say), it was lost or crashed the process (convnet.interrupts).
        with Deferred() as interrupt:

            def done(count: int) -> None:
                interrupt.check()
                shown.update(count)

            failed = _write_rows(rows, writer, format == "kaggle", on_row, done)
    return {
        "out": str(out) if out else None,
        "format": format,
        "rows": writer.rows,
        "failed": failed,
        "skipped": [{"file": display_name(p), "reason": skip_reason(p)} for p in skipped],
        "stream": writer.stream,
    }


def _check_at_least_one(**settings: int) -> None:
    """Refuses the first of `settings` below 1, named as the user wrote it."""
    for name, value in settings.items():
        if value < 1:
            raise ConfigError(f"{setting(name, value)}: expected a whole number >= 1.")


def _files_to_read(paths: list, format: str | None) -> tuple[list[Path], list[Path]]:
    """The input files `paths` name, and the other files found in their folders.

    Raises:
        DataError: no input file among them. ConfigError: kaggle for other than one CSV.
    """
    from convnet.inputs import expand_paths

    files, skipped = expand_paths(paths)
    if not files:
        raise DataError(
            f"{', '.join(map(str, paths))}: no image files; expected image, .npy or .csv files "
            "or folders of images."
        )
    if format == "kaggle" and (len(files) != 1 or files[0].suffix.lower() != ".csv"):
        named = ", ".join(map(str, files[:3])) + (" and more" if len(files) > 3 else "")
        raise ConfigError(
            f"{setting('format', 'kaggle')} writes ImageId,Label for the rows of one test CSV; "
            f"received {len(files)} files: {named or 'none'}."
        )
    return files, skipped


def _progress(files: list[Path], verbose: int):
    """The bar of `predict_files`: of the inputs done, their count known when each file is one
    image (a .npy or CSV file holds any number)."""
    from convnet.data.folder import IMAGE_SUFFIXES
    from convnet.progress import bar

    images = all(path.suffix.lower() in IMAGE_SUFFIXES for path in files)
    return bar(len(files) if images else None, "predict", verbose, unit="input")


def _write_rows(
    rows: Iterable[dict],
    writer: PredictionWriter,
    kaggle: bool,
    on_row: Callable[[dict], None] | None,
    done: Callable[[int], object],
) -> list[dict]:
    """Writes `rows`, calling `on_row` with each and `done(1)` after it; returns the failures.

    Rows of unreadable inputs are held back until an input reads: when none does, it is bad
    input, refused like any other.

    Raises:
        DataError: no input could be read, or (kaggle, which needs every row) one could not.
    """
    failed, unread = [], []
    for row in rows:
        done(1)
        if "error" in row:
            if kaggle:
                raise DataError(f"{row['file']}: {row['error']}")
            failed.append(row)
            if not writer.rows:
                unread.append(row)
                continue
        for each in [*unread, row]:
            writer.write(each)
            if on_row:
                on_row(each)
        unread = []
    if unread:
        more = len(unread) - 1
        raise DataError(
            f"{unread[0]['file']}: {unread[0]['error']}"
            + (f" ({more} more inputs could not be read either)" if more else "")
        )
    return failed


def _stream(
    predictor, files: list[Path], reading: InputReading, top_k: int, batch_size: int
) -> Iterator[dict]:
    """Rows for `files`, in order, a batch at a time (see `predict_files`); `predictor()`
    gives the run's (model, test-time views)."""
    import numpy as np

    from convnet.inputs import iter_inputs
    from convnet.predictions import top_classes

    items = iter_inputs(files, reading.image_shape, **reading.options())
    while batch := list(itertools.islice(items, batch_size)):
        pixels = [x for _, x, _ in batch if x is not None]
        if pixels:  # the first loads the model; scikit-learn comes with evaluation
            from convnet.evaluation import predict_proba

            model, views = predictor()
            probabilities = iter(predict_proba(model, np.stack(pixels), tta=views))
        for name, x, error in batch:
            if x is None:
                yield {"file": name, "error": error}
            else:
                yield top_classes(name, next(probabilities), reading.class_names, top_k)


def _prediction_inputs(run: str | Path) -> tuple[Run, InputReading]:
    """The run, checked to have a model, and how that model reads its inputs."""
    run = Run(run)
    run.config()
    run.require_model()
    return run, run.input_reading()


def _predictor(run: Run, unsafe: bool, tta: bool):
    """(model, test-time views) of a run."""
    config = run.config()
    framework.load_for_run(config.backend)
    from convnet.evaluation import TestTimeAugmentation
    from convnet.models.factory import load_model

    model = load_model(run.model_file, safe_mode=not unsafe)
    run.check_outputs(model.output_shape[-1])
    views = TestTimeAugmentation.of(config.recipe(), enabled=tta)
    return model, views
