"""Config: defaults, then YAML, then flags; unknown keys and wrong types are errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import run_cli, run_main

from convnet.config import load_config, make_config
from convnet.errors import ConfigError, RunError, command, on_the_command_line, setting


def test_defaults_are_the_seed_recipe():
    config = load_config()
    recipe = config.recipe()
    assert config.preset == "seed" and config.seed == 42
    assert (recipe.epochs, recipe.batch_size, recipe.optimizer, recipe.val_split) == (
        15,
        512,
        "rmsprop",
        0.3,
    )


def test_yaml_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"epochs": 3, "batch-size": 64, "limit": 100}))
    config = load_config(path, {"epochs": 5})
    recipe = config.recipe()
    assert (recipe.epochs, recipe.batch_size, config.limit) == (5, 64, 100)


def test_unknown_key_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochz: 3\n")
    expected = r"c.yaml: unknown key 'epochz' \(did you mean 'epochs'\?\). Known keys: .*epochs"
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_settings_given_in_python_are_named_as_keyword_arguments_not_flags(tmp_path):
    import convnet

    missing = str(tmp_path / "never-read.csv")  # the settings are refused before any data
    for settings, expected in [
        ({"epchs": 2}, r"^keyword arguments: unknown key 'epchs' \(did you mean 'epochs'\?\)"),
        ({"preset": "nope"}, r"^keyword arguments: Unknown preset 'nope'"),
        ({"epochs": 0}, r"^keyword arguments: epochs must be an integer >= 1"),
    ]:
        with pytest.raises(ConfigError, match=expected):
            convnet.train(train=missing, **settings)


def test_a_remedy_names_the_setting_as_python_or_the_command_line_spells_it(tmp_path):
    import convnet

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(
        RunError,
        match=r"taken: already exists and is not empty; choose another out=\.\.\. for the run\.$",
    ):
        convnet.train(train=str(tmp_path / "never-read.csv"), out=str(tmp_path / "taken"))
    assert (setting("batch_size", 32), setting("batch_size")) == ("batch_size=32", "batch_size=...")
    with on_the_command_line():
        assert (setting("batch_size", 32), setting("batch_size")) == (
            "--batch-size 32",
            "--batch-size",
        )
        assert (setting("stream", True), setting("stream", False)) == ("--stream", "--no-stream")
        assert command("tune", out=Path("t")) == "convnet tune --out t"
    assert setting("pixel_range", "0,1") == "pixel_range='0,1'"  # and back to Python's
    assert command("tune", out=Path("t")) == "convnet.tune(out='t')"


def test_lr_find_refuses_the_settings_only_a_training_uses():
    """As `convnet lr-find` has no --epochs flag; in a config file they are ignored."""
    import convnet

    with pytest.raises(ConfigError, match=r"^lr_find takes no epochs, out: it runs `steps` "):
        convnet.lr_find(epochs=3, out="never", train="never-read.csv")


def test_wrong_type_says_what_was_expected():
    with pytest.raises(ConfigError, match=r"'epochs' must be int. Received: 'many'"):
        make_config({"epochs": "many"})
    with pytest.raises(ConfigError, match=r"'stratify' must be bool. Received: 1"):
        make_config({"stratify": 1})


def test_a_path_is_accepted_for_a_file_or_folder():
    config = make_config({"out": Path("runs") / "a", "train": Path("data") / "train.csv"})
    assert (config.out, config.train) == (str(Path("runs") / "a"), str(Path("data") / "train.csv"))


def test_int_is_accepted_for_a_float():
    assert make_config({"learning_rate": 1}).recipe().learning_rate == 1.0


def test_unknown_preset_is_caught_at_load():
    with pytest.raises(ConfigError, match="Unknown preset 'nope'"):
        make_config({"preset": "nope"})


def test_resolved_config_round_trips(tmp_path):
    config = make_config({"epochs": 2, "train": "a.csv"})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.resolved()))
    again = load_config(path)
    assert again.resolved() == config.resolved()


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping of settings, got list"):
        load_config(path)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("epochs", 0, "epochs must be an integer >= 1. Received: 0."),
        ("batch_size", 0, "batch_size must be an integer >= 1. Received: 0."),
        (
            "optimizer",
            "adamz",
            "optimizer must be one of adadelta, adafactor, adagrad, adam, adamax, adamw, ftrl, "
            "lion, nadam, rmsprop, sgd. Received: 'adamz'.",
        ),
        ("schedule", "linear", "schedule must be 'constant' or 'cosine'. Received: 'linear'."),
        ("shift_tta", -1, "shift_tta must be an integer >= 0 (pixels). Received: -1."),
        ("label_smoothing", 1.0, "label_smoothing must be in [0, 1). Received: 1.0."),
        ("learning_rate", 0.0, "learning_rate must be > 0. Received: 0.0."),
        ("limit", -5, "limit must be a number of examples >= 1 (unset for all). Received: -5."),
        ("backend", "theano", "backend must be one of tensorflow, jax, torch. Received: 'theano'."),
        ("format", "xlsx", "format must be one of csv, npz, idx, folder. Received: 'xlsx'."),
    ],
)
def test_values_out_of_range_are_refused(key, value, expected):
    with pytest.raises(ConfigError, match=re.escape(f"flags: {expected}")):
        load_config(None, {key: value})


def test_a_recipe_value_out_of_range_is_one_line_from_the_cli_and_no_run_folder(tmp_path, capsys):
    result = run_cli("train", "--out", tmp_path / "run", "--shift-tta", "-1")
    assert result.returncode == 2
    expected = "flags: shift_tta must be an integer >= 0 (pixels). Received: -1."
    assert result.stderr.strip().splitlines()[-1] == f"convnet: error: {expected}"
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
    tuned = run_main(capsys, "tune", "--out", tmp_path / "tune", "--shift-tta", "-1")
    assert (tuned.returncode, tuned.stderr) == (2, f"convnet: error: {expected}\n")
    assert not (tmp_path / "tune").exists()


def test_a_config_that_cannot_be_read_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read the config file \(Is a directory\)"):
        load_config(tmp_path)
    binary = tmp_path / "c.yaml"
    binary.write_bytes(b"epochs: 3\n\xff\xfe")
    with pytest.raises(ConfigError, match=r"c.yaml: not UTF-8 text \(byte 10\)"):
        load_config(binary)
