"""Readers check declared sizes before inflating, and `limit` reads no more rows than it keeps.

The bombs are built in seconds: a deflate block of zeros, compressed once, is repeated (each ends
in a full flush, so it stands alone), inside a zip64 entry written by hand. Reading them runs in a
child process under an address-space cap, so that a reader that inflates everything fails there
instead of taking the machine's memory.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images
from PIL import Image

from convnet.config import TrainConfig
from convnet.data import arrays, hold_out_test, load_source, load_training_data
from convnet.data.folder import read_folder
from convnet.data.idx import read_idx, read_idx_dataset
from convnet.data.npz import read_npz
from convnet.errors import DataError

BOMB_SHAPE = (10_000_000, 28, 28)  # uint8: 7.84 GB inflated
BLOCK = 2**24  # zeros per repeated deflate block
CAP = 3 * 2**30  # the child's address space: numpy and polars, far from 7.84 GB


def npy_header(shape: tuple[int, ...], descr: str = "|u1") -> bytes:
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def write_zeros_member(path: Path, name: str, head: bytes, zeros: int) -> None:
    """A zip archive of one deflated member: `head`, then `zeros` zero bytes (zip64 sizes)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(bytes(BLOCK)) + deflate.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(zeros, BLOCK)
    last = deflate.compress(bytes(rest)) + deflate.flush()
    crc = zlib.crc32(head)
    for _ in range(count):
        crc = zlib.crc32(bytes(BLOCK), crc)
    crc = zlib.crc32(bytes(rest), crc)
    packed = len(first) + count * len(block) + len(last)
    extra = struct.pack("<HHQQ", 1, 16, len(head) + zeros, packed)  # zip64 sizes
    fields = struct.pack("<HHHHHIII", 45, 0, 8, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF)
    lengths = struct.pack("<HH", len(name), len(extra))
    with path.open("wb") as file:
        file.write(b"PK\x03\x04" + fields + lengths + name.encode() + extra)
        file.write(first)
        for _ in range(count):
            file.write(block)
        file.write(last)
        start = file.tell()
        entry = b"PK\x01\x02" + struct.pack("<H", 45) + fields + lengths
        entry += struct.pack("<HHHII", 0, 0, 0, 0, 0) + name.encode() + extra
        file.write(entry)
        file.write(b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, len(entry), start, 0))


def add_arrays(path: Path, **arrays: np.ndarray) -> Path:
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array)
    return path


def write_bomb(path: Path, shape: tuple[int, ...], start: bytes = b"") -> Path:
    """x_train of `shape` uint8, `start` then zeros; labels and a small test split of zeros."""
    zeros = int(np.prod(shape)) - len(start)
    write_zeros_member(path, "x_train.npy", npy_header(shape) + start, zeros)
    y = np.zeros(shape[0], np.uint8)
    return add_arrays(path, y_train=y, x_test=np.zeros((100, *shape[1:]), np.uint8), y_test=y[:100])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    train, test = make_images(2000, seed=1), make_images(100, seed=2)
    honest = folder / "honest.npz"
    np.savez(honest, x_train=train.x[..., 0], y_train=train.y, x_test=test.x[..., 0], y_test=test.y)
    bright = bytes(train.x[0].ravel())  # its first image settles the range: 0-255
    return {
        "honest": honest,
        "bomb": write_bomb(folder / "bomb.npz", BOMB_SHAPE, start=bright),
        "zeros": write_bomb(folder / "zeros.npz", (500_000, 28, 28)),  # 392 MB, all zero
    }


CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
from convnet.data import load_source
try:
    splits = load_source(sys.argv[1], "npz", limit=2000)
    found = {{"rows": len(splits["train"]), "range": splits["train"].pixel_range}}
except Exception as error:
    found = {{"refused": f"{{type(error).__name__}}: {{error}}"}}
found["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(found))
"""


def read_in_child(path: Path) -> dict:
    """What `load_source(path, limit=2000)` gives in a process capped at CAP bytes, and that
    process's peak resident memory (KiB)."""
    code = CHILD.format(cap=CAP)
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_a_bomb_with_a_limit_reads_only_the_rows_it_keeps(files):
    honest, bomb = read_in_child(files["honest"]), read_in_child(files["bomb"])
    print(f"peak memory with limit 2000: bomb {bomb['peak'] / 1024:.0f} MB, honest NPZ "
          f"{honest['peak'] / 1024:.0f} MB")  # fmt: skip
    assert honest["rows"] == 2000
    assert bomb == bomb | {"rows": 2000, "range": "0,255"}, bomb
    assert bomb["peak"] <= 1.5 * honest["peak"], (bomb, honest)


def test_rows_not_kept_are_scanned_for_the_range_without_being_held(files):
    """All zeros settle no range: every row is read to detect it, a chunk at a time."""
    honest, zeros = read_in_child(files["honest"]), read_in_child(files["zeros"])
    assert zeros == zeros | {"rows": 2000, "range": "0,1"}, zeros  # 392 MB declared
    assert zeros["peak"] <= 1.5 * honest["peak"], (zeros, honest)


def test_a_bomb_without_a_limit_is_refused_before_inflating(files, monkeypatch):
    monkeypatch.setattr(arrays, "available_memory", lambda: 4 * 10**9)
    started = time.perf_counter()
    with pytest.raises(DataError) as refused:
        read_npz(files["bomb"])
    assert time.perf_counter() - started < 1  # inflating it all takes half a minute
    message = str(refused.value)
    assert message.startswith(f"{files['bomb']}: 'x_train': the header declares shape ")
    assert "(10000000, 28, 28) of uint8: 7,840,000,000 bytes to hold in memory" in message
    assert "expected at most 2,000,000,000 (50% of the 4,000,000,000 bytes" in message
    assert "\n" not in message


def test_a_header_declaring_more_than_any_memory_is_refused(tmp_path):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x_train.npy", npy_header((10**9, 28, 28)) + bytes(100))
        archive.writestr("y_train.npy", npy_header((10**9,)))
    with pytest.raises(DataError, match=r"huge.npz: 'x_train': the header declares shape "):
        load_source(path)


# --- the rows `limit` keeps, and what it leaves as before ----------------------------------------


def small_ints(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Images of 0-15 with a 16 only in the last one, and a class seen only there too."""
    x = np.resize(np.arange(16, dtype=np.uint8), (n, 6, 6))
    x[-1, 0, 0] = 16
    y = np.zeros(n, np.int64)
    y[-1] = 4
    return x, y


@pytest.mark.parametrize(
    "x",
    [
        small_ints(50)[0],
        np.resize(np.linspace(0, 1, 7), (50, 6, 6)),  # floats 0-1 ...
        np.concatenate([np.resize(np.linspace(0, 1, 7), (49, 6, 6)), -np.ones((1, 6, 6))]),
    ],
    ids=["0-16", "0-1", "-1-1"],
)
def test_a_limit_keeps_the_range_and_classes_of_the_whole_file(tmp_path, x):
    y = small_ints(len(x))[1]
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:3], y_test=y[:3])
    whole, first = read_npz(path)["train"], read_npz(path, limit=10)["train"]
    assert first.pixel_range == whole.pixel_range
    assert first.class_names == whole.class_names == ("0", "1", "2", "3", "4")
    np.testing.assert_array_equal(first.x, whole.x[:10])
    np.testing.assert_array_equal(first.y, whole.y[:10])


def test_a_limit_names_the_image_whose_values_fit_no_range(tmp_path):
    x = np.zeros((30, 4, 4))
    x[25, 1, 1] = 300.5
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.zeros(30, np.int64))
    for limit in (None, 5):
        with pytest.raises(DataError, match=r"values from 0 to 300.5 \(image 25 holds 300.5\)"):
            read_npz(tmp_path / "d.npz", limit=limit)


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_idx_limit_reads_the_first_rows_with_the_whole_files_range(tmp_path, compress):
    x, y = small_ints(40)
    suffix = ".gz" if compress else ""
    images = write_idx(tmp_path / f"t-images-idx3-ubyte{suffix}", x, compress)
    write_idx(tmp_path / f"t-labels-idx1-ubyte{suffix}", y, compress)
    whole, first = read_idx_dataset(images), read_idx_dataset(images, limit=7)
    assert (first.pixel_range, first.class_names) == (whole.pixel_range, whole.class_names)
    np.testing.assert_array_equal(first.x, whole.x[:7])
    np.testing.assert_array_equal(read_idx(images, limit=7), x[:7])


def test_idx_header_declaring_more_than_the_file_holds_is_refused_unread(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">III", 4_000_000_000, 28, 28) + bytes(99))
    with pytest.raises(
        DataError,
        match=r"x-idx3-ubyte: IDX header declares shape \(4000000000, 28, 28\) "
        r"\(3136000000016 bytes\) but the file holds 115 bytes",
    ):
        read_idx(path)


def test_gzipped_idx_declaring_more_than_memory_is_refused_before_inflating(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"  # its size is known only once inflated: the header tells
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">III", 4 * 10**9, 28, 28)))
    with pytest.raises(
        DataError,
        match=r"x-idx3-ubyte.gz: the header declares shape \(4000000000, 28, 28\) of uint8: "
        r"3,136,000,000,000 bytes to hold in memory; expected at most [\d,]+ \(50% of the",
    ):
        read_idx(path)


def test_a_limit_reads_the_first_rows_only_when_the_source_has_a_test_set(tmp_path):
    """Without one, the test set held out is a seeded sample of every row, so all are read."""
    train, test = make_images(300, seed=1), make_images(20, seed=2)
    with_test = tmp_path / "with.npz"
    np.savez(with_test, x_train=train.x[..., 0], y_train=train.y, x_test=test.x, y_test=test.y)
    without = tmp_path / "without.npz"
    np.savez(without, x_train=train.x[..., 0], y_train=train.y)
    first = load_training_data(TrainConfig(train=str(with_test), limit=50))
    assert first.record.examples == 50
    assert examples(first.train, first.validation) == examples(train.take(slice(0, 50)))
    with pytest.warns(UserWarning, match="holding out"):
        held = load_training_data(TrainConfig(train=str(without), limit=50))
    with pytest.warns(UserWarning):  # as before: the whole file, held out of, then cut
        expected = hold_out_test(load_source(without)["train"], 0.2, 42)[0].take(slice(0, 50))
    assert examples(held.train, held.validation) == examples(expected)
    assert held.record.sha256 == expected.checksum()


def examples(*parts) -> list[bytes]:
    """The (image, label) pairs of `parts`, in an order of their own: the same examples split
    two ways give the same list."""
    pairs = (zip(part.x, part.y, strict=True) for part in parts)
    return sorted(x.tobytes() + bytes([y]) for pair in pairs for x, y in pair)


# --- folders ----------------------------------------------------------------------------------


def test_folder_limit_decodes_only_the_images_it_keeps(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("L", (8, 8), 40 * i).save(tmp_path / name / f"{i}.png")
    Image.new("L", (6, 6)).save(tmp_path / "b" / "3.png")  # a size of its own: resized
    raw = (tmp_path / "b" / "2.png").read_bytes()
    at = raw.index(b"IDAT")
    (tmp_path / "b" / "2.png").write_bytes(raw[: at + 6])  # a sound header, its pixels cut off
    data = read_folder(tmp_path, limit=4)
    assert data.x.shape == (4, 8, 8, 1) and data.y.tolist() == [0, 0, 0, 1]
    with pytest.raises(DataError, match=r"2.png: not a readable image"):
        read_folder(tmp_path)


def test_folder_whose_images_memory_cannot_hold_is_refused_before_decoding(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    for i in range(3):
        Image.new("RGB", (100, 100)).save(tmp_path / "a" / f"{i}.png")
    monkeypatch.setattr(arrays, "available_memory", lambda: 10_000)
    with pytest.raises(
        DataError,
        match=r": 3 images of 100 x 100 RGB pixels: 90,000 bytes to hold in memory; expected at "
        r"most 5,000 \(50% of the 10,000 bytes",
    ):
        read_folder(tmp_path)


def test_available_memory_is_read():
    assert arrays.available_memory() > 2**20
