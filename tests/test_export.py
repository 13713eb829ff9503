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
        ("onnx", "file", "exists and is not a .onnx file"),
        ("litert", "file", "exists and is not a .tflite file"),
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
    """`best` trains with random layers and scores through several views (9 shifts here: bars
    are not mirror-symmetric classes): its exports run the inference graph and average them."""
    import onnxruntime as ort
    import tensorflow as tf

    from convnet.evaluation import TestTimeAugmentation, predict_proba

    x = make_images(64, seed=4).x
    run = Run(augmenting_run)
    views = TestTimeAugmentation.of(run.config().recipe())
    assert views.count == 9
    expected = predict_proba(load_model(run.model_file), x, tta=views)
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


def litert_predict(path, x: np.ndarray) -> np.ndarray:
    """Probabilities from LiteRT's own interpreter, as a phone would run the file."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path))
    (given,), (answer,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert given["dtype"] == np.uint8  # raw pixels, as model.keras takes
    interpreter.resize_tensor_input(given["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(given["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(answer["index"])


def exported_predict(format: str, path, x: np.ndarray) -> np.ndarray:
    if format == "litert":
        return litert_predict(path, x)
    if format == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return loaded.serve(tf.constant(x)).numpy()


@pytest.fixture(scope="module")
def tta_run(tmp_path_factory, tiny_npz):
    """A run scored through 18 test-time views (mirror and 1-pixel shifts), without validation
    data; its test images and metrics."""
    import convnet

    out = tmp_path_factory.mktemp("runs") / "tta"
    convnet.train(
        train=str(tiny_npz), epochs=1, batch_size=64, flip=True, shift_tta=1, val_split=0.0,
        out=str(out), verbose=0,
    )  # fmt: skip
    metrics = Run(out).read_json("metrics.json")
    x = np.load(tiny_npz)["x_test"][..., np.newaxis]
    return out, x, np.load(tiny_npz)["y_test"], metrics


@pytest.mark.parametrize("format", ["onnx", "savedmodel", "litert"])
def test_an_export_of_a_run_with_test_time_views_scores_like_the_run(tta_run, tmp_path, format):
    from convnet.evaluation import TestTimeAugmentation, predict_proba

    run, x, y, metrics = tta_run
    path = export_model(run, format, tmp_path / f"model.{format}")
    probabilities = exported_predict(format, path, x)
    model = load_model(Run(run).model_file)
    views = predict_proba(model, x, tta=TestTimeAugmentation(flip=True, shift=1))
    np.testing.assert_allclose(probabilities, views, atol=1e-4)
    assert np.mean(probabilities.argmax(1) == y) == metrics["test_accuracy"]
    # One view alone answers otherwise: the export really averages the views.
    assert np.abs(probabilities - model.predict(x, verbose=0)).max() > 1e-4


def test_no_tta_exports_one_view_and_serving_averages_it_then(tta_run, tmp_path):
    from convnet.exporter import averaged_views
    from convnet.serving.engines import load_engine

    run, x, _, _ = tta_run
    out = tmp_path / "one-view.onnx"
    result = run_cli("export", run, "--no-tta", "--out", out)
    assert result.returncode == 0, result.stderr
    one_view = exported_predict("onnx", out, x)
    model = load_model(Run(run).model_file)
    np.testing.assert_allclose(one_view, model.predict(x, verbose=0), atol=1e-4)
    assert averaged_views(out) == 1
    # `serve --engine onnx` answers like `--engine keras`, from a graph that averages the views
    # (exported on the fly) and from a one-view model.onnx in the run folder alike.
    keras_answers = load_engine(Run(run), "keras").predict(x[:20])
    np.testing.assert_allclose(
        load_engine(Run(run), "onnx").predict(x[:20]), keras_answers, atol=1e-5
    )
    shutil.copy(out, run / "model.onnx")
    try:
        engine = load_engine(Run(run), "onnx")
        np.testing.assert_allclose(engine.predict(x[:20]), keras_answers, atol=1e-5)
    finally:
        (run / "model.onnx").unlink()


def test_litert_float32_matches_keras_and_int8_keeps_its_accuracy(trained_run, tiny_npz, tmp_path):
    x = np.load(tiny_npz)["x_test"][..., np.newaxis]
    y = np.load(tiny_npz)["y_test"]
    expected = load_model(Run(trained_run).model_file).predict(x, verbose=0)
    result = run_cli("export", trained_run, "--format", "litert", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(litert_predict(tmp_path / "model.tflite", x), expected, atol=1e-4)
    int8 = export_model(trained_run, "litert", tmp_path / "int8.tflite", quantize="int8")
    assert int8.stat().st_size < 0.5 * (tmp_path / "model.tflite").stat().st_size
    accuracy = np.mean(litert_predict(int8, x).argmax(1) == y)
    assert accuracy >= np.mean(expected.argmax(1) == y) - 0.005


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--quantize", "int8"], "--quantize int8 is for --format litert; received onnx."),
        (["--format", "litert", "--quantize", "int8"], "calibrated on the run's validation images"),
    ],
)
def test_quantizing_what_cannot_be_is_one_line(tta_run, tmp_path, args, expected):
    run, *_ = tta_run
    out = tmp_path / "exports"
    result = run_cli("export", run, *args, "--out", out / "model.tflite")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert not out.exists()
