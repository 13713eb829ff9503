"""Exported models (ONNX, SavedModel, LiteRT) take the same raw pixels, agree with the Keras
model, and name their classes (ONNX metadata, SavedModel signature, labels.txt, model card)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import yaml
from conftest import CLASS_NAMES, make_images, run_main

from convnet.cli import main
from convnet.export_files import FORMATS
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
    # Named as the SavedModel and the server name them, not as the converter left them.
    assert (feed.name, feed.shape) == ("pixels", ["batch", 28, 28, 1])
    output = session.get_outputs()[0]
    assert (output.name, output.shape) == ("probabilities", ["batch", len(CLASS_NAMES)])
    x, expected = reference
    (probabilities,) = session.run(["probabilities"], {"pixels": x})
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)


def test_savedmodel_from_the_cli_matches_keras(trained_run, reference, tmp_path, capsys):
    import tensorflow as tf

    out = tmp_path / "saved"
    result = run_main(capsys, "export", trained_run, "--format", "savedmodel", "--out", out)
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


def test_a_new_name_without_a_suffix_is_a_folder_to_export_into(trained_run, tmp_path):
    path = export_model(trained_run, "litert", tmp_path / "exports")  # `--out exports/`
    assert path == tmp_path / "exports" / "model.tflite" and path.stat().st_size > 0
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "MODEL_CARD.md",
        "labels.txt",
        "model.tflite",
    ]


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


@pytest.mark.parametrize(
    ("format", "name", "expected"),
    [
        ("litert", "model.onnx", r"model.onnx: litert exports are .tflite files; pass --out "
         r"ending in .tflite, or a folder\.$"),
        ("onnx", "model.tflite", r"onnx exports are .onnx files"),
        ("savedmodel", "model.onnx", r"a SavedModel is a folder, and this name is a .onnx file's"),
    ],
)  # fmt: skip
def test_a_new_file_named_as_another_format_is_refused(
    trained_run, tmp_path, capsys, format, name, expected
):
    """The next tool would read `model.onnx` as ONNX: a LiteRT file is not written there."""
    done = run_main(capsys, "export", trained_run, "--format", format, "--out", tmp_path / name)
    assert done.returncode == 2
    assert re.search(expected, done.stderr.strip().splitlines()[-1])
    assert list(tmp_path.iterdir()) == []


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


@pytest.mark.trains
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
@pytest.mark.trains
def test_an_export_of_a_run_with_test_time_views_scores_like_the_run(tta_run, tmp_path, format):
    from convnet.evaluation import TestTimeAugmentation, predict_proba

    run, x, y, metrics = tta_run
    path = export_model(run, format, tmp_path / "views" / FORMATS[format])
    probabilities = exported_predict(format, path, x)
    model = load_model(Run(run).model_file)
    views = predict_proba(model, x, tta=TestTimeAugmentation(flip=True, shift=1))
    np.testing.assert_allclose(probabilities, views, atol=1e-4)
    assert np.mean(probabilities.argmax(1) == y) == metrics["test_accuracy"]
    # One view alone answers otherwise: the export really averages the views.
    assert np.abs(probabilities - model.predict(x, verbose=0)).max() > 1e-4


@pytest.mark.trains
def test_no_tta_exports_one_view_and_serving_averages_it_then(tta_run, tmp_path, capsys):
    from convnet.exporter import averaged_views
    from convnet.serving.engines import load_engine

    run, x, _, _ = tta_run
    out = tmp_path / "one-view.onnx"
    result = run_main(capsys, "export", run, "--no-tta", "--out", out)
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


def test_litert_float32_matches_keras_and_int8_keeps_its_accuracy(
    trained_run, tiny_npz, tmp_path, capfd
):
    x = np.load(tiny_npz)["x_test"][..., np.newaxis]
    y = np.load(tiny_npz)["y_test"]
    expected = load_model(Run(trained_run).model_file).predict(x, verbose=0)
    result = run_main(capfd, "export", trained_run, "--format", "litert", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(litert_predict(tmp_path / "model.tflite", x), expected, atol=1e-4)
    int8 = tmp_path / "int8.tflite"
    result = run_main(capfd, "export", trained_run, "--format", "litert", "--quantize", "int8",
                      "--out", int8)  # fmt: skip
    # The converter's C++ settings line (`fully_quantize: 0, ...`) is hidden as at start-up.
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert int8.stat().st_size < 0.5 * (tmp_path / "model.tflite").stat().st_size
    accuracy = np.mean(litert_predict(int8, x).argmax(1) == y)
    assert accuracy >= np.mean(expected.argmax(1) == y) - 0.005


@pytest.mark.parametrize(("quantize", "at_most"), [("float16", 0.6), ("dynamic", 0.4)])
def test_litert_float16_and_dynamic_shrink_the_file_and_answer_like_keras(
    trained_run, tiny_npz, exports, tmp_path, quantize, at_most
):
    """`--quantize float16` halves the weights, `dynamic` stores them as int8 (a quarter); both
    take uint8 pixels and give float32 probabilities, as the float32 export does."""
    x = np.load(tiny_npz)["x_test"][..., np.newaxis]
    y = np.load(tiny_npz)["y_test"]
    expected = load_model(Run(trained_run).model_file).predict(x, verbose=0)
    out = tmp_path / f"{quantize}.tflite"
    argv = ["export", str(trained_run), "--format", "litert", "--quantize", quantize]
    assert main([*argv, "--out", str(out)]) == 0
    assert out.stat().st_size < at_most * exports["litert"].stat().st_size
    answers = litert_predict(out, x)
    assert answers.dtype == np.float32 and answers.shape == expected.shape
    if quantize == "float16":  # float16 weights, float32 arithmetic
        np.testing.assert_allclose(answers, expected, atol=1e-2)
    assert np.mean(answers.argmax(1) == expected.argmax(1)) >= 0.99
    assert np.mean(answers.argmax(1) == y) >= np.mean(expected.argmax(1) == y) - 0.01


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--quantize", "int8"], "--quantize int8 is for --format litert; received onnx."),
        (["--format", "litert", "--quantize", "int8"], "calibrated on the run's validation images"),
    ],
)
@pytest.mark.trains
def test_quantizing_what_cannot_be_is_one_line(tta_run, tmp_path, args, expected, capsys):
    run, *_ = tta_run
    out = tmp_path / "exports"
    result = run_main(capsys, "export", run, *args, "--out", out / "model.tflite")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert not out.exists()


@pytest.fixture(scope="module")
def exports(trained_run, tmp_path_factory) -> dict:
    """`trained_run` exported once in each format, each into a folder of its own."""
    root = tmp_path_factory.mktemp("exports")
    names = {"onnx": "model.onnx", "litert": "model.tflite", "savedmodel": "saved_model"}
    return {f: export_model(trained_run, f, root / f / name) for f, name in names.items()}


def onnx_metadata(path) -> dict:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def front_matter(card) -> dict:
    """The YAML between a model card's two `---` lines."""
    return yaml.safe_load(card.read_text().split("---\n")[1])


def edit_run(run, config=None, class_names=...) -> None:
    """Changes a run folder's records after the fact: config.yaml settings, and the manifest's
    class names (None removes them)."""
    if config:
        settings = yaml.safe_load((run / "config.yaml").read_text()) | config
        (run / "config.yaml").write_text(yaml.safe_dump(settings))
    if class_names is not ...:
        manifest = Run(run).read_json("manifest.json")
        manifest["data"].pop("class_names", None)
        if class_names is not None:
            manifest["data"]["class_names"] = list(class_names)
        Run(run).write_json("manifest.json", manifest)


def test_onnx_metadata_names_the_classes_the_pixel_range_and_the_views(exports, tta_run, tmp_path):
    from convnet.exporter import averaged_views

    metadata = onnx_metadata(exports["onnx"])
    assert json.loads(metadata["class_names"]) == list(CLASS_NAMES)
    assert json.loads(metadata["pixel_range"]) == [0, 255]
    assert metadata["convnet_tta_views"] == "1" and averaged_views(exports["onnx"]) == 1
    run, *_ = tta_run
    assert averaged_views(export_model(run, "onnx", tmp_path / "tta.onnx")) == 18


@pytest.mark.parametrize(
    ("train", "licence", "datasets"),
    [(None, "mit", ["zalando-datasets/fashion_mnist"]), ("quickdraw:cat,dog", "cc-by-4.0", None)],
)
def test_exports_follow_the_runs_records(trained_run, tmp_path, train, licence, datasets):
    """The pixel range and the data's licence come from the run's config (a run of
    Fashion-MNIST itself names no training data), the names from its manifest."""
    run = shutil.copytree(trained_run, tmp_path / "run")
    edit_run(run, {"pixel_range": "0,16", "train": train}, class_names=["a", "b|c", "d", "e"])
    metadata = onnx_metadata(export_model(run))
    assert json.loads(metadata["pixel_range"]) == [0, 16]
    assert json.loads(metadata["class_names"]) == ["a", "b|c", "d", "e"]
    header, card = front_matter(run / "MODEL_CARD.md"), (run / "MODEL_CARD.md").read_text()
    assert header["license"] == licence and header.get("datasets") == datasets
    assert header["convnet"]["pixel_range"] == [0, 16]
    assert "| 1 | b\\|c |" in card  # a table cell, not two
    assert "values 0 to 16, scaled to 0-255" in card
    # The data are named without the folders of the machine that trained the run.
    data = json.loads((run / "manifest.json").read_text())["data"]
    test = data["test"]["source"]
    assert test.startswith("/") and f"evaluated only on `{test.rsplit('/', 1)[1]}`." in card
    assert test.rsplit("/", 1)[0] not in card and data["train"]["source"] not in card


def test_litert_writes_its_labels_beside_it_and_still_runs(exports, reference):
    path = exports["litert"]
    assert (path.parent / "labels.txt").read_text().splitlines() == list(CLASS_NAMES)
    x, expected = reference
    np.testing.assert_allclose(litert_predict(path, x), expected, atol=1e-4)


def test_savedmodel_signature_returns_probabilities_and_class_names(exports, reference):
    import tensorflow as tf

    x, expected = reference
    loaded = tf.saved_model.load(str(exports["savedmodel"]))
    answer = loaded.signatures["serving_default"](pixels=tf.constant(x))
    assert set(answer) == {"probabilities", "class"}
    np.testing.assert_allclose(answer["probabilities"].numpy(), expected, atol=1e-4)
    # `serve` answers as Keras' own `Model.export` made it: the probabilities alone.
    np.testing.assert_array_equal(answer["probabilities"], loaded.serve(tf.constant(x)))
    named = [name.decode() for name in answer["class"].numpy()]
    assert named == [CLASS_NAMES[i] for i in expected.argmax(1)]
    assert len(set(named)) > 1  # the names follow the images, not one constant


def test_the_onnx_engine_names_classes_from_the_file(trained_run, tmp_path):
    """`serve --engine onnx` answers with the names the ONNX file records, whatever the run's
    manifest says since; a file exported before names were recorded takes the run's."""
    import onnx

    from convnet.serving.engines import load_engine

    run = shutil.copytree(trained_run, tmp_path / "run")
    export_model(run)  # RUN/model.onnx, newer than model.keras: the engine loads it
    renamed = ("w", "x", "y", "z")
    edit_run(run, class_names=renamed)
    assert load_engine(Run(run), "onnx").class_names == CLASS_NAMES
    assert load_engine(Run(run), "keras").class_names == renamed
    edit_run(run, class_names=None)
    assert load_engine(Run(run), "onnx").class_names == CLASS_NAMES
    edit_run(run, class_names=renamed)
    old = onnx.load(str(run / "model.onnx"))  # as exports made before the names were recorded
    del old.metadata_props[:]
    old.metadata_props.add(key="convnet_tta_views", value="1")
    onnx.save(old, str(run / "model.onnx"))
    assert load_engine(Run(run), "onnx").class_names == renamed


@pytest.mark.parametrize("format", ["onnx", "litert", "savedmodel"])
def test_a_model_card_comes_with_every_export_and_its_snippet_runs(
    exports, trained_run, format, monkeypatch, capsys
):
    path = exports[format]
    card = (path if format == "savedmodel" else path.parent) / "MODEL_CARD.md"
    text, header = card.read_text(), front_matter(card)
    metrics = Run(trained_run).read_json("metrics.json")
    scores = header["model-index"][0]["results"][0]["metrics"]
    assert {s["type"]: s["value"] for s in scores} == {
        "accuracy": metrics["test_accuracy"],
        "loss": metrics["test_loss"],
    }
    assert header["pipeline_tag"] == "image-classification" and header["license"] == "unknown"
    assert header["convnet"]["preset"] == "seed" and header["convnet"]["format"] == format
    body = text.split("---\n", 2)[2]
    assert all(f"| {i} | {name} |" in body for i, name in enumerate(CLASS_NAMES))
    # "How to use" runs as written, from the card's folder, and names a class.
    snippet = re.search(r"```python\n(.*?)```", body, re.DOTALL).group(1)
    monkeypatch.chdir(card.parent)
    exec(compile(snippet, str(card), "exec"), {})
    assert capsys.readouterr().out.split()[0] in CLASS_NAMES


@pytest.mark.parametrize(("name", "format"), [("MODEL_CARD.md", "onnx"), ("labels.txt", "litert")])
def test_export_refuses_to_replace_a_card_or_labels_it_did_not_write(
    trained_run, tmp_path, name, format
):
    (tmp_path / name).write_text("my own notes\n")
    with pytest.raises(ExportError, match=f"{name}: exists and "):
        export_model(trained_run, format, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert (tmp_path / name).read_text() == "my own notes\n"


def test_export_refuses_to_describe_another_runs_export_beside_it(trained_run, tta_run, tmp_path):
    """One folder has one card: another run's export there would leave the first described
    wrongly; the same run's exports in other formats may share it (the last one's card)."""
    run, *_ = tta_run
    export_model(trained_run, "onnx", tmp_path)
    with pytest.raises(ExportError, match=r"MODEL_CARD.md: describes model.onnx of run seed-tiny"):
        export_model(run, "onnx", tmp_path / "other.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MODEL_CARD.md", "model.onnx"]
    assert export_model(run, "onnx", tmp_path) == tmp_path / "model.onnx"  # replaces it all
    assert front_matter(tmp_path / "MODEL_CARD.md")["convnet"]["run"].startswith("tta, started ")


def test_a_failed_export_leaves_the_earlier_one_whole(trained_run, tmp_path, monkeypatch):
    from convnet import exporter

    export_model(trained_run, "litert", tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == ["MODEL_CARD.md", "labels.txt", "model.tflite"]

    def fails(*args):
        raise RuntimeError("the disk went away")

    monkeypatch.setattr(exporter, "model_card", fails)
    with pytest.raises(ExportError, match="litert export failed .the disk went away"):
        export_model(trained_run, "litert", tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no staging left
