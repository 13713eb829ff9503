"""A synthetic Quick, Draw!-style folder: one `<class>.npy` of N x 784 uint8 doodles per class.

    .venv/bin/python -m bench.doodles /tmp/doodles --gigabytes 0.5

Each class is a kind of stroke drawing (a circle, a zigzag, a star, ...) drawn with a jittered
pen, 2 pixels wide, white on black as Quick, Draw!'s bitmaps are: strokes, not noise, so a model
learns them and the files compress as doodles do. A bank of drawings per class is made first,
then rows are drawn from it, each shifted by up to 2 pixels, so gigabytes are written in seconds.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

SIDE = 28
CLASSES = (
    "arc",
    "circle",
    "cross",
    "line",
    "spiral",
    "square",
    "star",
    "triangle",
    "wave",
    "zigzag",
)
BANK = 1024  # drawings per class that rows are taken from
CHUNK_ROWS = 65_536  # rows written at a time: 51 MB
DONE = "doodles.json"  # written last: a folder without it is written again


def _strokes(name: str, rng: np.random.Generator) -> list[np.ndarray]:
    """The pen's polylines of one drawing of class `name`, in [0, 1] x [0, 1]."""
    t = np.linspace(0, 1, 24)
    centre, radius = rng.uniform(0.4, 0.6, 2), rng.uniform(0.25, 0.38)
    turn = rng.uniform(0, 2 * np.pi)

    def ring(angles: np.ndarray, radii=None) -> np.ndarray:
        radii = np.asarray(radius if radii is None else radii)[..., None]
        return centre + radii * np.stack([np.cos(angles + turn), np.sin(angles + turn)], 1)

    corners = {"triangle": 3, "square": 4}
    if name == "circle":
        return [ring(2 * np.pi * t)]
    if name == "arc":
        return [ring(np.pi * t)]
    if name in corners:
        k = corners[name]
        return [ring(2 * np.pi * np.arange(k + 1) / k)]
    if name == "star":
        return [ring(4 * np.pi * np.arange(6) / 5)]
    if name == "spiral":
        return [ring(5 * np.pi * t, radius * (0.15 + 0.85 * t))]
    if name == "line":
        return [ring(np.array([0.0, np.pi]))]
    if name == "cross":
        return [ring(np.array([0.0, np.pi])), ring(np.array([np.pi / 2, 3 * np.pi / 2]))]
    x = np.linspace(0.15, 0.85, 7 if name == "zigzag" else 24)
    if name == "zigzag":
        y = 0.5 + rng.uniform(0.15, 0.3) * np.where(np.arange(7) % 2, 1, -1)
    else:  # wave
        y = 0.5 + rng.uniform(0.12, 0.25) * np.sin(2 * np.pi * rng.uniform(1, 2) * x)
    return [np.stack([x, y], 1)]


def draw(name: str, rng: np.random.Generator) -> np.ndarray:
    """One SIDE x SIDE uint8 drawing of class `name`: its strokes, jittered, 2 pixels wide."""
    canvas = np.zeros((SIDE, SIDE), np.uint8)
    for line in _strokes(name, rng):
        line = line + rng.normal(0, 0.015, line.shape)
        steps = [np.linspace(a, b, 3 * SIDE)[:-1] for a, b in zip(line[:-1], line[1:], strict=True)]
        points = np.clip(np.concatenate(steps + [line[-1:]]) * (SIDE - 2), 0, SIDE - 2)
        rows, columns = points[:, 1].astype(int), points[:, 0].astype(int)
        for dy in (0, 1):
            for dx in (0, 1):
                canvas[rows + dy, columns + dx] = 255
    return canvas


def write_class(path: Path, name: str, count: int, seed: int) -> None:
    """Writes `count` drawings of class `name` to `path` as an N x 784 uint8 .npy file."""
    rng = np.random.default_rng(seed)
    bank = np.stack([draw(name, rng) for _ in range(BANK)])
    header = {"descr": "|u1", "fortran_order": False, "shape": (count, SIDE * SIDE)}
    with path.open("wb") as file:
        np.lib.format.write_array_header_1_0(file, header)
        for start in range(0, count, CHUNK_ROWS):
            rows = min(CHUNK_ROWS, count - start)
            chunk = bank[rng.integers(0, BANK, rows)]
            shifts = rng.integers(-2, 3, (rows, 2))
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    picked = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
                    chunk[picked] = np.roll(chunk[picked], (dy, dx), axis=(1, 2))
            chunk.reshape(rows, -1).tofile(file)


def write_doodles(folder: str | Path, nbytes: int, seed: int = 0) -> Path:
    """A folder of `CLASSES` .npy files holding `nbytes` of images in all (equal classes), or
    the one written before with the same settings."""
    folder = Path(folder)
    per_class = math.ceil(nbytes / (SIDE * SIDE * len(CLASSES)))
    settings = {"classes": list(CLASSES), "per_class": per_class, "seed": seed}
    done = folder / DONE
    if done.is_file() and json.loads(done.read_text()) == settings:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    done.unlink(missing_ok=True)
    for index, name in enumerate(CLASSES):
        write_class(folder / f"{name}.npy", name, per_class, seed * 1000 + index)
    done.write_text(json.dumps(settings))
    return folder


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--gigabytes", type=float, default=0.5, help="of images (default: 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return write_doodles(args.folder, int(args.gigabytes * 1e9), args.seed)


if __name__ == "__main__":
    print(main())
