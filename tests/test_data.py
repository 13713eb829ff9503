"""Readers (IDX, CSV, NPZ, folders), format dispatch, Fashion-MNIST sources and the split."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASS_NAMES, make_images, write_csv, write_npz
from PIL import Image

from convnet import api
from convnet.data import NAMED_CLASS_SETS, guess_format, load_source, load_train_test, split
from convnet.data.csv import read_csv
from convnet.data.dataset import FASHION_MNIST_CLASSES, Dataset
from convnet.data.folder import read_folder
from convnet.data.idx import read_idx, read_idx_dataset
from convnet.data.npz import read_npz
from convnet.data.sources import find_fashion_mnist, load_fashion_mnist
from convnet.errors import DataError, on_the_command_line


def write_idx(path, array: np.ndarray, compress: bool = False):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


# --- Dataset ------------------------------------------------------------------------------------


def test_dataset_rejects_float_pixels():
    with pytest.raises(DataError, match=r"images must be uint8 of shape \(N, H, W, C\)"):
        Dataset(np.zeros((2, 4, 4, 1), np.float32), np.zeros(2, np.int64), ("a",), "x")


def test_dataset_rejects_label_out_of_range():
    with pytest.raises(DataError, match=r"labels must be in \[0, 1\]. Received: min=0, max=5"):
        Dataset(np.zeros((2, 4, 4, 1), np.uint8), np.array([0, 5]), ("a", "b"), "x")


def test_dataset_checksum_changes_with_one_pixel(tiny):
    changed = tiny.x.copy()
    changed[0, 0, 0, 0] ^= 1
    assert tiny.checksum() != Dataset(changed, tiny.y, tiny.class_names).checksum()


# --- IDX ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, tiny, compress):
    suffix = ".gz" if compress else ""
    images = write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", tiny.x[..., 0], compress)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", tiny.y, compress)
    data = read_idx_dataset(images)
    np.testing.assert_array_equal(data.x, tiny.x)
    np.testing.assert_array_equal(data.y, tiny.y)
    assert data.class_names == ("0", "1", "2", "3")


def test_idx_wrong_magic(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(b"PK\x03\x04" + bytes(20))
    with pytest.raises(DataError, match="not an IDX file; expected magic bytes 00 00"):
        read_idx(path)


def test_idx_truncated(tmp_path, tiny):
    path = write_idx(tmp_path / "x-idx3-ubyte", tiny.x[..., 0])
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"declares shape \(64, 28, 28\) .* holds 50182 bytes"):
        read_idx(path)


def test_idx_corrupt_gzip(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(b"\x1f\x8b" + bytes(30))
    with pytest.raises(DataError, match="not a readable gzip file"):
        read_idx(path)


def test_idx_count_mismatch(tmp_path, tiny):
    images = write_idx(tmp_path / "t-images-idx3-ubyte", tiny.x[..., 0])
    write_idx(tmp_path / "t-labels-idx1-ubyte", tiny.y[:10])
    with pytest.raises(DataError, match="64 images but t-labels-idx1-ubyte has 10 labels"):
        read_idx_dataset(images)


# --- CSV ----------------------------------------------------------------------------------------


def test_csv_kaggle_layout(tmp_path, tiny):
    data = read_csv(write_csv(tmp_path / "t.csv", tiny))
    np.testing.assert_array_equal(data.x, tiny.x)
    np.testing.assert_array_equal(data.y, tiny.y)


def test_csv_blank_lines_at_the_end_are_ignored_others_named(tmp_path, tiny):
    path = write_csv(tmp_path / "t.csv", tiny)
    path.write_text(path.read_text() + "\n\n")
    data = read_csv(path)
    np.testing.assert_array_equal(data.x, tiny.x)
    np.testing.assert_array_equal(data.y, tiny.y)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:5] + [""] + lines[5:]) + "\n")
    with pytest.raises(DataError, match=r"t.csv: line 6, column 'pixel1': missing pixel"):
        read_csv(path)


def test_csv_without_a_label_column_says_so(tmp_path, tiny):
    path = write_csv(tmp_path / "t.csv", tiny)
    lines = [line.split(",", 1)[1] for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")  # pixel1..pixel784 only
    with pytest.raises(DataError, match=r"t.csv: no label column: its 784 columns make a square"):
        read_csv(path)


def test_csv_without_header_and_label_last(tmp_path, tiny):
    pixels = tiny.x.reshape(len(tiny), -1)
    rows = [",".join(map(str, [*row, label])) for row, label in zip(pixels, tiny.y, strict=True)]
    path = tmp_path / "t.csv"
    path.write_text("\n".join(rows) + "\n")
    data = read_csv(path, label_column=784)
    np.testing.assert_array_equal(data.x, tiny.x)
    np.testing.assert_array_equal(data.y, tiny.y)


def test_csv_string_labels_become_sorted_class_names(tmp_path):
    pixels = ",".join(["7"] * 4)
    path = tmp_path / "t.csv"
    path.write_text(
        f"kind,{','.join(f'p{i}' for i in range(4))}\ncat,{pixels}\nant,{pixels}\ncat,{pixels}\n"
    )
    data = read_csv(path, label_column="kind")
    assert data.class_names == ("ant", "cat")
    assert data.y.tolist() == [1, 0, 1]
    assert data.image_shape == (2, 2, 1)


def test_csv_gz_is_read_like_the_csv(tmp_path, tiny):
    plain = write_csv(tmp_path / "t.csv", tiny)
    packed = tmp_path / "t.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    data = load_source(packed)["train"]
    np.testing.assert_array_equal(data.x, tiny.x)
    np.testing.assert_array_equal(data.y, tiny.y)
    packed.write_bytes(gzip.compress(b"label,p1,p2,p3,p4\n1,2,3,4,x\n"))
    with pytest.raises(DataError, match=r"t.csv.gz: line 2, column 'p4': 'x' is not a pixel"):
        read_csv(packed)


def test_csv_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match="empty.csv: the file is empty"):
        read_csv(path)


def test_csv_not_square(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("label,a,b,c\n1,2,3,4\n")
    with pytest.raises(DataError, match="3 pixel columns is not a square image"):
        read_csv(path)


@pytest.mark.parametrize(
    ("line", "cell", "value", "message"),
    [
        (4, 784, None, "line 4 has 784 columns; expected 785"),  # None: the cell is removed
        (3, 10, "abc", "line 3, column 'pixel10': 'abc' is not a pixel value"),
        (3, 10, "\u00b2", "line 3, column 'pixel10': '\u00b2' is not a pixel value"),
        (6, 1, "256", r"values from 0 to 256 \(line 6 holds 256\); expected pixels 0-255"),
        (6, 1, "-3", r"values from -3 to \d+ \(line 6 holds -3\)"),
        (3, 0, "", "line 3, column 'label': missing label"),
        (2, 5, "", "line 2, column 'pixel5': missing pixel"),
    ],
)
def test_csv_bad_cell_is_named_by_line_and_column(tmp_path, tiny, line, cell, value, message):
    path = write_csv(tmp_path / "t.csv", tiny.take(slice(0, 5)))
    lines = path.read_text().splitlines()
    cells = lines[line - 1].split(",")
    if value is None:
        del cells[cell]
    else:
        cells[cell] = value
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        read_csv(path)


def test_csv_unknown_label_column(tmp_path, tiny):
    path = write_csv(tmp_path / "t.csv", tiny.take(slice(0, 2)))
    with pytest.raises(DataError, match="no column named 'target'"):
        read_csv(path, label_column="target")


# --- NPZ ----------------------------------------------------------------------------------------


def test_npz_splits_and_class_names(tmp_path):
    train, test = make_images(20, 1), make_images(10, 2)
    splits = read_npz(write_npz(tmp_path / "d.npz", train, test))
    assert set(splits) == {"train", "test"}
    for name, written in (("train", train), ("test", test)):
        np.testing.assert_array_equal(splits[name].x, written.x)
        np.testing.assert_array_equal(splits[name].y, written.y)
        assert splits[name].class_names == CLASS_NAMES


def test_npz_missing_key(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(
        DataError, match="missing array 'x'; expected x_train, y_train .* Found: images"
    ):
        read_npz(tmp_path / "d.npz")


def test_npz_refuses_pickled_objects(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.array([{"a": 1}], dtype=object), y_train=[0])
    with pytest.raises(DataError, match="not a readable .npz archive of plain arrays"):
        read_npz(tmp_path / "d.npz")


def test_npz_rejects_values_in_no_pixel_range(tmp_path):
    """The remedy is spelled where the user is: a keyword argument in Python, a flag in a
    command."""
    np.savez(tmp_path / "d.npz", x_train=np.full((2, 4, 4), 2.5), y_train=np.array([0, 1]))
    with pytest.raises(DataError, match=r"from 2.5 to 2.5 .*such as pixel_range='0,2.5'\.$"):
        read_npz(tmp_path / "d.npz")
    with on_the_command_line(), pytest.raises(DataError, match=r"such as --pixel-range 0,2.5\.$"):
        read_npz(tmp_path / "d.npz")


@pytest.mark.parametrize(
    "values, found, expected",
    [
        (np.array([0, 8, 16]), "0,16", [0, 128, 255]),  # scikit-learn's digits
        (np.array([0, 1, 1]), "0,1", [0, 255, 255]),  # bitmaps
        (np.array([0.0, 0.5, 1.0]), "0,1", [0, 128, 255]),
        (np.array([-1.0, 0.0, 1.0]), "-1,1", [0, 128, 255]),
        (np.array([0, 40, 255]), "0,255", [0, 40, 255]),
    ],
)
def test_pixel_ranges_are_detected_and_scaled(tmp_path, values, found, expected):
    x = np.resize(values, (3, 8, 8)).astype(values.dtype)
    x[:, 0, 0] = values
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.array([0, 1, 0]))
    data = read_npz(tmp_path / "d.npz")["train"]
    assert data.pixel_range == found
    assert data.x[:, 0, 0, 0].tolist() == expected


# --- folders of images --------------------------------------------------------------------------


def test_folder_classes_sorted_and_images_read(tmp_path, tiny):
    for name in ("shoe", "bag"):
        (tmp_path / name).mkdir()
    for i in range(3):
        Image.fromarray(tiny.x[i, :, :, 0]).save(tmp_path / "shoe" / f"{i}.png")
        Image.fromarray(tiny.x[i + 3, :, :, 0]).save(tmp_path / "bag" / f"{i}.png")
    data = read_folder(tmp_path)
    assert data.class_names == ("bag", "shoe")
    assert data.y.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(data.x[3], tiny.x[0])


def test_folder_unreadable_image_is_named(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken.png: not a readable image"):
        read_folder(tmp_path)


def test_folder_without_class_folders(tmp_path):
    with pytest.raises(DataError, match="no class folders"):
        read_folder(tmp_path)


# --- folders of <class>.npy files (Quick, Draw!'s numpy_bitmap layout) --------------------------


def write_class_files(folder, arrays: dict) -> object:
    folder.mkdir(exist_ok=True)
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    return folder


def test_npy_folder_names_classes_after_its_files(tmp_path, tiny):
    flat = tiny.x.reshape(len(tiny), -1)  # N x 784, as Quick, Draw! publishes them
    folder = write_class_files(tmp_path / "doodles", {"cat": flat[:5], "airplane": flat[5:12]})
    (folder / "README.txt").write_text("not a class")
    data = load_source(folder)["train"]
    assert data.class_names == ("airplane", "cat")
    assert data.y.tolist() == [0] * 7 + [1] * 5
    assert data.image_shape == (28, 28, 1) and data.pixel_range == "0,255"
    np.testing.assert_array_equal(data.x[:7], tiny.x[5:12])
    np.testing.assert_array_equal(data.x[7:], tiny.x[:5])
    three_d = write_class_files(
        tmp_path / "hw", {"a": tiny.x[:3, :, :, 0], "b": tiny.x[3:5, :, :, 0]}
    )
    np.testing.assert_array_equal(load_source(three_d, limit=4)["train"].x, tiny.x[:4])


def test_a_folder_of_class_folders_stays_an_image_folder(tmp_path, tiny):
    folder = write_class_files(tmp_path / "mixed", {"a": tiny.x[:2, :, :, 0]})
    (folder / "shoe").mkdir()
    Image.fromarray(tiny.x[0, :, :, 0]).save(folder / "shoe" / "0.png")
    assert load_source(folder)["train"].class_names == ("shoe",)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"cat": b"P5 28 28 255", "dog": None},
            r"cat.npy: not an NPY file \(the magic string is not correct.*\); expected a NumPy "
            r"\.npy array \(np\.save\)\.",
        ),
        (
            {"cat": np.zeros((3, 784), np.uint8), "dog": np.zeros((3, 1024), np.uint8)},
            r"dog.npy: images of 32 x 32; expected 28 x 28 like cat.npy\.",
        ),
        (
            {"cat": np.zeros((0, 784), np.uint8), "dog": None},
            r"cat.npy: 0 images; expected at least one image of each class\.",
        ),
        (
            {"cat": np.zeros((3, 784), np.float32), "dog": None},
            r"cat.npy: holds float32 values; expected uint8 images of N x H\*W \(square\), "
            r"N x H x W or N x H x W x C \(pixels 0-255\)\.",
        ),
        (
            {"cat": np.zeros((3, 785), np.uint8), "dog": None},
            r"cat.npy: rows of 785 values, which is not a square image; expected uint8",
        ),
        ({"cat": None}, r"doodles: 1 class file \(cat.npy\); expected a <class>.npy file for each"),
    ],
    ids=["bad-header", "other-width", "empty-class", "float32", "not-square", "one-class"],
)
def test_npy_folder_refusals_name_the_file(tmp_path, files, message):
    folder = tmp_path / "doodles"
    folder.mkdir()
    for name, content in files.items():
        if isinstance(content, bytes):
            (folder / f"{name}.npy").write_bytes(content)
        else:
            np.save(
                folder / f"{name}.npy", np.zeros((2, 784), np.uint8) if content is None else content
            )
    with pytest.raises(DataError, match=message):
        load_source(folder)


def test_a_truncated_npy_file_is_refused_before_reading(tmp_path):
    folder = write_class_files(tmp_path / "d", {n: np.zeros((4, 784), np.uint8) for n in "ab"})
    (folder / "b.npy").write_bytes((folder / "b.npy").read_bytes()[:-100])
    with pytest.raises(DataError, match=r"b.npy: the header declares shape \(4, 784\)"):
        load_source(folder)


# --- dispatch, train/test, sources --------------------------------------------------------------


def test_guess_format(tmp_path):
    assert guess_format(tmp_path) == "folder"
    assert guess_format(tmp_path / "a.csv") == "csv"
    assert guess_format(tmp_path / "a.npz") == "npz"
    assert guess_format(tmp_path / "train-images-idx3-ubyte.gz") == "idx"
    with pytest.raises(DataError, match="cannot tell the format from the name"):
        guess_format(tmp_path / "data.bin")


def test_fashion_named_csv_gets_fashion_class_names(tmp_path, tiny):
    data = load_source(write_csv(tmp_path / "fashion-mnist_train.csv", tiny))["train"]
    assert data.class_names == FASHION_MNIST_CLASSES


def test_a_source_without_test_split_holds_one_out_the_same_each_time(tmp_path, tiny):
    path = write_csv(tmp_path / "t.csv", tiny)
    with pytest.warns(UserWarning, match="has no test set: holding out") as caught:
        train, test = load_train_test(str(path), seed=3)
    assert caught[0].filename == __file__  # shown as the caller's line, not one of convnet's
    assert len(test) == round(0.2 * len(tiny)) and len(train) + len(test) == len(tiny)
    with pytest.warns(UserWarning):
        again = load_train_test(str(path), seed=3)[1]
    assert test.checksum() == again.checksum()


def test_train_test_shape_mismatch(tmp_path, tiny):
    small = Dataset(tiny.x[:, :14, :14], tiny.y, tiny.class_names)
    with pytest.raises(DataError, match=r"images of shape \(14, 14, 1\); expected \(28, 28, 1\)"):
        load_train_test(
            str(write_csv(tmp_path / "a.csv", tiny)), str(write_csv(tmp_path / "b.csv", small))
        )


def write_labelled_csv(path, labels):
    """A CSV of 2x2 images labelled by name; each image's pixels encode its row."""
    rows = [f"{label},{i},{i},{i},{i}" for i, label in enumerate(labels)]
    path.write_text("kind,p0,p1,p2,p3\n" + "\n".join(rows) + "\n")
    return str(path)


def test_test_labels_are_matched_to_training_classes_by_name(tmp_path):
    train = write_labelled_csv(tmp_path / "train.csv", ["cat", "dog", "eel", "dog"])
    test = write_labelled_csv(tmp_path / "test.csv", ["eel", "cat", "eel"])  # no dog
    train_set, test_set = load_train_test(train, test, label_column="kind")
    assert test_set.class_names == train_set.class_names == ("cat", "dog", "eel")
    assert [test_set.class_names[i] for i in test_set.y] == ["eel", "cat", "eel"]


def test_test_folder_missing_a_class_keeps_the_others_labels(tmp_path, tiny):
    for split_name, classes in [("train", ["bag", "coat", "shirt"]), ("test", ["bag", "shirt"])]:
        for name in classes:
            (tmp_path / split_name / name).mkdir(parents=True)
            Image.fromarray(tiny.x[0, ..., 0]).save(tmp_path / split_name / name / "0.png")
    train_set, test_set = load_train_test(str(tmp_path))
    assert [test_set.class_names[i] for i in test_set.y] == ["bag", "shirt"]


def test_a_test_folder_names_a_class_loosely_or_by_its_index(tmp_path, tiny):
    """No folder can be named "T-shirt/top": written another way, or as its index, it is found."""
    train = write_csv(tmp_path / "fashion-mnist_train.csv", tiny)  # Fashion-MNIST's names
    for folder in ("t-shirt_top", "Ankle Boot", "3", "2"):  # "2" is Pullover, "3" Dress
        (tmp_path / "test" / folder).mkdir(parents=True)
        Image.fromarray(tiny.x[0, ..., 0]).save(tmp_path / "test" / folder / "0.png")
    _, test_set = load_train_test(str(train), str(tmp_path / "test"))
    assert test_set.class_names == FASHION_MNIST_CLASSES
    # Read in the folders' sorted order: "2", "3", "Ankle Boot", "t-shirt_top".
    assert [test_set.class_names[i] for i in test_set.y] == [
        "Pullover", "Dress", "Ankle boot", "T-shirt/top"
    ]  # fmt: skip
    (tmp_path / "test" / "10").mkdir()
    Image.fromarray(tiny.x[0, ..., 0]).save(tmp_path / "test" / "10" / "0.png")
    with pytest.raises(DataError, match=r"class '10' is not one of .* or its index, 0 to 9\.$"):
        load_train_test(str(train), str(tmp_path / "test"))


def test_unnamed_integer_test_labels_index_the_training_classes(tmp_path, tiny):
    train = write_csv(tmp_path / "fashion-mnist_train.csv", tiny)  # Fashion-MNIST's names
    test_data = Dataset(tiny.x[:5], tiny.y[:5], tiny.class_names)
    _, test_set = load_train_test(str(train), str(write_csv(tmp_path / "mine.csv", test_data)))
    assert test_set.class_names == FASHION_MNIST_CLASSES
    assert test_set.y.tolist() == tiny.y[:5].tolist()


def test_unnamed_integer_test_label_beyond_the_training_classes_is_named(tmp_path, tiny):
    train = write_csv(tmp_path / "train.csv", tiny)  # 4 classes
    test_data = Dataset(tiny.x[:3], np.array([1, 6, 2]), tuple(map(str, range(7))))
    test = write_csv(tmp_path / "test.csv", test_data)
    with pytest.raises(DataError, match=r"test.csv: label 6 is out of range; the training data "):
        load_train_test(str(train), str(test))


def test_test_class_unknown_to_training_is_an_error(tmp_path):
    train = write_labelled_csv(tmp_path / "train.csv", ["cat", "dog"])
    test = write_labelled_csv(tmp_path / "test.csv", ["cat", "emu"])
    with pytest.raises(DataError, match=r"test.csv: class 'emu' is not one of the training data's"):
        load_train_test(train, test, label_column="kind")


def test_fashion_mnist_is_found_and_verified():
    assert find_fashion_mnist() is not None
    splits = load_fashion_mnist()
    assert splits["train"].x.shape == (60000, 28, 28, 1)
    assert splits["test"].x.shape == (10000, 28, 28, 1)
    assert splits["train"].class_names[9] == "Ankle boot"
    assert np.bincount(splits["test"].y).tolist() == [1000] * 10


def test_class_names_rename_the_default_fashion_mnist():
    train, test = load_train_test(class_names="mnist")
    assert train.class_names == test.class_names == NAMED_CLASS_SETS["mnist"]
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: labels must be in \[0, 2\]"):
        load_train_test(class_names="a,b,c")


def test_fashion_mnist_checksum_mismatch(tmp_path, tiny):
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", tiny.x[..., 0])
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", tiny.y)
    with pytest.raises(
        DataError, match="checksum mismatch; this is not the published Fashion-MNIST"
    ):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_corrupt_gzip_says_to_delete_it(tmp_path):
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (tmp_path / f"{stem}.gz").write_bytes(b"\x1f\x8b truncated")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"")
    fetch = lambda folder: api.fetch(data_dir=folder)  # noqa: E731
    for load in (load_fashion_mnist, fetch):  # `convnet fetch` checks what it finds
        with pytest.raises(DataError) as raised:
            load(tmp_path)
        message = str(raised.value)
        assert message.startswith(f"{tmp_path / 'train-images-idx3-ubyte.gz'}: corrupt gzip file (")
        assert message.endswith("delete it to download again.")


# --- split --------------------------------------------------------------------------------------


def test_split_matches_the_seeds_train_test_split():
    from sklearn.model_selection import train_test_split

    data = make_images(100)
    train, val = split(data, 0.3, 42)
    x_train, x_val, _, _ = train_test_split(data.x, data.y, test_size=0.3, random_state=42)
    np.testing.assert_array_equal(train.x, x_train)
    np.testing.assert_array_equal(val.x, x_val)


def test_split_stratified_keeps_proportions():
    data = make_images(400)
    _, val = split(data, 0.25, 0, stratify=True)
    expected = np.bincount(data.y) * 0.25
    assert np.abs(np.bincount(val.y) - expected).max() <= 1


@pytest.mark.parametrize("n, classes, fraction, seed", [
    (57, 3, 0.2, 0), (100, 10, 0.3, 42), (1797, 10, 0.2, 7), (403, 4, 0.55, 1), (20, 2, 0.1, 3),
])  # fmt: skip
def test_split_stratified_picks_the_rows_train_test_split_picks(n, classes, fraction, seed):
    """The stratified split draws scikit-learn's rows from its random stream, with arrays where
    it gathers Python lists (an 8 GB doodle folder's split peaked at 780 MB over its labels)."""
    from sklearn.model_selection import train_test_split

    labels = np.random.default_rng(seed).integers(0, classes, n)
    data = Dataset(
        np.arange(n, dtype=np.int64).view(np.uint8).reshape(n, 2, 2, 2),
        labels,
        tuple(map(str, range(classes))),
    )
    train, val = split(data, fraction, seed, stratify=True)
    kept, held = train_test_split(np.arange(n), test_size=fraction, random_state=seed,
                                  stratify=labels)  # fmt: skip
    np.testing.assert_array_equal(train.x.reshape(len(train), -1).view(np.int64)[:, 0], kept)
    np.testing.assert_array_equal(val.x.reshape(len(val), -1).view(np.int64)[:, 0], held)


@pytest.mark.parametrize("labels, fraction, message", [
    ([0, 0, 0, 1], 0.5, r"1 class\(es\) have a single example; each needs 2"),
    ([0, 0, 1, 1, 2, 2], 0.2, r"each part needs an example of each of the 3 classes; one would "
                               r"have 2"),
    ([0, 1], 0.99, r"it leaves no example to train on"),
])  # fmt: skip
def test_split_that_cannot_be_made_says_why(labels, fraction, message):
    data = Dataset(np.zeros((len(labels), 8, 8, 1), np.uint8), np.array(labels), CLASS_NAMES[:3])
    with pytest.raises(DataError, match=rf"cannot split {len(labels)} examples by "
                                        rf"val_split={fraction}: {message}"):  # fmt: skip
        split(data, fraction, 0, stratify=True)


def test_split_zero_means_no_validation(tiny):
    train, val = split(tiny, 0.0)
    assert val is None and len(train) == len(tiny)


def test_split_out_of_range():
    with pytest.raises(DataError, match=r"val_split must be in \[0, 1\). Received: val_split=1.5"):
        split(make_images(10), 1.5)


def test_kaggle_csv_round_trip(tmp_path, tiny):
    from convnet.data.kaggle import write_kaggle_csv

    path = write_kaggle_csv(tiny, tmp_path / "fashion-mnist_train.csv")
    assert path.read_text().splitlines()[0].startswith("label,pixel1,pixel2,")
    data = load_source(path)["train"]
    np.testing.assert_array_equal(data.x, tiny.x)
    np.testing.assert_array_equal(data.y, tiny.y)


def counting_reader(path):
    """read_csv(path) as a cache's reader, and the list it appends to on every parse."""
    calls = []

    def read():
        calls.append(1)
        return read_csv(path)

    return read, calls


def test_csv_second_load_comes_from_the_checksum_cache(tmp_path, tiny):
    from convnet.data import cache

    path = write_csv(tmp_path / "t.csv", tiny)
    read, calls = counting_reader(path)

    first = cache.cached_read(path, read, label_column=None)
    second = cache.cached_read(path, read, label_column=None)
    assert len(calls) == 1
    np.testing.assert_array_equal(second.x, first.x)
    assert second.class_names == first.class_names
    cache.cached_read(path, read, label_column="label")  # other options: another entry
    path.write_text(path.read_text().replace("\n1,", "\n2,", 1))  # other content: parsed again
    cache.cached_read(path, read, label_column=None)
    assert len(calls) == 3


def test_the_cache_keeps_to_its_size_and_evicts_what_was_read_longest_ago(
    tmp_path, tiny, private_cache, monkeypatch
):
    from convnet.data import cache

    def load(name: str, seed: int) -> Path:
        path = write_csv(tmp_path / f"{name}.csv", make_images(64, seed=seed))
        cache.cached_read(path, counting_reader(path)[0])
        for writer in list(cache._writing.values()):
            writer.join()
        return path

    folder = private_cache / "convnet" / "parsed"
    first = load("first", 1)
    (entry,) = folder.iterdir()
    monkeypatch.setattr(cache, "MAX_BYTES", int(2.5 * entry.stat().st_size))  # two entries fit
    second = load("second", 2)
    os.utime(entry, (1, 1))  # both written long ago, the first read since
    os.utime(next(p for p in folder.iterdir() if p != entry), (1, 1))
    read, calls = counting_reader(first)
    cache.cached_read(first, read)
    assert calls == []  # from the cache, which stamps the entry as read now
    load("third", 3)
    assert len(list(folder.iterdir())) == 2  # the second, read longest ago, went
    for path, parsed_again in [(first, 0), (second, 1)]:
        read, calls = counting_reader(path)
        cache.cached_read(path, read)
        assert len(calls) == parsed_again


@pytest.mark.parametrize("damage", ["truncated", "empty", "wrong arrays"])
def test_a_damaged_cache_entry_is_parsed_again(tmp_path, tiny, private_cache, damage):
    from convnet.data import cache

    path = write_csv(tmp_path / "t.csv", tiny)
    read, calls = counting_reader(path)

    cache.cached_read(path, read)
    for writer in list(cache._writing.values()):
        writer.join()
    (entry,) = (private_cache / "convnet" / "parsed").iterdir()
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:100])
    elif damage == "empty":
        entry.write_bytes(b"")
    else:
        np.savez(entry.with_suffix(""), x=np.zeros(3), y=np.zeros(2), class_names=np.array(["a"]))
    data = cache.cached_read(path, read)
    assert len(calls) == 2
    np.testing.assert_array_equal(data.x, tiny.x)


def test_a_misspelt_class_name_set_is_an_error(tmp_path, tiny):
    path = write_csv(tmp_path / "t.csv", tiny)
    with pytest.raises(DataError, match="'fashion_mnist' is neither a named set"):
        load_source(path, class_names="fashion_mnist")
    assert load_source(path, class_names="mnist")["train"].class_names[3] == "3"


def test_an_idx_path_that_is_a_folder_is_named(tmp_path):
    folder = tmp_path / "train-images-idx3-ubyte"
    folder.mkdir()
    with pytest.raises(DataError, match=r"idx3-ubyte: cannot read the file \(Is a directory\)"):
        read_idx(folder)
