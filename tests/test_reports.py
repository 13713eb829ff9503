"""The run report, the comparison page and the learning-rate finder, checked in real Chromium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import CLASS_NAMES, make_images, run_cli, run_main
from PIL import Image

from convnet import api
from convnet.cli import main
from convnet.errors import ConfigError, RunError
from convnet.evaluation import TestTally
from convnet.reports import plots
from convnet.reports.compare import data_differences

PLOTS = (
    "learning_curves.png",
    "confusion_matrix.png",
    "confusion_matrix_normalised.png",
    "reliability.png",
    "samples.png",
)


def open_page(browser, path: Path, screenshot: Path | None = None) -> dict:
    """Loads a local page; returns its console errors, outside requests and image widths."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors, outside = [], []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "request",
        lambda request: request.url.startswith(("file:", "data:")) or outside.append(request.url),
    )
    page.goto(path.resolve().as_uri(), wait_until="load")
    found = {
        "errors": errors,
        "outside": outside,
        "widths": page.evaluate("[...document.images].map(image => image.naturalWidth)"),
        "text": page.inner_text("body"),
    }
    if screenshot:
        page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    return found


def test_training_writes_the_report(trained_run):
    assert (trained_run / "report.html").is_file()
    for name in PLOTS:
        with Image.open(trained_run / "plots" / name) as image:
            assert image.width >= 500 and image.height >= 400, name
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert [row["class"] for row in metrics["per_class"]][:4] == list(CLASS_NAMES)
    model = keras.saving.load_model(trained_run / "model.keras")
    test = make_images(200, seed=2)  # the test split of `tiny_npz`
    probabilities = model.predict(test.x, verbose=0)
    expected = TestTally.of(test.y, probabilities).calibration()["ece"]
    assert metrics["test_ece"] == pytest.approx(expected)
    assert np.sum(metrics["confusion_matrix"]) == 200


def test_report_renders_in_chromium(trained_run, browser, artifacts):
    found = open_page(browser, trained_run / "report.html", artifacts / "report.png")
    assert found["errors"] == []
    assert found["outside"] == []  # self-contained: nothing fetched
    assert len(found["widths"]) >= len(PLOTS) and all(w > 0 for w in found["widths"])
    for text in (
        "Learning curves",
        "Confusion matrix",
        "Most-confused pairs",
        "Top losses",
        "Calibration",
        "ECE",
        "Training data",
        "manifest.json",
        "macro avg",
        "bar3",
    ):
        assert text in found["text"], text
    assert (artifacts / "report.png").stat().st_size > 10_000


def test_report_command_rewrites_a_run(trained_run, tmp_path, capsys):
    run = shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns("*.html"))
    shutil.rmtree(run / "plots")
    assert main(["report", str(run)]) == 0  # in-process: the binary is tested by lr-find
    assert f"report: {run / 'report.html'}" in capsys.readouterr().out
    assert all((run / "plots" / name).is_file() for name in PLOTS)


def test_report_of_a_folder_without_a_model_fails_clearly(tmp_path):
    (tmp_path / "config.yaml").write_text("preset: seed\n")
    with pytest.raises(RunError, match="no model.keras; the run has not finished training"):
        api.report(tmp_path)


def overconfident(n: int = 12):
    """`n` bar images and probabilities that get every one wrong, at 0.94 each."""
    data = make_images(n, seed=3)
    probabilities = np.full((n, 4), 0.02)
    probabilities[np.arange(n), (data.y + 1) % 4] = 0.94
    return data, probabilities


def test_top_losses_gallery_names_the_classes(tmp_path, artifacts, monkeypatch):
    data, probabilities = overconfident()
    losses = TestTally.of(data.y, probabilities, top_k=9).top_losses()
    drawn = []  # the figure, as it is saved
    save = plots.save_figure
    monkeypatch.setattr(
        plots, "save_figure", lambda fig, path: drawn.append(fig) or save(fig, path)
    )
    path = plots.top_losses_gallery(data.x, losses, list(CLASS_NAMES), artifacts / "top_losses.png")
    [figure] = drawn
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == [
        f"true: {CLASS_NAMES[loss['true']]}\npred: {CLASS_NAMES[loss['predicted']]} (0.94)"
        for loss in losses
    ]
    assert len(titles) == 9 and all(any(name in t for t in titles) for name in CLASS_NAMES)
    with Image.open(path) as image:  # six to a row
        assert image.size == (6 * 210, 2 * 250)
    assert plots.top_losses_gallery(data.x, [], list(CLASS_NAMES), tmp_path / "none.png") is None


def test_an_overconfident_model_has_an_ece_of_its_overconfidence(artifacts):
    data, probabilities = overconfident()
    bins = TestTally.of(data.y, probabilities).calibration()
    assert bins["ece"] == pytest.approx(0.94)  # sure at 0.94, right never
    plots.reliability_diagram(bins, artifacts / "reliability_overconfident.png")


def test_compare_overlays_runs(trained_run, tmp_path, browser, artifacts):
    other = shutil.copytree(trained_run, tmp_path / "other-run")
    metrics = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps(metrics | {"test_accuracy": 0.5}))
    out = api.compare([trained_run, other], tmp_path / "compare.html")
    found = open_page(browser, out, artifacts / "compare.png")
    assert found["errors"] == [] and found["outside"] == []
    assert len(found["widths"]) == 1 and found["widths"][0] > 0
    assert trained_run.name in found["text"] and "other-run" in found["text"]
    assert "Test accuracy" in found["text"] and "0.5000" in found["text"]
    assert "not trained on the same data" not in found["text"]


def test_compare_warns_when_runs_saw_different_data(trained_run, tmp_path):
    other = shutil.copytree(trained_run, tmp_path / "other-run")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["data"]["test"]["source"] = "/data/bars-test.csv"  # the same images, as a CSV
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert data_differences([trained_run, other]) == []
    manifest["data"]["test"] |= {"source": "/data/shifted.npz", "sha256": "ab" * 32}
    (other / "manifest.json").write_text(json.dumps(manifest))
    ours = json.loads((trained_run / "manifest.json").read_text())["data"]["test"]["sha256"]
    assert data_differences([trained_run, other]) == [
        f"The runs were not tested on the same data: {trained_run.name} on bars.npz:test "
        f"(sha256 {ours[:12]}); other-run on shifted.npz (sha256 abababababab)."
    ]
    result = run_cli("compare", trained_run, other, "--out", tmp_path / "c.html")
    assert result.returncode == 0, result.stderr
    assert "convnet: warning: The runs were not tested on the same data" in result.stderr
    assert 'class="warning"' in (tmp_path / "c.html").read_text()


def test_compare_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(RunError, match="not a run folder; expected config.yaml"):
        api.compare([tmp_path], tmp_path / "compare.html")


@pytest.mark.trains
def test_lr_find_command(tiny_npz, tmp_path, artifacts, capsys):
    plot = tmp_path / "lr.png"
    result = run_main(
        capsys,
        "lr-find",
        "--train",
        tiny_npz,
        "--batch-size",
        "32",
        "--steps",
        "60",
        "--plot",
        plot,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    rates = found["learning_rates"]
    assert rates == sorted(rates) and rates[0] == pytest.approx(1e-7)
    assert rates[0] < found["suggested"] < found["minimum"] <= rates[-1]
    assert found["suggested"] == min(found["minimum"] / 10, found["steepest"])
    assert found["plot"] == str(plot) and plot.is_file()
    shutil.copy(plot, artifacts / "lr_find.png")


def test_lr_find_suggests_from_the_curve():
    from convnet.training.lr_find import _suggest

    rates = list(np.logspace(-5, 0, 11))  # half a decade apart: a tenth is 2 rates down
    # Falling fastest at rate 5, lowest at 8, then blowing up: the steepest rate is below a
    # tenth of the minimum's (rate 6), and suggested.
    found = _suggest(rates, [2.3, 2.3, 2.3, 2.3, 2.2, 1.2, 0.4, 0.35, 0.3, 3.0, 9.0])
    assert (found["steepest"], found["minimum"], found["suggested"]) == (
        rates[5],
        rates[8],
        rates[5],
    )
    # Falling fastest just before the minimum: a tenth of the minimum's rate is the lower.
    found = _suggest(rates, [2.3] * 6 + [2.2, 1.0, 0.3, 2.0, 9.0])
    assert (found["steepest"], found["minimum"]) == (rates[7], rates[8])
    assert found["suggested"] == pytest.approx(rates[6])
    assert _suggest(rates[:2], [2.3, 2.2])["suggested"] is None


@pytest.mark.trains
def test_lr_find_stops_once_the_loss_diverges(tmp_path):
    """Bars with shuffled labels, which no rate fits (on the bars themselves the loss reaches 0
    and, its gradients gone, never diverges): rates climbing to 1e4 blow the loss up long
    before the last of 60 steps, and the test stops there, the loss risen from its lowest.
    Rates up to 1e-4 never do: it runs every step."""
    data = make_images(400, seed=5)
    shuffled = (data.x, np.random.default_rng(0).permutation(data.y))
    settings = {"train": shuffled, "batch_size": 32, "plot": tmp_path / "lr.png"}
    wild = api.lr_find(steps=60, min_lr=1e-5, max_lr=1e4, **settings)
    assert wild["diverged"] and 3 <= wild["steps"] < 50
    assert len(wild["learning_rates"]) == len(wild["losses"]) == wild["steps"]
    assert wild["losses"][-1] > min(wild["losses"])  # rising when it stopped
    tame = api.lr_find(steps=20, min_lr=1e-6, max_lr=1e-4, **settings)
    assert not tame["diverged"] and tame["steps"] == len(tame["losses"]) == 20


@pytest.mark.trains
def test_lr_find_applies_deterministic(tiny_npz, tmp_path, monkeypatch):
    import tensorflow as tf

    calls = []  # recorded, not applied: op determinism would stay on for the whole session
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism", lambda: calls.append(1))
    settings = {"train": str(tiny_npz), "batch_size": 32, "plot": tmp_path / "lr.png"}
    api.lr_find(steps=5, **settings)
    assert calls == []
    api.lr_find(steps=5, deterministic=True, **settings)
    assert calls == [1]


def test_lr_find_offers_no_flags_it_would_ignore():
    result = run_cli("lr-find", "--epochs", "3")
    assert result.returncode == 2 and "unrecognized arguments: --epochs 3" in result.stderr


def test_lr_find_checks_its_range():
    with pytest.raises(ConfigError, match="steps >= 2 and 0 < min_lr < max_lr"):
        api.lr_find(steps=10, min_lr=1.0, max_lr=0.1)


@pytest.mark.trains
def test_training_without_validation_writes_a_report(tmp_path, tiny_npz):
    import convnet
    from convnet.reports.plots import read_history

    run = convnet.train(
        train=str(tiny_npz), epochs=1, val_split=0.0, out=str(tmp_path / "r"), verbose=0
    ).run
    history = read_history(run / "history.csv")
    assert "loss" in history and "val_loss" not in history  # CSVLogger's all-"NA" columns
    assert (run / "report.html").is_file()
