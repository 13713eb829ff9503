"""Datasets by name: `convnet fetch mnist`, `--train kmnist`, `--train quickdraw:cat,dog`.

Each is downloaded once from where its makers publish it (or from `$CONVNET_DATASETS_URL`,
`sources.mirrors_for`) into `~/.cache/convnet/NAME` or `--data-dir`, checked against its
published MD5, and checked again at each use. Where no checksum is published for a file (Quick,
Draw!'s, and the EMNIST letters files taken out of NIST's archive) the SHA-256 of the verified
download is recorded in the folder's `SHA256SUMS` (`sha256sum -c` reads it) and checked instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import string
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convnet.data.dataset import FASHION_MNIST_CLASSES, Dataset
from convnet.data.idx import read_idx_dataset
from convnet.data.settings import DATASET_NAMES, QUICKDRAW
from convnet.data.sources import (
    MIRRORS,
    PUBLISHED_MD5,
    NotPublished,
    add_to_record,
    check_file,
    download,
    fetching,
    find_file,
    mirrors_for,
    read_record,
    verified_by_record,
    verified_fashion_mnist,
)
from convnet.errors import ConfigError, DataError
from convnet.files import atomic_file, cache_dir

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class IdxSet:
    """A dataset published as MNIST is: four IDX files, images and labels of train and test.

    Attributes:
        title: its name in messages.
        class_names: a name per class, in label order.
        md5: the published MD5 of each file downloaded as it is, by name.
        mirrors: the base URLs it is published at.
        files: by split, its (images, labels) files as they lie in the folder, gzipped.
        archive: the zip that `md5` names, which the files are taken out of; or None.
        first_label: the first class's label: EMNIST letters number theirs from 1.
        transposed: images stored column by column (EMNIST's), turned upright when read.
    """

    title: str
    class_names: tuple[str, ...]
    md5: dict[str, str]
    mirrors: tuple[str, ...]
    files: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {s: tuple(f + ".gz" for f in p) for s, p in SPLIT_FILES.items()}
    )
    archive: str | None = None
    first_label: int = 0
    transposed: bool = False


# The published locations and MD5s, as torchvision's datasets/mnist.py lists them (MNIST from its
# ossci-datasets mirror alone, since yann.lecun.com answers 403 Forbidden; EMNIST at NIST's current
# address, torchvision PR 8350, the same gzip.zip). Fashion-MNIST's are in `convnet.data.sources`.
IDX_SETS = {
    "fashion-mnist": IdxSet("Fashion-MNIST", FASHION_MNIST_CLASSES, PUBLISHED_MD5, MIRRORS),
    "mnist": IdxSet(
        "MNIST",
        tuple(string.digits),
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",),
    ),
    "kmnist": IdxSet(
        "Kuzushiji-MNIST",
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        {
            "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
            "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
            "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
            "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
        },
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    ),
    "emnist-letters": IdxSet(
        "EMNIST letters",
        tuple(string.ascii_lowercase),
        {"gzip.zip": "58c8d27c78d21e728a6bc7b3cc06412e"},
        ("https://biometrics.nist.gov/cs_links/EMNIST/",),
        files={
            split: (
                f"emnist-letters-{split}-images-idx3-ubyte.gz",
                f"emnist-letters-{split}-labels-idx1-ubyte.gz",
            )
            for split in ("train", "test")
        },
        archive="gzip.zip",
        first_label=1,
        transposed=True,
    ),
}
# The folder each one's files lie in on a mirror of your own (`sources.mirrors_for`).
MIRROR_FOLDERS = {"emnist-letters": "emnist", QUICKDRAW: QUICKDRAW}
QUICKDRAW_MIRRORS = ("https://storage.googleapis.com/quickdraw_dataset/full/numpy_bitmap/",)
QUICKDRAW_CATEGORIES = (
    "https://github.com/googlecreativelab/quickdraw-dataset/blob/master/categories.txt"
)
KNOWN = (*DATASET_NAMES, f"{QUICKDRAW}:CLASS,CLASS")


def dataset_folder(name: str, data_dir: str | Path | None = None) -> Path:
    """Where the dataset `name` ("mnist", or "quickdraw" for all of Quick, Draw!'s classes) is
    kept: `data_dir`, or `cache_dir()/name`."""
    return Path(data_dir) if data_dir else cache_dir() / name


def fetch_dataset(name: str, data_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Makes sure the dataset `name` is on this machine, whole; downloads what is missing.

    Args:
        name: one of `DATASET_NAMES`, or "quickdraw:CLASS,CLASS" for those Quick, Draw!
            classes.
        data_dir: the folder to keep it in; `dataset_folder(name)` when None.
        progress: show a progress bar while downloading.

    Returns:
        The folder to read: for Quick, Draw! one holding a `<class>.npy` per class asked for.

    Raises:
        ConfigError: the name is none of these. DataError: a download failed, or a file kept
            before is not the one downloaded (it says which, and to delete it).

    Example:
        >>> fetch_dataset("kmnist")  # doctest: +SKIP
        PosixPath('/home/me/.cache/convnet/kmnist')
    """
    if name.partition(":")[0] == QUICKDRAW:
        classes = quickdraw_classes(name)
        return _fetch_quickdraw(classes, dataset_folder(QUICKDRAW, data_dir), progress)
    if name == "fashion-mnist":  # also found where Debian's package puts it
        return verified_fashion_mnist(data_dir)
    if name not in IDX_SETS:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {', '.join(KNOWN)}.")
    folder = dataset_folder(name, data_dir)
    entry = IDX_SETS[name]
    if entry.archive:
        _fetch_archived(entry, folder, MIRROR_FOLDERS[name], progress)
    else:
        _fetch_published(entry, folder, MIRROR_FOLDERS.get(name, name), progress)
    return folder


def _fetch_published(entry: IdxSet, folder: Path, mirror_folder: str, progress: bool) -> None:
    """The files as published, each checked against its MD5 (the ones there already too)."""
    for name, md5 in entry.md5.items():
        if (folder / name).is_file():
            check_file(folder / name, "md5", md5, f"the published {entry.title} {name}")
            continue
        with fetching(folder):
            if not (folder / name).is_file():  # unless another process fetched it meanwhile
                mirrors = mirrors_for(mirror_folder, entry.mirrors)
                download(name, folder, md5, mirrors=mirrors, progress=progress)


def _fetch_archived(entry: IdxSet, folder: Path, mirror_folder: str, progress: bool) -> None:
    """The files taken out of the published archive (which is then deleted), each checked
    against the SHA-256 recorded when it was taken out."""
    wanted = [name for pair in entry.files.values() for name in pair]
    if verified_by_record(folder, wanted, entry.title):
        return
    with fetching(folder):
        if verified_by_record(folder, wanted, entry.title):
            return
        archive = entry.archive
        if not (folder / archive).is_file():  # a whole one, kept while being unpacked
            mirrors = mirrors_for(mirror_folder, entry.mirrors)
            download(archive, folder, entry.md5[archive], mirrors=mirrors, progress=progress)
        add_to_record(folder, _extract(folder / archive, folder, wanted, entry.title))
        (folder / archive).unlink()


def _extract(archive: Path, folder: Path, names: list[str], title: str) -> dict[str, str]:
    """Writes the members of `archive` named `names` (in whichever of its folders) into
    `folder`, as they are; returns the SHA-256 of each."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = {Path(member).name: member for member in zipped.namelist()}
            absent = [name for name in names if name not in members]
            if absent:
                raise DataError(
                    f"{archive}: holds no {absent[0]}; expected the {title} archive. "
                    "Delete it to download again."
                )
            digests = {}
            for name in names:
                digest = hashlib.sha256()
                with zipped.open(members[name]) as member, atomic_file(folder / name) as out:
                    while chunk := member.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
                digests[name] = digest.hexdigest()
    except (zipfile.BadZipFile, EOFError) as error:
        raise DataError(
            f"{archive}: unreadable zip ({error}); delete it to download again."
        ) from None
    except OSError as error:
        raise DataError(f"{folder}: cannot write {title}'s files ({error}).") from None
    return digests


def quickdraw_classes(name: str) -> tuple[str, ...]:
    """The Quick, Draw! classes that "quickdraw:CLASS,CLASS" names, each once, in its order.

    Raises:
        ConfigError: no class, or a name that cannot be a file name.
    """
    classes = tuple(dict.fromkeys(c.strip() for c in name.partition(":")[2].split(",")))
    classes = tuple(c for c in classes if c)
    example = f"expected {QUICKDRAW}:CLASS,CLASS with Quick, Draw!'s class names, e.g. " + (
        f"{QUICKDRAW}:cat,dog ({QUICKDRAW_CATEGORIES})"
    )
    if not classes:
        raise ConfigError(f"{name!r} names no Quick, Draw! class; {example}.")
    for cls in classes:
        if cls.startswith(".") or any(c in cls for c in "/\\\0\n"):
            raise ConfigError(f"{QUICKDRAW} class {cls!r} cannot be a file name; {example}.")
    return classes


def _fetch_quickdraw(classes: tuple[str, ...], folder: Path, progress: bool) -> Path:
    """Each class's `numpy_bitmap/<class>.npy` (downloaded once, its SHA-256 recorded), and a
    folder holding those of `classes` alone."""
    names = [f"numpy_bitmap/{cls}.npy" for cls in classes]
    if not verified_by_record(folder, names, "Quick, Draw!"):
        with fetching(folder):
            recorded = read_record(folder)
            for cls, name in zip(classes, names, strict=True):
                if name not in recorded or not (folder / name).is_file():
                    add_to_record(folder, {name: _download_class(cls, folder, progress)})
            verified_by_record(folder, names, "Quick, Draw!")
    return _selection(folder, classes)


def _download_class(cls: str, folder: Path, progress: bool) -> str:
    """Downloads one class's drawings; returns the file's SHA-256."""
    mirrors = mirrors_for(MIRROR_FOLDERS[QUICKDRAW], QUICKDRAW_MIRRORS)
    try:
        path = download(f"{cls}.npy", folder / "numpy_bitmap", mirrors=mirrors, progress=progress)
    except NotPublished:
        raise DataError(
            f"Quick, Draw! has no class {cls!r} ({mirrors[0]} answered 404 Not Found for "
            f"{cls}.npy); the class names are those of {QUICKDRAW_CATEGORIES}."
        ) from None
    _check_bitmap(path)
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _check_bitmap(path: Path) -> None:
    """Refuses (and deletes) a download that is not a numpy_bitmap file: N x 784 bytes."""
    with path.open("rb") as f:
        start = f.read(6)
    try:
        if start != b"\x93NUMPY":
            raise ValueError(f"not a .npy file: it starts {start!r}")
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        found = f"{array.dtype} of shape {array.shape}"
        fits = array.dtype == np.uint8 and array.ndim == 2 and array.shape[1] == 28 * 28
        del array  # unmapped, so that the file can be deleted (Windows)
    except (ValueError, OSError, EOFError) as error:
        found, fits = str(error), False
    if not fits:
        path.unlink()
        raise DataError(
            f"{path.name}: not a Quick, Draw! numpy_bitmap file ({found}); expected uint8 of "
            "shape (N, 784)."
        )


def _selection(folder: Path, classes: tuple[str, ...]) -> Path:
    """`folder/<class,class>`: a hard link to each class's file, nothing else, so that it reads
    as a dataset of those classes alone (linked again when a class was downloaded anew)."""
    names = sorted(classes)
    joined = ",".join(names)
    if len(joined) > 120:  # folder names are limited to 255 bytes
        joined = f"{len(names)}-classes-{hashlib.sha256(joined.encode()).hexdigest()[:12]}"
    chosen = folder / joined
    wanted = {f"{cls}.npy": folder / "numpy_bitmap" / f"{cls}.npy" for cls in names}
    if _links_hold(chosen, wanted):
        return chosen
    with fetching(folder):
        try:
            chosen.mkdir(exist_ok=True)
            for stale in chosen.iterdir():
                if stale.name not in wanted:
                    stale.unlink()
            for name, source in wanted.items():
                if not _same_file(chosen / name, source):
                    _link(source, chosen / name)
        except OSError as error:
            raise DataError(
                f"{chosen}: cannot link the classes' files into it ({error})."
            ) from None
    return chosen


def _links_hold(chosen: Path, wanted: dict[str, Path]) -> bool:
    if not chosen.is_dir() or {p.name for p in chosen.iterdir()} != set(wanted):
        return False
    return all(_same_file(chosen / name, source) for name, source in wanted.items())


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _link(source: Path, link: Path) -> None:
    """A hard link, or a symbolic one on a file system without hard links, made atomically."""
    tmp = link.with_name(f".{link.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        os.symlink(source.resolve(), tmp)
    os.replace(tmp, link)


def read_idx_set(
    name: str,
    folder: Path,
    class_names: tuple[str, ...] | None = None,
    pixel_range: str | None = None,
    limit: int | None = None,
    stream: bool | None = None,
) -> dict[str, Dataset]:
    """The train and test splits of the IDX dataset `name` in `folder` (`fetch_dataset`).

    Its images come upright, and its labels count from 0, however it stores them.

    Args:
        class_names: names for its classes; its own when None.
        pixel_range, limit, stream: as for `convnet.data.load_source` (`limit` cuts the
            training set).

    Raises:
        DataError: a file is unreadable, or `class_names` do not name its classes.
    """
    entry = IDX_SETS[name]
    names = class_names or entry.class_names
    # Labels from `first_label` up are read under placeholder names below it, then renumbered.
    padded = ("",) * entry.first_label + tuple(names)
    splits = {}
    for split, (images, labels) in entry.files.items():
        stems = (images.removesuffix(".gz"), labels.removesuffix(".gz"))
        images, labels = (find_file(folder, stem) or folder / (stem + ".gz") for stem in stems)
        first = limit if split == "train" else None
        data = read_idx_dataset(images, padded, labels, pixel_range, first, stream)
        x = np.ascontiguousarray(data.x.swapaxes(1, 2)) if entry.transposed else data.x
        splits[split] = dataclasses.replace(
            data, x=x, y=data.y - entry.first_label, class_names=tuple(names)
        )
        pixel_range = pixel_range or data.pixel_range  # the test set's, read as training's
    return splits
