"""The preprocessing `predict` and `serve` share: what the model receives from a picture."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from convnet.errors import DataError
from convnet.inputs import expand_paths, image_to_input, iter_inputs, load_inputs


def test_model_sized_image_passes_through_unchanged(tiny):
    image = Image.fromarray(tiny.x[0, :, :, 0])
    np.testing.assert_array_equal(image_to_input(image, (28, 28, 1)), tiny.x[0])


def test_dark_on_white_photo_is_inverted_trimmed_and_fills_the_frame():
    photo = np.full((300, 400), 255, np.uint8)
    photo[100:160, 150:190] = 0  # a small dark item, 60 high and 40 wide, off-centre
    result = image_to_input(Image.fromarray(photo), (28, 28, 1))[..., 0]
    rows, cols = np.nonzero(result > 128)
    assert rows.min() == 0 and rows.max() == 27  # the longest side is scaled to 28
    assert abs((cols.min() + cols.max()) / 2 - 13.5) <= 1  # centred
    assert result[:, 0].max() == 0  # light item on black, like Fashion-MNIST


def test_light_background_model_keeps_photos_dark_on_white():
    photo = np.full((100, 100), 255, np.uint8)
    photo[40:60, 30:70] = 0
    result = image_to_input(Image.fromarray(photo), (28, 28, 1), light_background=True)[..., 0]
    assert result[0, 0] == 255 and result[14, 14] == 0


def test_rgb_model_gets_the_colours_inverted_like_grey():
    photo = np.full((64, 64, 3), 255, np.uint8)
    photo[16:48, 24:40] = (255, 0, 0)  # a red item on white
    result = image_to_input(Image.fromarray(photo), (32, 32, 3))
    assert result.shape == (32, 32, 3)
    assert result[0, 0].tolist() == [0, 0, 0]  # white became black
    assert result[16, 16].tolist() == [0, 255, 255]  # red became cyan, channel by channel
    rows, cols = np.nonzero(result.max(axis=-1) > 128)
    assert abs((cols.min() + cols.max()) / 2 - 15.5) <= 1  # centred


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.npy", b"", "empty.npy: not a plain .npy array"),
        ("archive.npy", "npz", "archive.npy: an .npz archive; expected a single .npy array"),
        (
            "scaled.npy",
            "scaled",
            r"scaled.npy: holds fractions \(they look scaled to \[0, 1\]: multiply by 255",
        ),
        ("latin1.csv", "caf\xe9,1\n".encode("latin-1"), "latin1.csv: not UTF-8 text"),
    ],
)
def test_unreadable_inputs_are_one_data_error_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content == "npz":
        np.savez(path.with_suffix(".npz"), x=np.zeros((28, 28)))
        path.with_suffix(".npz").rename(path)
    elif content == "scaled":
        np.save(path, np.full((28, 28), 0.8))
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_inputs([path], (28, 28, 1))


def test_csv_inputs_drop_a_label_column_however_it_is_written(tmp_path, tiny):
    pixels = tiny.x[:2].reshape(2, -1)
    header = '"label",' + ",".join(f"pixel{i}" for i in range(784))
    rows = [",".join(map(str, row)) for row in pixels]
    path = tmp_path / "quoted.csv"
    path.write_text(f"{header}\n,{rows[0]}\nshirt,{rows[1]}\n")  # blank and named labels
    names, x = load_inputs([path], (28, 28, 1))
    assert names == [f"{path}[0]", f"{path}[1]"]
    np.testing.assert_array_equal(x, tiny.x[:2])


def test_folders_give_their_images_recursively_in_order_and_nothing_hidden(tmp_path, tiny):
    for name in ("b/2.png", "a/deeper/1.png", "a/0.png", ".git/x.png", "a/._0.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(tiny.x[0, :, :, 0]).save(tmp_path / name, format="PNG")
    (tmp_path / "a" / "preds.csv").write_text("file,class\n")
    np.save(tmp_path / "named.npy", tiny.x[:2])
    files, skipped = expand_paths([tmp_path, tmp_path / "named.npy"])
    assert files == [
        tmp_path / "a/0.png",
        tmp_path / "a/deeper/1.png",
        tmp_path / "b/2.png",
        tmp_path / "named.npy",  # read when named, not found in a folder
    ]
    assert skipped == [tmp_path / "named.npy", tmp_path / "a/preds.csv"]  # a folder, then below
    names, x = load_inputs([tmp_path / "b"], (28, 28, 1))
    assert names == [str(tmp_path / "b/2.png")] and x.shape == (1, 28, 28, 1)


def test_iter_inputs_names_an_unreadable_file_and_goes_on(tmp_path, tiny):
    np.save(tmp_path / "two.npy", tiny.x[:2])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    Image.fromarray(tiny.x[2, :, :, 0]).save(tmp_path / "three.png")
    files = [tmp_path / "two.npy", tmp_path / "broken.png", tmp_path / "three.png"]
    items = list(iter_inputs(files, (28, 28, 1)))
    assert [(name, error) for name, _, error in items] == [
        (f"{tmp_path}/two.npy[0]", None),
        (f"{tmp_path}/two.npy[1]", None),
        (str(tmp_path / "broken.png"), "not a readable image (unknown or unsupported format)."),
        (str(tmp_path / "three.png"), None),
    ]
    np.testing.assert_array_equal(np.stack([x for _, x, _ in items if x is not None]), tiny.x[:3])
