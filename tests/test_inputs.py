"""The preprocessing `predict` and `serve` share: what the model receives from a picture."""

from __future__ import annotations

import numpy as np
from PIL import Image

from convnet.inputs import image_to_input


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


def test_rgb_model_gets_three_channels():
    photo = Image.new("RGB", (64, 32), (255, 255, 255))
    assert image_to_input(photo, (32, 32, 3)).shape == (32, 32, 3)
