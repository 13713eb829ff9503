"""The preset registry, and a forward pass through every preset."""

from __future__ import annotations

import numpy as np
import pytest

from convnet.errors import ConfigError
from convnet.models import create_model, get_preset, list_presets, register_preset


def test_seed_preset_is_the_articles_network():
    model = create_model("seed")
    assert model.count_params() == 93_322
    shapes = [tuple(layer.output.shape[1:]) for layer in model.layers[1:]]
    assert shapes == [
        (28, 28, 1),
        (26, 26, 32),
        (13, 13, 32),
        (11, 11, 64),
        (5, 5, 64),
        (3, 3, 64),
        (576,),
        (64,),
        (10,),
    ]
    recipe = get_preset("seed").recipe
    assert (recipe.epochs, recipe.batch_size, recipe.optimizer, recipe.val_split) == (
        15,
        512,
        "rmsprop",
        0.3,
    )


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"Unknown preset 'resnet9000'. Known presets: .*seed"):
        get_preset("resnet9000")


def test_list_presets_filters_by_pattern():
    assert "seed" in list_presets()
    assert list_presets("se*") == ["seed"]
    assert list_presets("nothing*") == []


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="Preset 'seed' is already registered"):
        register_preset("seed", "again")(lambda shape, n: None)


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_maps_uint8_pixels_to_probabilities(name):
    model = create_model(name, (28, 28, 1), 10)
    x = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    probabilities = model.predict(x, verbose=0)
    assert probabilities.shape == (4, 10)
    assert not np.isnan(probabilities).any()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_presets_adapt_to_other_shapes_and_class_counts():
    model = create_model("seed", (32, 32, 3), 4)
    assert model.output_shape == (None, 4)
