"""Where Fashion-MNIST is found: the folders looked in, in docs/data.md's order, then a download."""

from __future__ import annotations

from pathlib import Path

import pytest

from convnet.data import sources

FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def holding_fashion_mnist(folder: Path) -> Path:
    """`folder` with the four files in it (empty: finding them looks at names only)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (folder / name).write_bytes(b"")
    return folder


@pytest.fixture
def downloads(tmp_path, monkeypatch) -> list[Path]:
    """No copy anywhere but where the test puts one: the Debian package's folder moved into
    tmp_path, no $CONVNET_DATA; and the files "downloaded" recorded, not fetched."""
    monkeypatch.setattr(sources, "DEBIAN_DIR", tmp_path / "usr-share-datasets" / "fashion-mnist")
    monkeypatch.delenv("CONVNET_DATA", raising=False)
    monkeypatch.delenv(sources.MIRROR_ENV, raising=False)
    fetched = []
    monkeypatch.setattr(
        sources, "download", lambda name, target, md5, **kw: fetched.append(target / name)
    )
    return fetched


def test_fashion_mnist_is_looked_for_in_order_then_downloaded_into_the_cache(
    tmp_path, private_cache, monkeypatch, downloads
):
    """--data-dir, $CONVNET_DATA, ~/.cache/convnet/fashion-mnist, /usr/share/datasets/
    fashion-mnist (the Debian package's), then a download into the cache."""
    cache = private_cache / "convnet" / "fashion-mnist"  # $XDG_CACHE_HOME is honoured
    assert sources.find_fashion_mnist() is None
    assert sources.ensure_fashion_mnist(progress=False) == cache
    assert sorted(path.name for path in downloads) == sorted(FILES)
    assert {path.parent for path in downloads} == {cache}
    downloads.clear()

    # Each folder found wins over those after it; none is downloaded again.
    debian = holding_fashion_mnist(sources.DEBIAN_DIR)
    assert sources.ensure_fashion_mnist(progress=False) == debian
    holding_fashion_mnist(cache)
    assert sources.ensure_fashion_mnist(progress=False) == cache
    environment = holding_fashion_mnist(tmp_path / "from-env")
    monkeypatch.setenv("CONVNET_DATA", str(environment))
    assert sources.ensure_fashion_mnist(progress=False) == environment
    given = holding_fashion_mnist(tmp_path / "given")
    assert sources.ensure_fashion_mnist(given, progress=False) == given
    assert downloads == []

    # A folder missing one of the four files is passed over for the next.
    (given / FILES[-1]).unlink()
    assert sources.find_fashion_mnist(given) == environment
