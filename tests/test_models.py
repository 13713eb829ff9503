"""The preset registry (no Keras), and a forward pass through every preset's model."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

from convnet.errors import ConfigError, DataError
from convnet.models import get_preset, list_presets, register_preset, registry
from convnet.models.factory import create_model, load_model, portable_model
from convnet.models.recipe import OPTIMIZERS, Recipe


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
        register_preset("seed", "again", builder="convnet.models.builders:seed")
    with pytest.raises(ValueError, match="Preset 'seed' is already registered"):
        register_preset("seed", "again")


def test_a_preset_registered_with_its_function_builds_it(monkeypatch):
    monkeypatch.setattr(registry, "_PRESETS", dict(registry._PRESETS))

    @register_preset("tiny-dense", "one dense layer", epochs=2)
    def tiny_dense(input_shape, num_classes):
        inputs = keras.Input(input_shape, dtype="uint8")
        x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
        return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))

    assert get_preset("tiny-dense").recipe == Recipe(epochs=2)
    assert create_model("tiny-dense", (8, 8, 1), 3).output_shape == (None, 3)


def test_built_in_presets_name_their_builders_and_import_them_only_to_build():
    """In a fresh process, listing and looking up every preset imports no builder and no Keras;
    a builder given by name is imported when it is asked for (here a light module's function,
    to show it without paying for Keras), as the built-in ones are below."""
    code = (
        "import json, sys\n"
        "from convnet.models import get_preset, list_presets, register_preset\n"
        "presets = {name: get_preset(name) for name in list_presets()}\n"
        "register_preset('lazy', 'built by name', builder='colorsys:rgb_to_hsv')\n"
        "heavy = ('convnet.models.builders', 'keras', 'tensorflow', 'colorsys')\n"
        "looked_up = [m for m in heavy if m in sys.modules]\n"
        "built = get_preset('lazy').build_function().__name__\n"
        "builders = {name: p.builder for name, p in presets.items()}\n"
        "print(json.dumps([looked_up, builders, built, 'colorsys' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    looked_up, builders, built, imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert looked_up == []
    assert (built, imported) == ("rgb_to_hsv", True)
    assert builders == {name: f"convnet.models.builders:{name}" for name in list_presets()}
    for name in list_presets():
        assert get_preset(name).build_function().__name__ == name


@pytest.mark.parametrize(("name", "parameters"), [("fast", 105_000), ("best", 642_000)])
def test_fast_and_best_have_the_parameter_counts_the_docs_give(name, parameters):
    """docs/training.md's preset table: fast 105k parameters, best 642k (for 28 x 28 x 1 and 10
    classes)."""
    assert round(create_model(name).count_params(), -3) == parameters


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_a_recipe_accepts_is_one_keras_builds(name):
    assert isinstance(keras.optimizers.get(name), keras.optimizers.Optimizer)


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_maps_uint8_pixels_to_probabilities(name):
    model = create_model(name, (28, 28, 1), 10)
    x = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    probabilities = model.predict(x, verbose=0)
    assert probabilities.shape == (4, 10)
    assert not np.isnan(probabilities).any()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("shape", [(8, 8, 1), (16, 16, 1), (32, 32, 3), (64, 64, 1), (9, 13, 1)])
@pytest.mark.parametrize("name", list_presets())
def test_every_preset_adapts_to_other_shapes_and_class_counts(name, shape):
    model = create_model(name, shape, 4)
    x = np.random.default_rng(0).integers(0, 256, (2, *shape), dtype=np.uint8)
    probabilities = model.predict(x, verbose=0)
    assert probabilities.shape == (2, 4) and not np.isnan(probabilities).any()


@pytest.mark.parametrize("name", list_presets())
def test_images_too_small_for_a_preset_are_refused_before_keras(name):
    with pytest.raises(
        DataError,
        match=rf"d.npz: images of 3x3 pixels are too small for preset "
        rf"'{name}'; the smallest it takes is \d+x\d+",
    ):
        registry.check_image_size(name, (3, 3, 1), "d.npz")


def test_fused_batch_norm_trains_like_keras_batch_norm():
    import keras

    from convnet.models.layers import FusedBatchNormalization

    x = np.random.default_rng(0).normal(2, 3, (32, 5, 5, 8)).astype("float32")
    plain, fused = (
        keras.layers.BatchNormalization(momentum=0.9),
        FusedBatchNormalization(momentum=0.9),
    )
    for layer in (plain, fused):
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 2, 8))
        layer.beta.assign(np.linspace(-1, 1, 8))
    for training in (True, False):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(fused(x, training=training)),
            keras.ops.convert_to_numpy(plain(x, training=training)),
            # Inference reads the moving variance, whose update differs slightly (below).
            rtol=1e-6 if training else 1e-3,
            atol=1e-5 if training else 1e-3,
        )
    np.testing.assert_allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(), rtol=1e-5)
    # The fused kernel updates the moving variance with the unbiased (n-1) batch variance.
    n = 32 * 5 * 5
    np.testing.assert_allclose(
        fused.moving_variance.numpy() - 0.9,
        (plain.moving_variance.numpy() - 0.9) * n / (n - 1),
        rtol=1e-4,
    )


def test_mixed_precision_builds_bfloat16_compute_and_converts_back_to_float32():
    mixed = create_model("fast", precision="mixed_bfloat16")
    assert {layer.dtype_policy.name for layer in mixed.layers[2:-1]} == {"mixed_bfloat16"}
    assert mixed.layers[-1].dtype_policy.name == "float32"  # the softmax head
    assert mixed.output.dtype == "float32"
    exact = portable_model(mixed)
    assert {layer.dtype_policy.name for layer in exact.layers} == {"float32"}
    x = np.random.default_rng(1).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    np.testing.assert_allclose(exact.predict(x, verbose=0), mixed.predict(x, verbose=0), atol=0.03)
    with pytest.raises(ConfigError, match="precision must be one of"):
        create_model("fast", precision="float8")


@pytest.mark.parametrize("name", ["fast", "best"])
def test_saved_presets_load_with_bare_keras_in_a_fresh_process(tmp_path, name):
    from convnet.models.layers import FusedBatchNormalization

    model = portable_model(create_model(name, precision="mixed_bfloat16"))
    assert not any(isinstance(layer, FusedBatchNormalization) for layer in model.layers)
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert model.inputs[0].dtype == "uint8"
    model.save(tmp_path / "model.keras")
    x = np.random.default_rng(2).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    code = (  # no convnet import: the file is plain Keras
        "import sys, keras, numpy as np\n"
        "model = keras.saving.load_model(sys.argv[1] + '/model.keras')\n"
        "np.save(sys.argv[1] + '/p.npy', model.predict(np.load(sys.argv[1] + '/x.npy'), verbose=0))"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, capture_output=True)
    loaded = np.load(tmp_path / "p.npy")
    np.testing.assert_allclose(loaded, model.predict(x, verbose=0), atol=1e-6)


def test_width_and_dropout_reach_the_builders_that_take_them():
    narrow = create_model("fast", (28, 28, 1), 10, width=0.5, dropout=0.35)
    convolutions = [layer.filters for layer in narrow.layers if hasattr(layer, "filters")]
    assert convolutions == [16, 32, 64]
    assert [layer.rate for layer in narrow.layers if hasattr(layer, "rate")] == [0.35]
    with pytest.raises(ConfigError, match=r"preset 'seed' builds its model without width"):
        create_model("seed", (28, 28, 1), 10, width=2.0)


@pytest.mark.trains
def test_a_model_recorded_with_jit_compile_loads_without_a_keras_warning(tmp_path):
    """A `best` model trained on JAX records jit_compile=True, which its RandomTranslation layer
    cannot take: Keras warned at each `evaluate` and `predict` of the run."""
    inputs = keras.Input((8, 8, 1))
    moved = keras.layers.RandomTranslation(0.1, 0.1)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(moved)))
    with warnings.catch_warnings(record=True) as compiled:
        warnings.simplefilter("always")
        model.compile(loss="mse", jit_compile=True)
    assert any("jit_compile" in str(w.message) for w in compiled)  # what the file records
    model.fit(np.zeros((2, 8, 8, 1)), np.zeros((2, 2)), verbose=0)  # as a run's, trained
    model.save(tmp_path / "model.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_model(tmp_path / "model.keras")
    assert loaded.count_params() == model.count_params()
