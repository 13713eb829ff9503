"""The downloader against a local HTTP server that misbehaves on purpose."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections import Counter

import pytest

from convnet.data import sources
from convnet.errors import DataError

NAME = "train-labels-idx1-ubyte.gz"
CONTENT = bytes(range(256)) * 64  # 16 KiB
MD5 = hashlib.md5(CONTENT).hexdigest()
SLOW_SECONDS = 1.0
TIMEOUT = 0.3


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves CONTENT under /KIND/NAME, misbehaving as KIND says."""

    hits: Counter = Counter()

    def do_GET(self):  # noqa: N802 (the name http.server calls)
        kind = self.path.split("/")[1]
        Handler.hits[kind] += 1
        if kind == "error" or (kind == "flaky" and Handler.hits[kind] <= 2):
            self.send_error(500, "Internal Server Error")
            return
        if kind == "missing":
            self.send_error(404, "Not Found")
            return
        if kind == "slow":
            threading.Event().wait(SLOW_SECONDS)  # not time.sleep, which the tests record
        body = CONTENT
        if kind == "corrupt":
            body = CONTENT[:100] + b"\xff" * 10 + CONTENT[110:]
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(CONTENT)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if kind == "truncated" else body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up on a slow answer, as it should: said quietly, since the
            # server's traceback would reach the stderr of a later test of this process.
            self.close_connection = True
        if kind == "truncated":
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Records the back-off waits instead of sleeping them."""
    waited = []
    monkeypatch.setattr(sources.time, "sleep", waited.append)
    Handler.hits.clear()
    return waited


def fetch(server, tmp_path, *kinds, retries=3):
    mirrors = tuple(f"{server}/{kind}/" for kind in kinds)
    return sources.download(
        NAME, tmp_path, MD5, retries=retries, timeout=TIMEOUT, progress=False, mirrors=mirrors
    )


def test_good_file_is_kept_and_verified(server, tmp_path, sleeps):
    path = fetch(server, tmp_path, "good")
    assert path == tmp_path / NAME and path.read_bytes() == CONTENT
    assert [p.name for p in tmp_path.iterdir()] == [NAME]
    assert sleeps == []


def test_server_errors_are_retried_with_backoff(server, tmp_path, sleeps):
    path = fetch(server, tmp_path, "flaky")
    assert path.read_bytes() == CONTENT
    assert Handler.hits["flaky"] == 3
    assert sleeps == [1.0, 2.0]


@pytest.mark.parametrize(
    "kind, message",
    [
        ("corrupt", r"corrupt download: checksum mismatch"),
        ("truncated", r"truncated download"),
        ("error", r"server error HTTP 500"),
        ("slow", r"timed out"),
    ],
)
def test_bad_downloads_never_reach_the_cache(server, tmp_path, sleeps, kind, message):
    with pytest.raises(DataError, match=rf"could not download {NAME} .*/{kind}/{NAME}: {message}"):
        fetch(server, tmp_path, kind, retries=2 if kind == "slow" else 3)
    # Never the file; what arrived of a truncated one stays hidden, for the next try to go on from.
    kept = [f".{NAME}.part"] if kind == "truncated" else []
    assert [p.name for p in tmp_path.iterdir()] == kept
    assert Handler.hits[kind] == (2 if kind == "slow" else 3)


def test_next_mirror_is_tried_and_error_names_each(server, tmp_path, sleeps):
    assert fetch(server, tmp_path, "corrupt", "good").read_bytes() == CONTENT
    with pytest.raises(DataError, match=r"/error/.*HTTP 500.*/truncated/.*truncated download"):
        fetch(server, tmp_path / "other", "error", "truncated", retries=1)


def test_a_file_no_mirror_has_is_not_asked_for_again(server, tmp_path, sleeps):
    with pytest.raises(sources.NotPublished, match=rf"{NAME} is not there to download: .*HTTP 404"):
        fetch(server, tmp_path, "missing")
    assert Handler.hits["missing"] == 1 and sleeps == []


def test_a_partial_file_that_is_no_prefix_is_downloaded_again(server, tmp_path, sleeps):
    (tmp_path / f".{NAME}.part").write_bytes(b"another file")  # the server sends it all again
    assert fetch(server, tmp_path, "good").read_bytes() == CONTENT
    assert [p.name for p in tmp_path.iterdir()] == [NAME]
    assert Handler.hits["good"] == 1 and sleeps == []  # right the first time, not on a retry


def test_fetch_downloads_into_the_data_dir_it_is_given(tmp_path, monkeypatch):
    targets = []
    monkeypatch.setattr(sources, "find_fashion_mnist", lambda data_dir=None: None)
    monkeypatch.delenv(sources.MIRROR_ENV, raising=False)
    monkeypatch.setattr(sources, "download", lambda name, target, md5, **kw: targets.append(target))
    assert sources.ensure_fashion_mnist(tmp_path / "mine", progress=False) == tmp_path / "mine"
    assert set(targets) == {tmp_path / "mine"} and len(targets) == len(sources.PUBLISHED_MD5)
