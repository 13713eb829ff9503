"""Finding Fashion-MNIST on this machine, or downloading it once into the user cache; and the
downloader that every dataset fetched by name shares (`convnet.data.catalogue`)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import filelock
from tqdm import tqdm

from convnet.data.dataset import FASHION_MNIST_CLASSES, Dataset
from convnet.data.idx import read_idx_dataset
from convnet.errors import DataError
from convnet.files import cache_dir, replace_durably, write_atomic

MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
)
# Published MD5 of each .gz as served by the mirrors (zalandoresearch/fashion-mnist README).
PUBLISHED_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# SHA-256 of the decompressed files: the same data however a copy was compressed (Debian's differ).
CONTENT_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# A base URL that replaces every publisher's (`mirrors_for`).
MIRROR_ENV = "CONVNET_DATASETS_URL"
# The SHA-256 of each file of a folder that has no published checksum, as `sha256sum` writes.
RECORD = "SHA256SUMS"
SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def candidate_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Where Fashion-MNIST is looked for, in order."""
    dirs = [data_dir, os.environ.get("CONVNET_DATA"), cache_dir() / "fashion-mnist", DEBIAN_DIR]
    return [Path(d) for d in dirs if d]


def find_file(directory: Path, stem: str) -> Path | None:
    """`directory/stem.gz`, else `directory/stem`, whichever is a file first; or None."""
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def find_fashion_mnist(data_dir: str | Path | None = None) -> Path | None:
    """The first candidate folder that holds all four Fashion-MNIST files, or None."""
    for directory in candidate_dirs(data_dir):
        if all(find_file(directory, stem) for stem in CONTENT_SHA256):
            return directory
    return None


def ensure_fashion_mnist(data_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Returns a folder holding Fashion-MNIST, looking in `candidate_dirs(data_dir)`; else
    downloads it into `data_dir`, or into the cache when that is None."""
    found = find_fashion_mnist(data_dir)
    if found:
        return found
    target = Path(data_dir) if data_dir else cache_dir() / "fashion-mnist"
    with fetching(target):
        for name, md5 in PUBLISHED_MD5.items():
            if not (target / name).is_file():
                mirrors = mirrors_for("fashion-mnist", MIRRORS)
                download(name, target, md5, mirrors=mirrors, progress=progress)
    return target


def load_fashion_mnist(
    data_dir: str | Path | None = None, class_names: tuple[str, ...] = FASHION_MNIST_CLASSES
) -> dict[str, Dataset]:
    """Fashion-MNIST's train (60,000) and test (10,000) splits, verified by checksum.

    Args:
        class_names: names for its 10 labels; Fashion-MNIST's own by default.

    Raises:
        DataError: a file's content does not match the published data, or `class_names` do
            not cover the labels.
    """
    directory = verified_fashion_mnist(data_dir)
    splits = {}
    for split, prefix in SPLIT_PREFIX.items():
        images, labels = (
            find_file(directory, f"{prefix}-{kind}")
            for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
        )
        splits[split] = read_idx_dataset(images, class_names, labels)
    return splits


def verified_fashion_mnist(data_dir: str | Path | None = None) -> Path:
    """`ensure_fashion_mnist`, then every file's content checked against the published data.

    Raises:
        DataError: a file is corrupt or not the published one.
    """
    directory = ensure_fashion_mnist(data_dir)
    for stem in CONTENT_SHA256:
        _verify_content(find_file(directory, stem))
    return directory


def _verify_content(path: Path) -> None:
    stem = path.name.removesuffix(".gz")
    raw = path.read_bytes()
    try:
        content = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError) as error:
        raise DataError(
            f"{path}: corrupt gzip file ({error}); delete it to download again."
        ) from None
    if hashlib.sha256(content).hexdigest() != CONTENT_SHA256[stem]:
        raise DataError(
            f"{path}: checksum mismatch; this is not the published Fashion-MNIST {stem}. "
            "Delete it to download again."
        )


def mirrors_for(folder: str, published: tuple[str, ...]) -> tuple[str, ...]:
    """The base URLs a dataset's files are downloaded from: its publishers', or only
    `$CONVNET_DATASETS_URL/<folder>/` when that is set (a mirror of your own, or a test's server:
    docs/data.md). The checksums are the same either way."""
    mirror = os.environ.get(MIRROR_ENV)
    return (f"{mirror.rstrip('/')}/{folder}/",) if mirror else published


@contextlib.contextmanager
def fetching(folder: Path) -> Iterator[None]:
    """Holds `folder`'s download lock, so that processes fetching the same data at once (the
    workers of a distributed run) download it once and never write one partial file together.

    Raises:
        DataError: the folder cannot be made or written to.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(_lock_path(folder))
        lock.acquire()
    except OSError as error:
        raise DataError(f"{folder}: cannot download into it ({error.strerror or error}).") from None
    try:
        yield
    finally:
        lock.release()


def _lock_path(folder: Path) -> Path:
    """`.NAME.lock` beside the folder, so that the folder holds the data alone; inside it where
    its parent cannot be written to (a volume mounted on the folder itself)."""
    folder = folder.resolve()
    if folder.name and os.access(folder.parent, os.W_OK):
        return folder.with_name(f".{folder.name}.lock")
    return folder / ".fetch.lock"


def download(
    name: str,
    target: Path,
    md5: str | None = None,
    *,
    mirrors: tuple[str, ...],
    retries: int = 3,
    timeout: float = 30.0,
    progress: bool = True,
    backoff: float = 1.0,
) -> Path:
    """Downloads `name` from the first mirror that serves it whole into `target`.

    Each mirror is tried `retries` times, waiting `backoff`, 2 * `backoff`, ... seconds between
    attempts. Timeouts, connection and server errors, truncated and corrupt files are retried;
    "not found" (HTTP 404 or 410) is not. A download cut short stays as `.NAME.part`, and the
    next attempt, in this call or a later one, asks only for the rest (an HTTP range request),
    or starts again where the server sends the whole file. The file takes its name only once it
    is whole and its MD5 matches: a bad download never stays in the cache under that name.
    Hold `fetching(target)` where other processes may download the same file.

    Args:
        name: the file name, appended (URL-quoted) to each mirror's URL.
        target: the folder to download into.
        md5: the published MD5 of the file, or None for a file published without one.
        mirrors: base URLs ending in "/" (`mirrors_for`).
        retries: attempts per mirror.
        timeout: seconds to wait for the server at each step.
        progress: show a progress bar.
        backoff: the first wait, in seconds.

    Raises:
        NotPublished: every mirror answered that it has no such file.
        DataError: no mirror served a file with the expected checksum; says what each one did.
    """
    target.mkdir(parents=True, exist_ok=True)
    failures: dict[str, BaseException] = {}
    for mirror in mirrors:
        url = mirror + urllib.parse.quote(name)
        for attempt in range(retries):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                return _fetch(url, target / name, md5, timeout, progress)
            except (OSError, http.client.HTTPException, DataError) as error:
                failures[url] = error
                if _not_found(error):
                    break
    tried = "; ".join(f"{url}: {_describe(error)}" for url, error in failures.items())
    if failures and all(map(_not_found, failures.values())):
        raise NotPublished(f"{name} is not there to download: {tried}.")
    raise DataError(
        f"could not download {name} ({retries} attempts per mirror). Last error from each: "
        f"{tried or 'no mirror to try'}."
    )


class NotPublished(DataError):
    """No mirror has the file asked for (HTTP 404 or 410)."""


def _not_found(error: BaseException) -> bool:
    return isinstance(error, urllib.error.HTTPError) and error.code in (404, 410)


def _describe(error: BaseException) -> str:
    """What went wrong with one attempt, in a few words."""
    if isinstance(error, urllib.error.HTTPError):
        return f"{'server error ' if error.code >= 500 else ''}HTTP {error.code} {error.reason}"
    if isinstance(error, http.client.IncompleteRead):
        return f"truncated download (connection closed after {len(error.partial)} bytes)"
    reason = getattr(error, "reason", error)
    if isinstance(reason, TimeoutError) or isinstance(error, TimeoutError):
        return f"timed out ({reason})"
    return str(reason) or type(error).__name__


def _fetch(url: str, destination: Path, md5: str | None, timeout: float, progress: bool) -> Path:
    part = destination.with_name(f".{destination.name}.part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code != 416 or not have:
            raise
        part.unlink()  # "range not satisfiable": the part is no prefix of the file
        return _fetch(url, destination, md5, timeout, progress)
    with response:
        _receive(response, part, have, destination.name, progress)
    if md5:
        with part.open("rb") as f:
            digest = hashlib.file_digest(f, "md5").hexdigest()
        if digest != md5:
            part.unlink()  # the next attempt starts from the first byte
            raise DataError(f"corrupt download: checksum mismatch (MD5 {digest}, expected {md5})")
    replace_durably(part, destination)
    return destination


def _receive(response, part: Path, have: int, label: str, progress: bool) -> None:
    """Writes the response's body to `part`: after its `have` bytes when the server sent the
    rest of the file, over them when it sent all of it. What arrived stays when the connection
    breaks, for the next attempt to go on from."""
    sent = response.headers.get("Content-Range") or ""
    if response.status == 206 and not sent.startswith(f"bytes {have}-"):
        part.unlink()
        raise DataError(f"asked for bytes {have}- of the file, the server sent {sent!r}")
    start = have if response.status == 206 else 0
    length = int(response.headers.get("Content-Length") or 0) or None
    received = 0
    with (
        part.open("ab" if start else "wb") as out,
        tqdm(
            total=start + length if length else None,
            initial=start,
            unit="B",
            unit_scale=True,
            desc=label,
            disable=not progress,
        ) as bar,
    ):
        while chunk := response.read(1 << 16):
            out.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    if length is not None and received != length:  # (a disabled bar counts nothing)
        raise DataError(f"truncated download ({start + received} of {start + length} bytes)")


def verified_by_record(folder: Path, names: list[str], title: str) -> bool:
    """Whether every file of `names` is in `folder` with its SHA-256 recorded; False when one
    is missing or unrecorded (cut short before it was).

    Raises:
        DataError: a file's content is not what was recorded.
    """
    recorded = read_record(folder)
    if not all(name in recorded and (folder / name).is_file() for name in names):
        return False
    for name in names:
        check_file(folder / name, "sha256", recorded[name], f"the {title} {name} downloaded")
    return True


def read_record(folder: Path) -> dict[str, str]:
    """The SHA-256 recorded of each file, by its path in `folder`."""
    try:
        lines = (folder / RECORD).read_text().splitlines()
    except FileNotFoundError:
        return {}
    return {name: digest for digest, _, name in (line.partition("  ") for line in lines) if name}


def add_to_record(folder: Path, digests: dict[str, str]) -> None:
    """Adds `digests` to the folder's record, in `sha256sum`'s format."""
    merged = read_record(folder) | digests
    write_atomic(folder / RECORD, "".join(f"{d}  {n}\n" for n, d in sorted(merged.items())))


def check_file(path: Path, algorithm: str, expected: str, what: str) -> None:
    """Refuses a file whose `algorithm` ("md5", "sha256") digest is not `expected`.

    Raises:
        DataError: naming the file, saying it is not `what`, and to delete it.
    """
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, algorithm).hexdigest()
    if digest != expected:
        raise DataError(
            f"{path}: checksum mismatch ({algorithm.upper()} {digest}, expected {expected}); "
            f"this is not {what}. Delete it to download again."
        )
