"""Property tests: mutated CSV, IDX, NPZ and image inputs give a valid Dataset or a DataError.

Each test starts from a small valid file, mutates it (truncation, random bytes, wrong sizes,
NaN, huge dimensions, odd image modes) and reads it through `load_source`. Nothing but
`DataError` may escape. `TRIED` counts the inputs; run with `-s` to see the totals.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images, write_csv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from convnet.data import load_source
from convnet.data.dataset import Dataset
from convnet.errors import DataError

FUZZ = settings(
    max_examples=int(os.environ.get("CONVNET_FUZZ_EXAMPLES", "1000")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TRIED: Counter = Counter()
OUTCOMES: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print(f"\nfuzzed inputs per format: {dict(TRIED)}, total {sum(TRIED.values())}")
    print(f"outcomes: {dict(OUTCOMES)}")


@st.composite
def byte_mutations(draw, data: bytes) -> bytes:
    """One to three edits: truncate, overwrite, insert, delete or append random bytes."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "overwrite", "insert", "delete", "append"]))
        at = draw(st.integers(0, len(data)))
        if op == "truncate":
            del data[at:]
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            data += draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


def read(path: Path, format: str) -> None:
    """Reads `path`; passes on a valid Dataset or a DataError, fails on anything else."""
    TRIED[format] += 1
    try:
        splits = load_source(path, format)
    except DataError as error:
        assert str(error), "a DataError must say what is wrong"
        OUTCOMES["DataError"] += 1
        return
    assert splits and "train" in splits
    for data in splits.values():
        assert isinstance(data, Dataset)
        assert data.x.dtype == np.uint8 and data.x.ndim == 4 and min(data.x.shape) > 0
        assert data.y.dtype == np.int64 and data.y.shape == (len(data.x),)
        assert data.y.min() >= 0 and data.y.max() < data.num_classes <= 1000
    OUTCOMES["valid"] += 1


# --- CSV -------------------------------------------------------------------------------------

CELLS = [
    "nan",
    "NaN",
    "",
    "-1",
    "256",
    "1e309",
    "inf",
    "3.5",
    "abc",
    '"',
    " 7 ",
    "0x10",
    "99999999999999999999",
    "2147483647",
    "9223372036854775807",
    "-0",
    "１",
]


def valid_csv(header: bool) -> str:
    data = make_images(6, side=4)
    rows = [",".join(map(str, [y, *x])) for y, x in zip(data.y, data.x.reshape(6, -1), strict=True)]
    head = [",".join(["label"] + [f"pixel{i}" for i in range(16)])] if header else []
    return "\n".join(head + rows) + "\n"


@st.composite
def csv_texts(draw) -> bytes:
    lines = [line.split(",") for line in valid_csv(draw(st.booleans())).splitlines()]
    for _ in range(draw(st.integers(0, 4))):
        row = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["cell", "drop", "add", "delete_row", "duplicate_row"]))
        col = draw(st.integers(0, len(lines[row]) - 1)) if lines[row] else 0
        if op == "cell" and lines[row]:
            lines[row][col] = draw(st.sampled_from(CELLS) | st.text(max_size=5))
        elif op == "drop" and lines[row]:
            del lines[row][col]
        elif op == "add":
            lines[row].insert(col, draw(st.sampled_from(CELLS)))
        elif op == "delete_row" and len(lines) > 1:
            del lines[row]
        elif op == "duplicate_row":
            lines.insert(row, list(lines[row]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(",".join(line) for line in lines) + newline
    data = text.encode()
    return draw(st.just(data) | byte_mutations(data))


@FUZZ
@given(data=csv_texts())
def test_csv_reader(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "fuzz.csv"
    path.write_bytes(data)
    read(path, "csv")


# --- IDX -------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


@st.composite
def idx_pairs(draw) -> tuple[bytes, bytes]:
    data = make_images(5, side=4)
    images, labels = idx_bytes(data.x[..., 0]), idx_bytes(data.y)
    dims = st.sampled_from([0, 1, 3, 4, 5, 2**16, 2**31 - 1, 2**32 - 1])
    which = draw(st.sampled_from(["images", "labels", "both"]))
    mutate = draw(st.sampled_from(["bytes", "dimension", "ndim"]))

    def mutated(raw: bytes) -> bytes:
        raw = bytearray(raw)
        if mutate == "dimension":
            index = draw(st.integers(0, raw[3] - 1))
            raw[4 + 4 * index : 8 + 4 * index] = struct.pack(">I", draw(dims))
            return bytes(raw)
        if mutate == "ndim":
            raw[3] = draw(st.integers(0, 255))
            return bytes(raw)
        return draw(byte_mutations(bytes(raw)))

    if which in ("images", "both"):
        images = mutated(images)
    if which in ("labels", "both"):
        labels = mutated(labels)
    return images, labels


@FUZZ
@given(pair=idx_pairs(), gz=st.booleans())
def test_idx_reader(tmp_path_factory, pair, gz):
    folder = tmp_path_factory.getbasetemp()
    suffix = ".gz" if gz else ""
    images, labels = pair
    (folder / f"f-images-idx3-ubyte{suffix}").write_bytes(gzip.compress(images) if gz else images)
    (folder / f"f-labels-idx1-ubyte{suffix}").write_bytes(gzip.compress(labels) if gz else labels)
    read(folder / f"f-images-idx3-ubyte{suffix}", "idx")


# --- NPZ -------------------------------------------------------------------------------------

ODD_ARRAYS = {
    "nan": np.full((3, 4, 4), np.nan),
    "negative": -np.ones((3, 4, 4)),
    "big": np.full((3, 4, 4), 1e6),
    "fraction": np.full((3, 4, 4), 0.5),
    "empty": np.zeros((0, 4, 4), np.uint8),
    "zero_width": np.zeros((3, 4, 0), np.uint8),
    "flat": np.zeros(3, np.uint8),
    "five_d": np.zeros((3, 4, 4, 1, 1), np.uint8),
    "bool": np.ones((3, 4, 4), bool),
    "strings": np.array(["a", "b", "c"]),
    "complex": np.ones((3, 4, 4), complex),
    "scalar": np.array(7),
    "float_labels": np.array([0.0, 1.5, 2.0]),
    "huge_labels": np.array([0, 1, 2**62]),
    "negative_labels": np.array([0, -1, 2]),
    "labels_2d": np.zeros((3, 1), np.int64),
    "int_labels": np.array([0, 1, 2]),
}


@st.composite
def npz_files(draw) -> bytes:
    data = make_images(3, side=4)
    arrays = {"x_train": data.x[..., 0], "y_train": data.y, "x_test": data.x, "y_test": data.y}
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from([*arrays, "class_names", "x", "y"]))
        if draw(st.booleans()) and key in arrays:
            del arrays[key]
        else:
            arrays[key] = draw(st.sampled_from(sorted(ODD_ARRAYS)).map(ODD_ARRAYS.get))
    buffer = io.BytesIO()
    (np.savez_compressed if draw(st.booleans()) else np.savez)(buffer, **arrays)
    raw = buffer.getvalue()
    return draw(st.just(raw) | byte_mutations(raw))


@FUZZ
@given(data=npz_files())
def test_npz_reader(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "fuzz.npz"
    path.write_bytes(data)
    read(path, "npz")


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, x_train=np.array([{"a": 1}], dtype=object), y_train=np.array([0]))
    with pytest.raises(DataError, match=r"not a readable \.npz archive of plain arrays.*pickle"):
        load_source(path)


# --- image folders ---------------------------------------------------------------------------

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "I;16", "F", "YCbCr", "HSV", "LAB"]


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (huge dimensions) with almost no data."""
    buffer = io.BytesIO()
    Image.new("L", (4, 4)).save(buffer, "PNG")
    raw = bytearray(buffer.getvalue())
    ihdr = raw[12:29]  # type, width, height, depth, colour, ...
    ihdr[4:12] = struct.pack(">II", width, height)
    raw[12:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(raw)


@st.composite
def image_files(draw) -> tuple[str, bytes]:
    mode = draw(st.sampled_from(MODES))
    size = draw(st.sampled_from([(4, 4), (4, 4), (5, 3), (1, 1)]))
    image = Image.new(mode if mode not in {"HSV", "LAB", "YCbCr"} else "RGB", size)
    if mode in {"HSV", "LAB", "YCbCr"}:
        image = image.convert(mode) if mode == "YCbCr" else Image.new(mode, size)
    suffix = ".tiff" if mode in {"CMYK", "I;16", "F", "I", "HSV", "LAB", "YCbCr"} else ".png"
    buffer = io.BytesIO()
    try:
        image.save(buffer, "TIFF" if suffix == ".tiff" else "PNG")
    except (OSError, ValueError, KeyError):  # a mode this format cannot store
        image.convert("L").save(buffer, "PNG")
        suffix = ".png"
    raw = buffer.getvalue()
    kind = draw(st.sampled_from(["valid", "bytes", "huge"]))
    if kind == "huge":
        dims = st.sampled_from([0, 1, 2**15, 2**16 - 1, 2**31 - 1, 2**32 - 1])
        return ".png", png_with_size(draw(dims), draw(dims))
    return suffix, raw if kind == "valid" else draw(byte_mutations(raw))


@FUZZ
@given(image=image_files())
def test_folder_reader(tmp_path_factory, image):
    root = tmp_path_factory.getbasetemp() / "fuzz-folder"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for old in (root / name).iterdir():
            old.unlink()
        Image.new("L", (4, 4), 50).save(root / name / "ok.png")
    suffix, raw = image
    (root / "b" / f"odd{suffix}").write_bytes(raw)
    read(root, "folder")


def test_valid_inputs_still_read(tmp_path):
    """The unmutated starting points are valid, so the tests above exercise real readers."""
    path = write_csv(tmp_path / "ok.csv", make_images(6, side=4))
    assert len(load_source(path, "csv")["train"]) == 6


# --- what the fuzzing found, pinned ----------------------------------------------------------


def _npz(tmp_path: Path, **arrays) -> Path:
    data = make_images(3, side=4)
    np.savez(tmp_path / "a.npz", **({"x_train": data.x, "y_train": data.y} | arrays))
    return tmp_path / "a.npz"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.joinpath("a.csv").write_bytes(b"\x80,1,2,3,4\n") and p / "a.csv", "UTF-8"),
        (
            lambda p: p.joinpath("a.csv").write_text("a,a,b,c,d\n1,2,3,4,5\n") and p / "a.csv",
            "names column 'a' twice",
        ),
        (
            lambda p: np.save(p / "a.npy", np.zeros(3)) or (p / "a.npy").rename(p / "a.npz"),
            "holds a single .npy array",
        ),
        (
            lambda p: _npz(p, y_train=np.array([0, 1, 2**62])),
            "label 4611686018427387904 would make",
        ),
        (lambda p: _npz(p, class_names=np.array("abc")), "'class_names' has shape"),
        (lambda p: _npz(p, x_train=np.zeros((0, 4, 4))), "none of size 0"),
        (
            lambda p: (
                p.joinpath("x-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((0, 4, 4))))
                and p.joinpath("x-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(0)))
                and p / "x-images-idx3-ubyte"
            ),
            "declares 0 images",
        ),
    ],
)
def test_found_by_fuzzing(tmp_path, make, message):
    with pytest.raises(DataError, match=re.escape(message)):
        load_source(make(tmp_path))


def test_broken_png_chunk_is_a_data_error(tmp_path):
    """Pillow raises SyntaxError for a bad PNG chunk; the folder reader used to let it escape."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.new("L", (4, 4)).save(tmp_path / name / "ok.png")
    raw = (tmp_path / "b" / "ok.png").read_bytes()
    at = raw.index(b"IDAT")  # a zero chunk length: Pillow reads the pixels as the next chunk
    (tmp_path / "b" / "bad.png").write_bytes(raw[: at - 4] + b"\x00" * 4 + raw[at:])
    with pytest.raises(DataError, match=r"bad\.png: not a readable image"):
        load_source(tmp_path)
