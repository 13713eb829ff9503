"""Batch prediction: `convnet predict RUN PATH... --out`, streamed, atomic, past bad files."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import pty
import struct
import subprocess
import termios
import tracemalloc

import numpy as np
import pytest
from conftest import CONVNET, make_images, run_cli, run_main, write_csv
from PIL import Image

import convnet


def scans(folder, count: int, seed: int = 5):
    """`count` PNGs in nested folders, a text file and a corrupt PNG among them."""
    images = make_images(count, seed=seed)
    paths = []
    for i, pixels in enumerate(images.x[..., 0]):
        path = folder / ("top" if i % 2 else "deep/er") / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    (folder / "top" / "notes.txt").write_text("not an image")
    (folder / "top" / "broken.png").write_bytes(b"\x89PNG but cut short")
    return images, paths


def test_folders_to_csv_and_jsonl_match_predict_and_list_a_corrupt_file(
    tmp_path, trained_run, capsys
):
    images, paths = scans(tmp_path / "scans", 7)
    out = tmp_path / "preds.csv"
    result = run_main(
        capsys, "predict", trained_run, tmp_path / "scans", "--out", out, "--batch-size", "3"
    )
    assert result.returncode == 1, result.stderr  # one file failed, the others were predicted
    broken = tmp_path / "scans/top/broken.png"
    assert f"convnet: {broken}: not a readable image" in result.stderr
    notes = tmp_path / "scans/top/notes.txt"
    assert f"skipped 1 file in the folders given (not an image), such as {notes}\n" in (
        result.stderr
    )
    assert "1 of 8 inputs could not be read" in result.stderr
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == [
        "file",
        *("class", "probability", "class_2", "probability_2", "class_3", "probability_3"),
        "error",
    ]
    expected = {r["file"]: r for r in convnet.predict(trained_run, paths)}
    good = [row for row in rows if not row["error"]]
    assert sorted(row["file"] for row in good) == sorted(expected)
    for row in good:
        want = expected[row["file"]]
        assert (row["class"], row["class_3"]) == (want["class"], want["top"][2]["class"])
        assert float(row["probability"]) == pytest.approx(want["probability"], rel=1e-5)
    (failed,) = [row for row in rows if row["error"]]
    assert failed["file"] == str(broken) and failed["class"] == ""
    in_order = [*paths[::2], *paths[1::2], broken]  # deep/er, then top; files by name
    assert [row["file"] for row in rows] == list(map(str, in_order))

    lines = tmp_path / "preds.jsonl"
    again = run_main(
        capsys, "predict", trained_run, *paths[:3], "--out", lines, "--top-k", "2", "--json"
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["rows"] == 3
    found = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [r["file"] for r in found] == list(map(str, paths[:3]))
    for r in found:
        assert r["class"] == expected[r["file"]]["class"] and len(r["top"]) == 2
        assert r["probability"] == pytest.approx(expected[r["file"]]["probability"], rel=1e-5)


def test_kaggle_submission_for_a_test_csv(tmp_path, trained_run, capsys):
    test = write_csv(tmp_path / "test.csv", make_images(5, seed=3))
    out = tmp_path / "submission.csv"
    result = run_main(capsys, "predict", trained_run, test, "--format", "kaggle", "--out", out)
    assert result.returncode == 0, result.stderr
    expected = convnet.predict(trained_run, [test])
    labels = [str(int(r["class"].removeprefix("bar"))) for r in expected]  # names bar0..: index
    assert out.read_text().splitlines() == ["ImageId,Label"] + [
        f"{i},{label}" for i, label in enumerate(labels, start=1)
    ]
    not_a_csv = run_main(
        capsys, "predict", trained_run, test, test, "--format", "kaggle", "--out", out
    )
    assert not_a_csv.returncode == 2
    assert "for the rows of one test CSV; received 2 files" in not_a_csv.stderr


def test_no_output_under_the_final_name_after_a_failure_or_an_interruption(
    tmp_path, trained_run, capsys
):
    small = write_csv(tmp_path / "small.csv", make_images(3, side=14))
    out = tmp_path / "out" / "submission.csv"
    result = run_main(capsys, "predict", trained_run, small, "--format", "kaggle", "--out", out)
    assert result.returncode == 2, result.stderr
    assert "rows hold (14, 14, 1) images; expected (28, 28, 1)." in result.stderr
    assert list(out.parent.iterdir()) == []  # neither the file nor its temporary

    _, paths = scans(tmp_path / "scans", 6)
    seen = []

    def interrupt(row):
        seen.append(row)
        if len(seen) == 4:
            raise KeyboardInterrupt

    preds = tmp_path / "out" / "preds.csv"
    with pytest.raises(KeyboardInterrupt):
        convnet.predict_files(trained_run, paths, out=preds, batch_size=2, on_row=interrupt)
    assert list(out.parent.iterdir()) == []
    summary = convnet.predict_files(trained_run, paths, out=preds, batch_size=2)
    assert (summary["rows"], summary["failed"]) == (6, [])
    assert [p.name for p in out.parent.iterdir()] == ["preds.csv"]


def test_each_batch_s_rows_reach_the_file_before_the_next_batch(tmp_path, trained_run):
    """A reader of the file being written (or of stdout, a FIFO) sees the rows batch by batch,
    not when the buffer fills or the command ends."""
    _, paths = scans(tmp_path / "scans", 6)
    out = tmp_path / "out" / "preds.csv"
    seen = []

    def written(row):  # each row once written; the file as a reader sees it then
        (temporary,) = out.parent.glob(".preds.csv.*.tmp")
        seen.append(max(0, len(temporary.read_text().splitlines()) - 1))  # less the header

    convnet.predict_files(trained_run, paths, out=out, batch_size=2, on_row=written)
    assert seen == [0, 2, 2, 4, 4, 6]
    assert len(out.read_text().splitlines()) == 7


def test_inputs_none_of_which_can_be_read_are_refused_in_one_line(tmp_path, trained_run, capsys):
    """Until one input reads, failures are held back: all failing is bad input (exit 2, one
    line, nothing written); a failure before a good input is still listed in its place."""
    broken = [tmp_path / f"{name}.png" for name in ("a", "b", "c")]
    for path in broken:
        path.write_bytes(b"\x89PNG but cut short")
    out = tmp_path / "out" / "preds.csv"
    result = run_main(capsys, "predict", trained_run, *broken, "--out", out)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"{broken[0]}: not a readable image" in result.stderr
    assert "(2 more inputs could not be read either)" in result.stderr
    assert not out.parent.exists() or list(out.parent.iterdir()) == []

    np.save(tmp_path / "good.npy", make_images(1).x[0])
    mixed = run_main(capsys, "predict", trained_run, broken[0], tmp_path / "good.npy", "--out", out)
    assert mixed.returncode == 1, mixed.stderr
    rows = list(csv.DictReader(out.open()))
    assert [row["file"] for row in rows] == [str(broken[0]), str(tmp_path / "good.npy")]
    assert rows[0]["error"] and not rows[1]["error"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--out", "preds.txt"], "preds.txt: cannot tell the format from its extension '.txt'"),
        (["--out", "."], ".: a folder; expected a file name for the predictions."),
        (["--format", "kaggle"], "--format kaggle writes ImageId,Label for the rows of one"),
        (["--top-k", "0"], "--top-k 0: expected a whole number >= 1."),
        (["--batch-size", "0"], "--batch-size 0: expected a whole number >= 1."),
    ],
)
def test_arguments_that_stop_everything_are_one_line_and_exit_2(
    tmp_path, trained_run, capsys, monkeypatch, flags, message
):
    from convnet.cli import main

    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "one.npy", make_images(1).x[0])
    assert main(["predict", str(trained_run), "one.npy", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"convnet: error: {message}") and err.count("\n") == 1, err
    assert [p.name for p in tmp_path.iterdir() if p.name != "user-cache"] == ["one.npy"]


def test_memory_holds_one_batch_whatever_the_count(tmp_path, trained_run):
    """Python-side peak (NumPy's pixels, the rows) over 1,000 images is set by the batch: batches
    of 1,000 hold them all at once (784 bytes each, twice: the list and the stacked batch), batches
    of 20 a fiftieth of that. bench.predict measures the whole process on 100,000 files."""
    _, paths = scans(tmp_path / "scans", 1000)
    convnet.predict_files(trained_run, paths[:20], batch_size=20)  # Keras's one-off set-up
    peaks = {}
    for batch_size in (20, 1000):
        tracemalloc.start()
        summary = convnet.predict_files(trained_run, paths, batch_size=batch_size)
        peaks[batch_size] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert summary["rows"] == 1000
    assert peaks[20] < peaks[1000] - 1_000_000, peaks


def test_a_folder_shows_its_progress_on_a_terminal_and_not_in_a_pipe(tmp_path, trained_run):
    folder = tmp_path / "scans"
    folder.mkdir()
    for i, image in enumerate(make_images(30, seed=5).x):
        Image.fromarray(image[..., 0]).save(folder / f"{i:02}.png")
    terminal, stderr = pty.openpty()  # stderr is a terminal, as a person's is, 100 wide
    fcntl.ioctl(stderr, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    done = subprocess.run(
        [CONVNET, "predict", trained_run, folder, "--out", tmp_path / "a.csv"],
        stderr=stderr,
        stdout=subprocess.DEVNULL,
        timeout=300,
    )
    os.close(stderr)
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # the other end is closed and drained
            break
        if not chunk:
            break
        shown += chunk
    os.close(terminal)
    assert done.returncode == 0
    assert "predict: 100%" in shown.decode() and "30/30" in shown.decode()
    piped = run_cli("predict", trained_run, folder, "--out", tmp_path / "b.csv")
    assert piped.returncode == 0 and "predict:" not in piped.stderr
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
