"""Finding Fashion-MNIST on this machine, or downloading it once into the user cache."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from convnet.data.dataset import FASHION_MNIST_CLASSES, Dataset
from convnet.data.idx import read_idx_dataset
from convnet.errors import DataError
from convnet.files import cache_dir, replace_durably

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
SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def candidate_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Where Fashion-MNIST is looked for, in order."""
    dirs = [data_dir, os.environ.get("CONVNET_DATA"), cache_dir() / "fashion-mnist", DEBIAN_DIR]
    return [Path(d) for d in dirs if d]


def _find_file(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def find_fashion_mnist(data_dir: str | Path | None = None) -> Path | None:
    """The first candidate folder that holds all four Fashion-MNIST files, or None."""
    for directory in candidate_dirs(data_dir):
        if all(_find_file(directory, stem) for stem in CONTENT_SHA256):
            return directory
    return None


def ensure_fashion_mnist(data_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Returns a folder holding Fashion-MNIST, looking in `candidate_dirs(data_dir)`; else
    downloads it into `data_dir`, or into the cache when that is None."""
    found = find_fashion_mnist(data_dir)
    if found:
        return found
    target = Path(data_dir) if data_dir else cache_dir() / "fashion-mnist"
    for name, md5 in PUBLISHED_MD5.items():
        if not (target / name).is_file():
            download(name, target, md5, progress=progress)
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
            _find_file(directory, f"{prefix}-{kind}")
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
        _verify_content(_find_file(directory, stem))
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


def download(
    name: str,
    target: Path,
    md5: str,
    retries: int = 3,
    timeout: float = 30.0,
    progress: bool = True,
    mirrors: tuple[str, ...] | None = None,
    backoff: float = 1.0,
) -> Path:
    """Downloads `name` from the first mirror that serves it intact, atomically, into `target`.

    Each mirror is tried `retries` times, waiting `backoff`, 2 * `backoff`, ... seconds between
    attempts. Timeouts, connection and server errors, truncated and corrupt files are retried;
    a file is kept only once its MD5 matches, so a bad download never stays in the cache.

    Args:
        name: the file name, appended to each mirror's URL.
        target: the folder to download into.
        md5: the published MD5 of the file.
        retries: attempts per mirror.
        timeout: seconds to wait for the server at each step.
        progress: show a progress bar.
        mirrors: base URLs ending in "/"; defaults to `MIRRORS`.
        backoff: the first wait, in seconds.

    Raises:
        DataError: no mirror served a file with the expected checksum; says what each one did.
    """
    target.mkdir(parents=True, exist_ok=True)
    for stale in target.glob(f".{name}.*"):  # left by a download that was killed
        stale.unlink(missing_ok=True)
    failures = {}
    for mirror in mirrors or MIRRORS:
        for attempt in range(retries):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                return _fetch(mirror + name, target / name, md5, timeout, progress)
            except (OSError, http.client.HTTPException, DataError) as error:
                failures[mirror + name] = _describe(error)
    tried = "; ".join(f"{url}: {reason}" for url, reason in failures.items())
    raise DataError(
        f"could not download {name} ({retries} attempts per mirror). Last error from each: "
        f"{tried or 'no mirror to try'}."
    )


def _describe(error: BaseException) -> str:
    """What went wrong with one attempt, in a few words."""
    if isinstance(error, urllib.error.HTTPError):
        return f"server error HTTP {error.code} {error.reason}"
    if isinstance(error, http.client.IncompleteRead):
        return f"truncated download (connection closed after {len(error.partial)} bytes)"
    reason = getattr(error, "reason", error)
    if isinstance(reason, TimeoutError) or isinstance(error, TimeoutError):
        return f"timed out ({reason})"
    return str(reason) or type(error).__name__


def _fetch(url: str, destination: Path, md5: str, timeout: float, progress: bool) -> Path:
    digest, received = hashlib.md5(), 0
    fd, tmp = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, os.fdopen(fd, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=destination.name, disable=not progress
            ) as bar:
                while chunk := response.read(1 << 16):
                    digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:  # (a disabled bar counts nothing)
                raise DataError(f"truncated download ({received} of {total} bytes)")
        if digest.hexdigest() != md5:
            raise DataError(
                f"corrupt download: checksum mismatch (MD5 {digest.hexdigest()}, expected {md5})"
            )
        replace_durably(tmp, destination)
        return destination
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
