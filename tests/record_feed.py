"""Runs the `convnet` command with every streamed batch it feeds logged, for tests to compare.

    python tests/record_feed.py LOG train ...   # LOG: a JSON line per batch

Each line is [examples in the set fed, [the rows of the files the batch read, in its order]]
(`StreamedImages.rows`): the training and validation sets differ in size, so a test tells their
batches apart. A line is written as its batch is made, so a process killed mid-epoch leaves the
batches it made. Test code, kept out of convnet itself.
"""

import json
import sys
from pathlib import Path

from convnet.cli import main


def _record(log: Path) -> None:
    from convnet import framework

    framework.load()  # the backend of $KERAS_BACKEND, before the feed imports Keras
    from convnet.training import feed

    read_batch = feed.read_batch

    def read_and_log(data, positions, targets=None):
        if data.feed == "streamed":
            line = json.dumps([len(data), data.x.rows(positions).tolist()])
            with log.open("a") as file:
                file.write(line + "\n")
        return read_batch(data, positions, targets)

    feed.read_batch = read_and_log


def read_log(log: Path, examples: int) -> list[tuple[int, ...]]:
    """The batches of a set of `examples` in `log`, in the order they were made; a line cut
    short by a kill is left out."""
    batches = []
    for line in log.read_text().splitlines() if log.is_file() else []:
        try:
            size, rows = json.loads(line)
        except json.JSONDecodeError:
            continue
        if size == examples:
            batches.append(tuple(rows))
    return batches


if __name__ == "__main__":
    _record(Path(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
