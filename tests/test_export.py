"""Exported models (ONNX, SavedModel) take the same raw pixels and agree with the Keras model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import make_images, run_cli

from convnet.exporter import ExportError, export_model
from convnet.models.factory import load_model
from convnet.runs import Run


@pytest.fixture(scope="module")
def reference(trained_run, tiny_npz):
    """100 uint8 test images and the Keras model's probabilities for them."""
    x = np.load(tiny_npz)["x_test"][:100, ..., np.newaxis]
    return x, load_model(Run(trained_run).model_file).predict(x, verbose=0)


def test_onnx_matches_keras(trained_run, reference, tmp_path):
    import onnxruntime as ort

    path = export_model(trained_run, "onnx", tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    assert feed.type == "tensor(uint8)"
    x, expected = reference
    np.testing.assert_allclose(session.run(None, {feed.name: x})[0], expected, atol=1e-4)


def test_savedmodel_from_the_cli_matches_keras(trained_run, reference, tmp_path):
    import tensorflow as tf

    out = tmp_path / "saved"
    result = run_cli("export", trained_run, "--format", "savedmodel", "--out", out)
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    x, expected = reference
    loaded = tf.saved_model.load(str(out))  # keep it alive: `serve` refers to its variables
    served = loaded.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-4)


def test_unknown_format_is_an_error(trained_run):
    with pytest.raises(ExportError, match=r"Unknown export format 'tflite'; expected one of"):
        export_model(trained_run, "tflite")


def test_onnx_into_a_folder_goes_inside_it_and_leaves_the_rest(trained_run, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    path = export_model(trained_run, "onnx", tmp_path)
    assert path == tmp_path / "model.onnx" and path.stat().st_size > 0
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("format", "existing", "expected"),
    [
        ("savedmodel", "folder", "exists and is not a SavedModel"),
        ("savedmodel", "file", "exists and is not a SavedModel"),
        ("onnx", "file", "exists and is not an .onnx file"),
    ],
)
def test_export_refuses_to_replace_what_it_did_not_write(
    trained_run, tmp_path, format, existing, expected
):
    out = tmp_path / "mine"
    if existing == "folder":
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
    else:
        out.write_text("keep me")
    with pytest.raises(ExportError, match=expected):
        export_model(trained_run, format, out)
    kept = out / "notes.txt" if existing == "folder" else out
    assert kept.read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no staging folder left behind


def test_savedmodel_export_replaces_an_earlier_one(trained_run, tmp_path):
    out = tmp_path / "saved"
    export_model(trained_run, "savedmodel", out)
    (out / "stale.txt").write_text("from the earlier export")
    assert export_model(trained_run, "savedmodel", out) == out
    assert (out / "saved_model.pb").is_file() and not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["saved"]


def test_onnx_goes_into_the_run_by_default_and_replaces_an_earlier_export(trained_run, tmp_path):
    import onnxruntime as ort

    run = shutil.copytree(trained_run, tmp_path / "run")
    (run / "model.onnx").write_bytes(b"an earlier export")
    assert export_model(run) == run / "model.onnx"
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    assert not [p.name for p in run.iterdir() if p.name.startswith(".model.onnx")]  # no staging


def test_an_unwritable_destination_is_an_export_error(trained_run, tmp_path):
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "model.onnx"
    with pytest.raises(ExportError, match=r"onnx: cannot write there \(.*/a-file is a file\)"):
        export_model(trained_run, "onnx", out)
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


@pytest.fixture(scope="module")
def augmenting_run(tmp_path_factory, tiny_npz):
    """A `best` run (random translation and flip, BatchNorm) trained one quick epoch."""
    import convnet

    out = tmp_path_factory.mktemp("runs") / "best-tiny"
    convnet.train(
        preset="best", train=str(tiny_npz), epochs=1, batch_size=64, out=str(out), verbose=0
    )
    return out


def test_a_model_with_augmentation_exports_its_inference_graph(augmenting_run, tmp_path):
    import onnxruntime as ort
    import tensorflow as tf

    x = make_images(64, seed=4).x
    expected = load_model(Run(augmenting_run).model_file).predict(x, verbose=0)
    onnx = export_model(augmenting_run, "onnx", tmp_path / "model.onnx")
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    served = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(served, expected, atol=1e-4)
    loaded = tf.saved_model.load(str(export_model(augmenting_run, "savedmodel", tmp_path / "sm")))
    np.testing.assert_allclose(loaded.serve(tf.constant(x)).numpy(), expected, atol=1e-4)


def test_the_public_export_function_survives_its_own_use(trained_run, tmp_path):
    """`convnet.export` stays the function after the exporting module has been imported (a
    submodule of that name used to replace it on the package after the first call)."""
    import convnet

    assert convnet.export(trained_run, "onnx", tmp_path / "a.onnx") == tmp_path / "a.onnx"
    assert convnet.export(trained_run, "onnx", tmp_path / "b.onnx") == tmp_path / "b.onnx"
