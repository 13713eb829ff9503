"""What `import convnet` offers to read data with: `convnet.load_dataset`, on the formats
docs/data.md lists, colour folders among them."""

from __future__ import annotations

import numpy as np
from conftest import CLASS_NAMES, make_images
from PIL import Image

import convnet


def test_load_dataset_reads_a_source_into_its_splits(tiny_npz):
    assert "load_dataset" in dir(convnet)
    splits = convnet.load_dataset(tiny_npz)
    assert set(splits) == {"train", "test"}
    for split, written in (("train", make_images(600, seed=1)), ("test", make_images(200, seed=2))):
        np.testing.assert_array_equal(splits[split].x, written.x)
        np.testing.assert_array_equal(splits[split].y, written.y)
        assert splits[split].class_names == CLASS_NAMES
    limited = convnet.load_dataset(str(tiny_npz), limit=100)  # a path as text too
    assert (len(limited["train"]), len(limited["test"])) == (100, 200)


def test_a_folder_of_colour_images_reads_as_rgb_and_one_of_grey_as_grey(tmp_path):
    """Colour kept as RGB, channel for channel; a grey image among colour ones becomes RGB with
    its value in each channel; a folder of grey images alone stays one channel."""
    colours = {"red": (200, 30, 90), "teal": (10, 140, 150)}
    for name, colour in colours.items():
        (tmp_path / "colour" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), colour).save(tmp_path / "colour" / name / "a.png")
    Image.new("L", (8, 8), 77).save(tmp_path / "colour" / "teal" / "b.png")
    data = convnet.load_dataset(tmp_path / "colour")["train"]
    assert data.class_names == ("red", "teal") and data.x.shape == (3, 8, 8, 3)
    pixels = sorted((int(label), tuple(int(v) for v in image[0, 0])) for image, label in zip(
        data.x, data.y, strict=True))  # fmt: skip
    assert pixels == [(0, (200, 30, 90)), (1, (10, 140, 150)), (1, (77, 77, 77))]

    for name in ("a", "b"):
        (tmp_path / "grey" / name).mkdir(parents=True)
        Image.new("L", (8, 8), 120).save(tmp_path / "grey" / name / "a.png")
    grey = convnet.load_dataset(tmp_path / "grey")["train"]
    assert grey.x.shape == (2, 8, 8, 1) and (grey.x == 120).all()
