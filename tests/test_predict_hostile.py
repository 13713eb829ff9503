"""`convnet predict` against hostile and careless input (issue 31): file names that spreadsheets
run or that are not UTF-8, FIFOs among the scans and as --out, links and sockets as --out, rows
that must read back as written, and SIGTERM in the middle of a folder."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import pytest
from conftest import CONVNET, make_images, run_cli, run_main, wait_until
from PIL import Image
from test_resume import EPOCHS, TRAIN_FLAGS, epochs_logged, kill, start, wait_for_epochs

from convnet.files import atomic_file, remove_stale_temporaries
from convnet.inputs import iter_inputs


def save_images(folder: Path, names: list[str | bytes]) -> list[Path]:
    """One learnable PNG per name in `folder`; a bytes name is created as those exact bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, pixels in zip(names, make_images(len(names), seed=9).x[..., 0], strict=True):
        path = os.fsencode(folder) + b"/" + name if isinstance(name, bytes) else folder / name
        with open(path, "wb") as file:
            Image.fromarray(pixels).save(file, format="PNG")
        paths.append(Path(os.fsdecode(path)))
    return paths


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


HEADER = ["file", "class", "probability", "class_2", "probability_2", "error"]


def test_names_a_spreadsheet_would_run_are_written_as_text(
    tmp_path, trained_run, capsys, monkeypatch
):
    formulas = [r"=cmd|' \C calc'!A0.png", "@SUM(A1).png", "-2+3.png", "+1.png", "\tx.png"]
    save_images(tmp_path / "scans", [*formulas, "plain.png"])
    (tmp_path / "scans" / "=HYPERLINK(1).png").write_bytes(b"\x89PNG but cut short")
    out = tmp_path / "preds.csv"
    # Relative names: a folder given as `.` lists `=cmd...png`, not `/tmp/...`.
    monkeypatch.chdir(tmp_path / "scans")
    result = run_main(capsys, "predict", trained_run, ".", "--out", out, "--top-k", "2")
    assert result.returncode == 1, result.stderr  # the broken one
    rows = read_rows(out)
    assert rows[0] == HEADER
    cells = [cell for row in rows[1:] for cell in row]
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")], rows
    assert sorted(row[0] for row in rows[1:]) == sorted(
        ["'" + name for name in formulas] + ["'=HYPERLINK(1).png", "plain.png"]
    )
    lines = tmp_path / "preds.jsonl"  # not a spreadsheet's: names as they are
    again = run_main(capsys, "predict", trained_run, ".", "--out", lines)
    found = {json.loads(line)["file"] for line in lines.read_text().splitlines()}
    assert again.returncode == 1 and set(formulas) <= found


def test_every_row_has_every_column_and_reads_back_as_written(tmp_path, trained_run, capsys):
    """A CR in a name was written unquoted (it split the row in two), and rows that were read
    lacked the error column."""
    names = ["cr\rin name.png", "lf\nin name.png", 'comma, "quote".png', "plain.png"]
    paths = save_images(tmp_path / "scans", names)
    (tmp_path / "scans" / "zz broken.png").write_bytes(b"\x89PNG but cut short")
    out = tmp_path / "preds.csv"
    result = run_main(
        capsys, "predict", trained_run, tmp_path / "scans", "--out", out, "--top-k", "2"
    )
    assert result.returncode == 1, result.stderr
    rows = read_rows(out)
    assert rows[0] == HEADER and len(rows) == 1 + len(names) + 1
    assert {len(row) for row in rows} == {len(HEADER)}
    assert sorted(row[0] for row in rows[1:-1]) == sorted(map(str, paths))
    assert rows[-1][0].endswith("zz broken.png") and rows[-1][-1].startswith("not a readable")
    assert all(row[1] and row[-1] == "" for row in rows[1:-1])


def test_a_name_that_is_not_utf8_is_written_escaped_and_the_rest_go_on(
    tmp_path, trained_run, capsys
):
    """The files written and the refusal through the command line in this process; the text on
    stdout as a process writes it into a pipe."""
    folder = tmp_path / "scans"
    save_images(folder, [b"bad\xff\xfename.png", b"good.png"])
    escaped = f"{folder}/bad\\xff\\xfename.png"
    for out in (tmp_path / "preds.csv", tmp_path / "preds.jsonl"):
        result = run_main(capsys, "predict", trained_run, folder, "--out", out)
        assert result.returncode == 0, result.stderr
        out.read_text(encoding="utf-8")  # strict: every byte is UTF-8
    assert [row[0] for row in read_rows(tmp_path / "preds.csv")[1:]] == [
        escaped,
        f"{folder}/good.png",
    ]
    lines = (tmp_path / "preds.jsonl").read_text().splitlines()
    assert [json.loads(line)["file"] for line in lines] == [escaped, f"{folder}/good.png"]
    shown = run_cli("predict", trained_run, folder)  # as text, on stdout
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"{escaped}: bar")
    (folder / "good.png").unlink()
    os.truncate(os.fsencode(folder) + b"/bad\xff\xfename.png", 10)
    failed = run_main(capsys, "predict", trained_run, folder)
    assert failed.returncode == 2
    assert failed.stderr.startswith(f"convnet: error: {escaped}: not a readable image")


def test_a_fifo_among_the_scans_is_skipped_with_its_reason(tmp_path, trained_run, capsys):
    folder = tmp_path / "scans"
    save_images(folder, ["a.png"])
    os.mkfifo(folder / "x.png")  # no writer: reading it would wait for ever
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "preds.csv"
    result = run_cli("predict", trained_run, folder, "--out", out, "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows"] == 1 and summary["stream"] is False
    assert summary["skipped"] == [
        {"file": str(folder / "notes.txt"), "reason": "not an image"},
        {"file": str(folder / "x.png"), "reason": "a FIFO, not a regular file"},
    ]
    # In this process: the command above showed that the FIFO is not opened.
    shown = run_main(capsys, "predict", trained_run, folder)
    assert (
        f"convnet: skipped 1 file in the folders given (a FIFO, not a regular file), such as "
        f"{folder / 'x.png'}\n" in shown.stderr
    )
    named = run_cli("predict", trained_run, folder / "x.png", timeout=120)
    assert named.returncode == 2
    assert named.stderr == (
        f"convnet: error: {folder / 'x.png'}: a FIFO; expected a regular file or a folder.\n"
    )


def test_a_file_that_became_a_fifo_since_the_listing_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "late.png"
    os.mkfifo(fifo)
    found = []
    reader = threading.Thread(
        target=lambda: found.extend(iter_inputs([fifo], (28, 28, 1))), daemon=True
    )
    reader.start()
    reader.join(timeout=20)
    assert not reader.is_alive(), "reading a FIFO waits for a writer"
    assert found == [(str(fifo), None, "a FIFO; expected a regular file.")]


def test_out_is_streamed_to_a_fifo_a_device_or_stdout_and_never_replaced(
    tmp_path, trained_run, capsys
):
    images = save_images(tmp_path / "scans", ["a.png", "b.png"])
    fifo = tmp_path / "preds.csv"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    result = run_cli("predict", trained_run, *images, "--out", fifo, timeout=120)
    reader.join(timeout=30)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)  # still the FIFO, not a file in its place
    assert [row[0] for row in csv.reader(received[0].splitlines())] == [
        "file",
        *map(str, images),
    ]
    assert result.stdout == "" and f"predictions: {fifo} (2 rows)" in result.stderr

    # `-` is sys.stdout, in this process too; /dev/stdout is the process's file descriptor 1.
    # A stream with no extension to name a format is written as CSV.
    for run, out in ((partial(run_main, capsys), "-"), (run_cli, "/dev/stdout")):
        streamed = run("predict", trained_run, *images, "--out", out)
        assert streamed.returncode == 0, streamed.stderr
        rows = list(csv.reader(streamed.stdout.splitlines()))
        assert [row[0] for row in rows] == ["file", *map(str, images)]  # the rows alone

    null = tmp_path / "null.csv"  # a device as root could replace it: /dev/null's own numbers
    if subprocess.run(["mknod", null, "c", "1", "3"], capture_output=True).returncode:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("mknod needs root")
    written = run_main(capsys, "predict", trained_run, *images, "--out", null)
    assert written.returncode == 0, written.stderr
    assert stat.S_ISCHR(null.lstat().st_mode) and null.stat().st_rdev == os.makedev(1, 3)


def test_a_reader_that_stops_reading_stdout_ends_the_command_quietly(tmp_path, trained_run):
    """`convnet predict ... --out - | head -1`: the rows no one reads are not an error."""
    images = save_images(tmp_path / "scans", [f"{i}.png" for i in range(200)])
    predicting = subprocess.Popen(
        [CONVNET, "predict", trained_run, tmp_path / "scans", "--out", "-", "--batch-size", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert predicting.stdout.readline().startswith(b"file,class,probability,")  # CSV: a stream
    predicting.stdout.close()  # as `head` exits
    _, err = predicting.communicate(timeout=120)
    assert predicting.returncode == 128 + signal.SIGPIPE, err.decode()  # as `yes | head` ends
    assert b"Traceback" not in err and b"error" not in err, err.decode()
    assert len(images) == 200


def test_out_refuses_to_replace_a_link_or_a_socket(tmp_path, trained_run):
    (image,) = save_images(tmp_path / "scans", ["a.png"])
    target = tmp_path / "kept.csv"
    target.write_text("mine\n")
    link = tmp_path / "preds.csv"
    link.symlink_to(target)
    result = run_cli("predict", trained_run, image, "--out", link)
    assert result.returncode == 2
    assert result.stderr == (
        f"convnet: error: {link}: a symbolic link; refusing to replace the link with the "
        f"predictions: name the file it points to, {target}, or remove the link.\n"
    )
    assert link.is_symlink() and target.read_text() == "mine\n"

    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock.csv"))
    try:
        refused = run_cli("predict", trained_run, image, "--out", tmp_path / "sock.csv")
    finally:
        server.close()
    assert refused.returncode == 2
    assert refused.stderr == (
        f"convnet: error: {tmp_path / 'sock.csv'}: a socket; expected a file name for the "
        "predictions, a FIFO, a character device or -.\n"
    )
    assert stat.S_ISSOCK((tmp_path / "sock.csv").lstat().st_mode)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name != "user-cache")
    assert left == ["kept.csv", "preds.csv", "scans", "sock.csv"]


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    out = tmp_path / "preds.csv"
    stale = tmp_path / ".preds.csv.0123abcd.tmp"  # its writer was killed: nobody holds it
    stale.write_text("file,class\n")
    others = [tmp_path / ".preds.csv.notes.tmp", tmp_path / ".other.csv.0123abcd.tmp"]
    for path in others:
        path.write_text("not ours")
    with atomic_file(out, "w") as live:
        live.write("file,class\n")
        (writing,) = set(tmp_path.glob(".preds.csv.*.tmp")) - {stale, others[0]}
        assert remove_stale_temporaries(out) == [stale]
        assert writing.exists() and all(path.exists() for path in others)
    assert out.read_text() == "file,class\n" and not writing.exists()


def folder_of_many(folder: Path, count: int) -> None:
    folder.mkdir()
    for i, pixels in enumerate(make_images(count, seed=4).x[..., 0]):
        Image.fromarray(pixels).save(folder / f"{i:05d}.png", compress_level=0)


def temporaries(folder: Path) -> list[Path]:
    return sorted(folder.glob(".preds.csv.*.tmp"))


def rows_written(folder: Path) -> bool:
    try:
        return any(path.stat().st_size for path in temporaries(folder))
    except FileNotFoundError:  # renamed into place meanwhile
        return False


def wait_for_rows(process: subprocess.Popen, folder: Path, timeout: float = 120) -> None:
    """Until the temporary file holds rows: past the model's loading, in the middle."""
    wait_until(lambda: rows_written(folder), process, "rows written", timeout, poll=0.02)


def test_sigterm_mid_folder_leaves_nothing_and_a_killed_run_is_cleaned_next(
    tmp_path, trained_run, capsys
):
    scans = tmp_path / "scans"
    folder_of_many(scans, 3000)
    out = tmp_path / "out" / "preds.csv"
    command = [CONVNET, "predict", str(trained_run), str(scans), "--out", str(out)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        process = subprocess.Popen(
            [*command, "--batch-size", "8"], stderr=subprocess.PIPE, stdout=subprocess.PIPE
        )
        wait_for_rows(process, out.parent)
        process.send_signal(sig)
        _, err = process.communicate(timeout=60)
        if sig == signal.SIGTERM:
            assert process.returncode == 143, err
            assert err.decode().splitlines()[-1] == "convnet: terminated"
            assert "Traceback" not in err.decode()
            assert list(out.parent.iterdir()) == []
        else:  # nothing runs in the killed process: its temporary stays, unlocked
            assert process.returncode == -signal.SIGKILL
            assert len(temporaries(out.parent)) == 1
    done = run_main(capsys, "predict", trained_run, scans / "00000.png", "--out", out)
    assert done.returncode == 0, done.stderr
    assert [path.name for path in out.parent.iterdir()] == ["preds.csv"]


@pytest.mark.trains
def test_a_training_sent_sigterm_ends_interrupted_and_resumes(tmp_path, tiny_npz):
    run = tmp_path / "run"
    process = start("train", "--train", tiny_npz, *TRAIN_FLAGS, "--out", run)
    wait_for_epochs(process, run, 1)
    code, err = kill(process, signal.SIGTERM)
    assert code == 143, err
    assert err.strip().splitlines()[-1] == (
        f"convnet: interrupted; resume with: convnet train --resume {run}"
    )
    assert "Traceback" not in err
    assert json.loads((run / "manifest.json").read_text())["status"] == "interrupted"
    resumed = run_cli("train", "--resume", run, "--json", env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "manifest.json").read_text())["status"] == "complete"
    assert epochs_logged(run) == list(range(EPOCHS))


def test_main_puts_back_the_sigterm_handler_it_found():
    """A program that calls `main` keeps its own SIGTERM handler afterwards."""
    code = (
        "import signal, sys\n"
        "from convnet.cli import main\n"
        "mine = lambda *a: None\n"
        "signal.signal(signal.SIGTERM, mine)\n"
        "main(['presets'])\n"
        "sys.exit(0 if signal.getsignal(signal.SIGTERM) is mine else 1)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
