"""Property tests: mutated CSV, IDX, NPZ and image inputs give a valid Dataset or a DataError.

Each test starts from a small valid file, mutates it (truncation, random bytes, wrong sizes,
NaN, huge dimensions, odd image modes) and reads it through `load_source`. Nothing but
`DataError` may escape. Where the input is known, the outcome is too: the unmutated file reads
back as the images and labels written, and one edit known to break it (a pixel of 256, a row
short of a cell, a header that declares another shape, ...) is refused with a DataError, so a
reader that refused everything, or read anything, would fail. Random mutations may go either
way. `TRIED` counts the inputs; run with `-s` to see the totals.
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
from conftest import make_images
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


VALID, INVALID = "valid", "invalid"  # what an input is known to be; None: not known


def read(path: Path, format: str, expected: str | None = None) -> dict[str, Dataset] | None:
    """Reads `path`: a valid Dataset or a DataError, anything else fails. An input `expected`
    VALID must read (its splits are returned), one expected INVALID must be a DataError."""
    TRIED[format] += 1
    try:
        splits = load_source(path, format)
    except DataError as error:
        assert str(error), "a DataError must say what is wrong"
        OUTCOMES[format, expected or "random", "DataError"] += 1
        assert expected != VALID, f"a valid {format} input was refused: {error}"
        return None
    assert splits and "train" in splits
    for data in splits.values():
        assert isinstance(data, Dataset)
        assert data.x.dtype == np.uint8 and data.x.ndim == 4 and min(data.x.shape) > 0
        assert data.y.dtype == np.int64 and data.y.shape == (len(data.x),)
        assert data.y.min() >= 0 and data.y.max() < data.num_classes <= 1000
    OUTCOMES[format, expected or "random", "read"] += 1
    assert expected != INVALID, f"an invalid {format} input was read: {splits}"
    return splits


def assert_read_back(data: Dataset, written: Dataset) -> None:
    np.testing.assert_array_equal(data.x, written.x)
    np.testing.assert_array_equal(data.y, written.y)


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


# Cells that make a row invalid: as a pixel (not a number 0-255), and as a label (not a
# whole number >= 0 that leaves at most 1000 classes; any other text names a class).
BAD_PIXELS = sorted(set(CELLS) - {"-0"})
BAD_LABELS = ["nan", "NaN", "", "-1", "1e309", "inf", "3.5", "99999999999999999999", "2147483647"]


def csv_images() -> Dataset:
    return make_images(6, side=4)


def valid_csv(header: bool) -> str:
    data = csv_images()
    rows = [",".join(map(str, [y, *x])) for y, x in zip(data.y, data.x.reshape(6, -1), strict=True)]
    head = [",".join(["label"] + [f"pixel{i}" for i in range(16)])] if header else []
    return "\n".join(head + rows) + "\n"


@st.composite
def csv_texts(draw) -> tuple[bytes, str | None]:
    """A CSV file and what it is known to be: VALID as written, INVALID after one known-bad
    edit, None after random ones."""
    header = draw(st.booleans())
    lines = [line.split(",") for line in valid_csv(header).splitlines()]
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    kind = draw(st.sampled_from([VALID, INVALID, None]))
    if kind is not None:
        if kind == INVALID:
            row = lines[draw(st.integers(int(header), len(lines) - 1))]  # a data row
            edit = draw(st.sampled_from(["pixel", "label", "drop", "add"]))
            if edit == "pixel":
                row[draw(st.integers(1, len(row) - 1))] = draw(st.sampled_from(BAD_PIXELS))
            elif edit == "label":
                row[0] = draw(st.sampled_from(BAD_LABELS))
            elif edit == "drop":
                del row[draw(st.integers(0, len(row) - 1))]
            else:
                row.insert(draw(st.integers(0, len(row))), "7")
        return (newline.join(",".join(line) for line in lines) + newline).encode(), kind
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
    text = newline.join(",".join(line) for line in lines) + newline
    data = text.encode()
    return draw(st.just(data) | byte_mutations(data)), None


@FUZZ
@given(csv=csv_texts())
def test_csv_reader(tmp_path_factory, csv):
    data, expected = csv
    path = tmp_path_factory.getbasetemp() / "fuzz.csv"
    path.write_bytes(data)
    splits = read(path, "csv", expected)
    if expected == VALID:
        assert_read_back(splits["train"], csv_images())


# --- IDX -------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def idx_images() -> Dataset:
    return make_images(5, side=4)


@st.composite
def idx_pairs(draw) -> tuple[bytes, bytes, str | None]:
    """An images file, a labels file and what the pair is known to be: VALID unmutated, INVALID
    when a header declares another shape or the data is cut short (the reader takes a file
    only at exactly its declared size), None after random bytes."""
    data = idx_images()
    images, labels = idx_bytes(data.x[..., 0]), idx_bytes(data.y)
    dims = st.sampled_from([0, 1, 3, 4, 5, 2**16, 2**31 - 1, 2**32 - 1])
    which = draw(st.sampled_from(["images", "labels", "both"]))
    mutate = draw(st.sampled_from(["none", "bytes", "dimension", "ndim", "truncate"]))

    def mutated(raw: bytes) -> tuple[bytes, str | None]:
        edited = bytearray(raw)
        if mutate == "dimension":
            index = draw(st.integers(0, raw[3] - 1))
            edited[4 + 4 * index : 8 + 4 * index] = struct.pack(">I", draw(dims))
        elif mutate == "ndim":
            edited[3] = draw(st.integers(0, 255))
        elif mutate == "truncate":
            del edited[len(edited) - draw(st.integers(1, len(raw))) :]
        elif mutate == "bytes":
            edited = draw(byte_mutations(raw))
            return edited, VALID if edited == raw else None
        return bytes(edited), VALID if edited == raw else INVALID

    outcomes = []
    if which in ("images", "both"):
        images, outcome = mutated(images)
        outcomes.append(outcome)
    if which in ("labels", "both"):
        labels, outcome = mutated(labels)
        outcomes.append(outcome)
    expected = INVALID if INVALID in outcomes else VALID if set(outcomes) == {VALID} else None
    return images, labels, expected


@FUZZ
@given(pair=idx_pairs(), gz=st.booleans())
def test_idx_reader(tmp_path_factory, pair, gz):
    folder = tmp_path_factory.getbasetemp()
    suffix = ".gz" if gz else ""
    images, labels, expected = pair
    (folder / f"f-images-idx3-ubyte{suffix}").write_bytes(gzip.compress(images) if gz else images)
    (folder / f"f-labels-idx1-ubyte{suffix}").write_bytes(gzip.compress(labels) if gz else labels)
    splits = read(folder / f"f-images-idx3-ubyte{suffix}", "idx", expected)
    if expected == VALID:
        assert_read_back(splits["train"], idx_images())


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


# Odd arrays that are still valid labels: three of them, whole numbers >= 0.
LABEL_ARRAYS = {"flat", "int_labels"}


def npz_images() -> Dataset:
    return make_images(3, side=4)


@st.composite
def npz_files(draw) -> tuple[bytes, str | None]:
    """An NPZ archive and what it is known to be: VALID as written (with or without its test
    split), INVALID after one known-bad edit (an odd array for images, labels or class names;
    a missing training array), None after random edits."""
    data = npz_images()
    arrays = {"x_train": data.x[..., 0], "y_train": data.y, "x_test": data.x, "y_test": data.y}
    save = np.savez_compressed if draw(st.booleans()) else np.savez
    kind = draw(st.sampled_from([VALID, INVALID, None]))
    if kind == VALID and draw(st.booleans()):
        del arrays["x_test"], arrays["y_test"]
    elif kind == INVALID:  # its labels reach 3: any three class names are too few
        key = draw(st.sampled_from([*arrays, "class_names", "delete x_train", "delete y_train"]))
        odd = sorted(set(ODD_ARRAYS) - LABEL_ARRAYS) if key.startswith("y") else sorted(ODD_ARRAYS)
        if key.startswith("delete"):
            del arrays[key.split()[1]]
        else:
            arrays[key] = ODD_ARRAYS[draw(st.sampled_from(odd))]
    if kind is not None:
        buffer = io.BytesIO()
        save(buffer, **arrays)
        return buffer.getvalue(), kind
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from([*arrays, "class_names", "x", "y"]))
        if draw(st.booleans()) and key in arrays:
            del arrays[key]
        else:
            arrays[key] = draw(st.sampled_from(sorted(ODD_ARRAYS)).map(ODD_ARRAYS.get))
    buffer = io.BytesIO()
    save(buffer, **arrays)
    raw = buffer.getvalue()
    return draw(st.just(raw) | byte_mutations(raw)), None


@FUZZ
@given(npz=npz_files())
def test_npz_reader(tmp_path_factory, npz):
    data, expected = npz
    path = tmp_path_factory.getbasetemp() / "fuzz.npz"
    path.write_bytes(data)
    splits = read(path, "npz", expected)
    if expected == VALID:
        for data in splits.values():
            assert_read_back(data, npz_images())


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


GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}  # read as one channel; the others as RGB
MAX_PIXELS = 4096 * 4096  # the folder reader's limit: a larger header is corrupt or a bomb


@st.composite
def image_files(draw) -> tuple[str, bytes, str | None, int]:
    """An image file's suffix and bytes, what it is known to be (VALID as saved, INVALID when
    its header claims an empty or too large image, None after random bytes), and the channels
    a folder holding it reads with."""
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
        image = image.convert("L")
        image.save(buffer, "PNG")
        suffix = ".png"
    raw = buffer.getvalue()
    channels = 1 if image.mode in GREY_MODES else 3
    kind = draw(st.sampled_from(["valid", "bytes", "huge"]))
    if kind == "huge":
        dims = st.sampled_from([0, 1, 2**15, 2**16 - 1, 2**31 - 1, 2**32 - 1])
        width, height = draw(dims), draw(dims)
        refused = width * height == 0 or width * height > MAX_PIXELS
        return ".png", png_with_size(width, height), INVALID if refused else None, 1
    if kind == "valid":
        return suffix, raw, VALID, channels
    mutated = draw(byte_mutations(raw))
    return suffix, mutated, VALID if mutated == raw else None, channels


@FUZZ
@given(image=image_files())
def test_folder_reader(tmp_path_factory, image):
    root = tmp_path_factory.getbasetemp() / "fuzz-folder"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for old in (root / name).iterdir():
            old.unlink()
        Image.new("L", (4, 4), 50).save(root / name / "ok.png")
    suffix, raw, expected, channels = image
    (root / "b" / f"odd{suffix}").write_bytes(raw)
    splits = read(root, "folder", expected)
    if expected == VALID:  # a/ok.png, b/odd, b/ok.png
        data = splits["train"]
        assert (data.class_names, data.y.tolist()) == (("a", "b"), [0, 1, 1])
        assert data.x.shape == (3, 4, 4, channels)


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
