"""From a data source to the sets a run uses: a source read into its splits (`load_source`,
by format, or by dataset name), and a run's training and test sets (`load_train_test`): the
source's own test split, another test source, or a seeded, stratified share held out, the test
set matched to the training set's image shape and classes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from convnet.data.cache import cached_read
from convnet.data.catalogue import IDX_SETS, fetch_dataset, read_idx_set
from convnet.data.csv import read_csv
from convnet.data.dataset import FASHION_MNIST_CLASSES, Dataset
from convnet.data.folder import read_any_folder
from convnet.data.idx import read_idx_dataset
from convnet.data.matching import matched_to_training
from convnet.data.npz import has_test_split, read_npz
from convnet.data.settings import FORMATS, is_dataset_name
from convnet.data.sources import load_fashion_mnist
from convnet.data.split import split
from convnet.data.streamed import cannot_stream
from convnet.errors import ConfigError, ConvnetWarning, DataError, setting, warn

if TYPE_CHECKING:  # for annotations only: config sits above data and imports data.settings
    from convnet.config import TrainConfig

NAMED_CLASS_SETS = {
    "fashion-mnist": FASHION_MNIST_CLASSES,
    "mnist": tuple(str(i) for i in range(10)),
}

DEFAULT_TEST_SPLIT = 0.2  # of a source without a test set, held out to test on


class HeldOutTestWarning(ConvnetWarning):
    """The source had no test set, so part of it is held out as one."""


def guess_format(path: Path) -> str:
    """The format a path's name or kind implies."""
    if path.is_dir():
        return "folder"
    name = path.name.lower()
    if name.endswith(".csv") or name.endswith(".csv.gz"):
        return "csv"
    if name.endswith(".npz"):
        return "npz"
    if "idx" in name or "ubyte" in name:
        return "idx"
    raise DataError(
        f"{path}: cannot tell the format from the name; expected a folder, .csv, .npz or an IDX "
        f"file (name containing 'idx' or 'ubyte'), or pass {setting('format')} "
        f"({', '.join(FORMATS)})."
    )


def resolve_class_names(spec: str | list[str] | None, path: Path) -> tuple[str, ...] | None:
    """Class names from `--class-names`: a named set, a comma list, or None to infer.

    Inferred: Fashion-MNIST's names for a file named like it, else the reader decides.
    """
    if isinstance(spec, list | tuple):
        return tuple(spec)
    if spec in NAMED_CLASS_SETS:
        return NAMED_CLASS_SETS[spec]
    if spec and "," not in spec:
        raise DataError(
            f"class_names {spec!r} is neither a named set ({', '.join(NAMED_CLASS_SETS)}) nor a "
            "comma-separated list of names."
        )
    if spec:
        return tuple(name.strip() for name in spec.split(","))
    return FASHION_MNIST_CLASSES if "fashion" in path.name.lower() else None


def load_source(
    path: str | Path,
    format: str | None = None,
    label_column: str | int | None = None,
    class_names: str | list[str] | None = None,
    pixel_range: str | None = None,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    stream: bool | None = None,
) -> dict[str, Dataset]:
    """Reads a data source into its splits.

    Args:
        path: a CSV, NPZ, IDX images file, or a folder: of class sub-folders of images, of
            `<class>.npy` files (`convnet.data.npy`), or with `train/` and `test/` folders of
            either; or, as a string, a dataset name (`convnet.data.catalogue`: "mnist",
            "quickdraw:cat,dog"), fetched if missing.
        format: one of FORMATS; guessed from `path` when None.
        label_column: for CSV, the label column's name or index.
        class_names: a named set ("fashion-mnist", "mnist"), a comma-separated list, or None.
        pixel_range: "LOW,HIGH" of the values of array formats (CSV, NPZ, IDX), or None to
            detect it (`convnet.data.pixels`); image files are 0-255.
        limit: read only the first `limit` training examples where the format allows it (NPZ,
            IDX, folders; a CSV is read whole), or all when None; a test split is read whole.
            The pixel range detected and the classes found are still those of every example.
        data_dir: the folder a named dataset is kept in; its cache folder when None.
        stream: leave the images in their files and read them a batch at a time
            (`convnet.data.streamed`); False to read them into memory; None to stream sources
            too big to hold. Per-class .npy folders, raw IDX files and NPZ archives of uint8
            images stored uncompressed can be streamed.

    Returns:
        {"train": Dataset} and "test" where the source carries one.

    Raises:
        DataError: the path is missing, of an unknown format, its content is invalid, or an
            array's declared size is more than memory can hold.
    """
    if is_dataset_name(path):
        name, path = path, fetch_dataset(path, data_dir)
        if name in IDX_SETS:
            names = resolve_class_names(class_names, Path(name))
            return read_idx_set(name, path, names, pixel_range, limit, stream)
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found.")
    format = format or guess_format(path)
    names = resolve_class_names(class_names, path)
    return _read_format(path, format, label_column, names, pixel_range, limit, stream)


def _read_format(
    path: Path,
    format: str,
    label_column: str | int | None,
    names: tuple[str, ...] | None,
    pixel_range: str | None,
    limit: int | None,
    stream: bool | None,
) -> dict[str, Dataset]:
    """`load_source` for a path, by its format's reader.

    Raises:
        DataError: an unknown format, a CSV to stream, or what the reader refuses.
    """
    if stream and format == "csv":
        raise cannot_stream(path, "a CSV file holds its pixels as text")
    if format == "csv":
        read = lambda: read_csv(path, label_column, names, pixel_range=pixel_range)  # noqa: E731
        options = {"label_column": label_column, "class_names": names, "pixel_range": pixel_range}
        return {"train": cached_read(path, read, **options)}
    if format == "npz":
        return read_npz(path, names, pixel_range, limit, stream)
    if format == "idx":
        read = read_idx_dataset(path, names, pixel_range=pixel_range, limit=limit, stream=stream)
        return {"train": read}
    if format == "folder":
        if carries_test_set(path, format):
            train = read_any_folder(path / "train", limit, stream)
            return {"train": train, "test": read_any_folder(path / "test", None, stream)}
        return {"train": read_any_folder(path, limit, stream)}
    raise DataError(f"format {format!r} is not supported; expected one of {', '.join(FORMATS)}.")


def carries_test_set(path: str | Path, format: str | None = None) -> bool:
    """Whether the source holds a test split of its own (an NPZ's `x_test`, a folder's `test/`,
    a named IDX dataset's), so that none is held out of its training examples."""
    if is_dataset_name(path):
        return path in IDX_SETS
    path = Path(path)
    if not path.exists():
        return False
    format = format or guess_format(path)
    if format == "folder":
        return (path / "train").is_dir() and (path / "test").is_dir()
    return format == "npz" and has_test_split(path)


def load_train_test(
    train: str | None = None,
    test: str | None = None,
    format: str | None = None,
    label_column: str | int | None = None,
    class_names: str | list[str] | None = None,
    data_dir: str | None = None,
    pixel_range: str | None = None,
    test_split: float | None = None,
    seed: int = 42,
) -> tuple[Dataset, Dataset]:
    """The training and test sets a run uses: Fashion-MNIST unless `train` names a source.

    The test set is `test` if given, else the training source's own test split, else a share
    `test_split` (default `DEFAULT_TEST_SPLIT`) of the source held out, seeded and stratified,
    so that the same settings always hold out the same rows. The test set's pixels are read in
    the training set's range.

    Raises:
        DataError: the sets cannot be read or do not fit together. ConfigError: `test_split`
            given for a source that has a test set.
    """
    train_set, test_set, _ = _train_test(
        train, test, format, label_column, class_names, data_dir, pixel_range, test_split, seed
    )
    return train_set, test_set


def _train_test(
    train,
    test,
    format,
    label_column,
    class_names,
    data_dir,
    pixel_range,
    test_split,
    seed,
    limit=None,
    given=None,
    stream=None,
) -> tuple[Dataset, Dataset, float | None]:
    """`load_train_test`'s sets, and the share held out to test on (None if none was).

    `given` holds data given in Python, read already (`convnet.data.training_data.read_given`),
    by argument ("train", "test"): it stands in for that path.

    With `limit`, only the source's first `limit` training examples are read, the ones a run
    trains on, unless a test set is held out of the source: that is a seeded sample of all its
    examples and the training examples are what is left, so the source is read whole then (and
    the caller cuts the training set to `limit` afterwards).

    `stream`: `load_source`'s, for the sources named by path.
    """
    given = given or {}
    if "train" in given:
        splits = {"train": given["train"]}
    elif train:
        whole = limit and not (test or given) and not carries_test_set(train, format)
        first = None if whole else limit
        splits = load_source(
            train, format, label_column, class_names, pixel_range, first, data_dir, stream
        )
    elif stream:
        raise cannot_stream("Fashion-MNIST", "its files are gzipped")
    else:  # its own class names unless --class-names gives others
        splits = load_fashion_mnist(data_dir, resolve_class_names(class_names, Path("fashion")))
    train_range = splits["train"].pixel_range
    if "test" in given:
        splits["test"] = given["test"]
    elif test:
        # --data-dir holds the training dataset: another named test set is in its own folder.
        own = data_dir if test == (train or "fashion-mnist") else None
        test_splits = load_source(
            test, format, label_column, class_names, train_range, None, own, stream
        )
        splits["test"] = _test_of(test_splits)
    if "test" in splits and test_split is not None:
        source = "the test data given" if "test" in given else test or train
        raise ConfigError(
            f"test_split holds out a test set, but {source} has one; drop "
            f"{setting('test_split')} to test on it."
        )
    if "test" not in splits:
        test_split = DEFAULT_TEST_SPLIT if test_split is None else test_split
        splits["train"], splits["test"] = hold_out_test(splits["train"], test_split, seed)
    train_set = splits["train"]
    test_set = matched_to_training(splits["test"], train_set.image_shape, train_set.class_names)
    return train_set, test_set, test_split


def hold_out_test(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(train, test): a seeded, stratified share `fraction` of `data` held out as its test
    set, for a source that carries none.

    Raises:
        DataError: too few examples to hold a test set out of.
    """
    rest, test = split(data, fraction, seed, stratify=True, what="test_split")
    where = f"{data.source} (a held-out {fraction:.0%}, seed {seed})"
    warn(
        f"{data.source} has no test set: holding out {len(test)} of its {len(data)} examples "
        f"({setting('test_split', fraction)}, stratified, {setting('seed', seed)}) to test on; "
        f"pass {setting('test')} to use another.",
        HeldOutTestWarning,
    )
    return rest, dataclasses.replace(test, source=where)


def load_test(
    path: str,
    image_shape: tuple[int, ...],
    trained_classes: tuple[str, ...],
    format: str | None = None,
    label_column: str | int | None = None,
    class_names: str | list[str] | None = None,
    pixel_range: str | None = None,
) -> Dataset:
    """A test set for a model trained on images of `image_shape` and `trained_classes`, without
    reading the training data: the source's test split if it has one, else all of it. The
    other arguments are `load_source`'s; `pixel_range` should be the training data's.

    Raises:
        DataError: the source cannot be read, or does not fit the model.
    """
    splits = load_source(path, format, label_column, class_names, pixel_range)
    return matched_to_training(_test_of(splits), image_shape, trained_classes)


def _test_of(splits: dict[str, Dataset]) -> Dataset:
    """A test source's test split, else the whole source, then not named as a training split
    (`test.npz`, not `test.npz:train`)."""
    if "test" in splits:
        return splits["test"]
    whole = splits["train"]
    return dataclasses.replace(whole, source=whole.source.removesuffix(":train"))


def load_config_data(
    config: TrainConfig, limit: int | None = None, given: dict | None = None
) -> tuple[Dataset, Dataset, float | None]:
    """The training source, the test set that `config` names, and the share of the source held
    out as that test set (`load_train_test`). With `limit`, the training set may be cut to its
    first `limit` examples, and only those read (`_train_test` says when); else it is whole.
    `given`: data given in Python in place of `config.train` or `config.test`
    (`convnet.data.training_data.read_given`).
    """
    return _train_test(
        config.train,
        config.test,
        config.format,
        config.label_column,
        config.class_names,
        config.data_dir,
        config.pixel_range,
        config.test_split,
        config.seed,
        limit,
        given,
        config.stream,
    )
