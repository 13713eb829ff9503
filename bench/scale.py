"""One epoch of `fast` on synthetic doodle folders of growing size, streamed from disk against held
in memory: peak resident memory and images/s, side by side.

    .venv/bin/python -m bench.scale --sizes 0.5,2,8 [--rounds 3]

Each size is a folder of ten `<class>.npy` files of 28x28 doodles (`bench.doodles`, kept in
`--dir` for the next run). Each run is the real `convnet train --train FOLDER --preset fast
--epochs 1 --stream|--no-stream` in a process of its own, under a wrapper that reports the child's
peak resident memory (ru_maxrss: its VmHWM); images/s is the training images over the epoch's
seconds (history.csv; the first epoch, so the step's compilation and the validation pass are in
it, alike for both). Each run starts with the folder's files in the page cache (`warm`). A run
in memory is skipped where it would not fit: a source held in memory takes about `MEMORY_FACTOR`
times its size at the peak (measured here), and more than the memory available is not tried.
Results go to bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.doodles import write_doodles
from convnet.data.arrays import available_memory
from convnet.machine import machine

CONVNET = str(Path(sys.executable).with_name("convnet"))
ROOT = Path(__file__).resolve().parent.parent
# Runs a command and prints its peak resident memory in KiB (Linux's ru_maxrss unit) and the CPU
# seconds it used, which other work on the machine changes less than its wall time.
PEAK = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
    "used = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(used.ru_maxrss, used.ru_utime + used.ru_stime); sys.exit(done.returncode)"
)
# Peak RSS of `fast` trained in memory, less the process's own ~1.4 GB, over the data's size: the
# source's array, the split's copies and TensorFlow's copy of the training set at once (3.3 for
# 2 GB in bench/results/scale.json).
MEMORY_FACTOR = 3.3
BASE_BYTES = 1.5e9
NUMBERS = ("peak_rss_mb", "epoch_seconds", "images_per_second", "wall_seconds", "cpu_seconds")


def train(folder: Path, out: Path, stream: bool, preset: str) -> dict:
    """One `convnet train` run's figures."""
    flag = "--stream" if stream else "--no-stream"
    command = [sys.executable, "-c", PEAK, CONVNET, "train", "--train", str(folder), flag]
    command += ["--preset", preset, "--epochs", "1", "--out", str(out), "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)}: exit {done.returncode}\n{done.stderr[-3000:]}")
    *_, printed, last = done.stdout.strip().splitlines()
    peak, cpu = last.split()
    manifest = json.loads((out / "manifest.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    with (out / "history.csv").open() as file:
        epoch = next(csv.DictReader(file))
    examples = manifest["data"]["train"]["examples"]
    held = math.ceil(examples * yaml.safe_load((out / "config.yaml").read_text())["val_split"])
    trained = examples - held  # as scikit-learn's split rounds the validation share
    return {
        "feed": manifest["data"]["feed"],
        "peak_rss_mb": int(peak) / 1024,
        "epoch_seconds": float(epoch["epoch_seconds"]),
        "images_per_second": trained / float(epoch["epoch_seconds"]),
        "startup_seconds": metrics.get("startup_seconds"),
        "wall_seconds": wall,
        "cpu_seconds": float(cpu),
        "test_accuracy": json.loads(printed)["test_accuracy"],
        "train_sha256": manifest["data"]["train"]["sha256"],
    }


def warm(folder: Path) -> None:
    """Reads the folder's files once, so that every run starts with them in the page cache, as
    data that fits in memory is after its first use."""
    for path in sorted(folder.glob("*.npy")):
        with path.open("rb", buffering=0) as file:
            while file.read(16 * 2**20):
                pass


def fits_in_memory(nbytes: float) -> tuple[bool, str]:
    """Whether a run holding `nbytes` of images in memory would fit, and why not."""
    need, available = BASE_BYTES + MEMORY_FACTOR * nbytes, available_memory() or 0
    if need <= available:
        return True, ""
    return False, f"needs ~{need / 1e9:.1f} GB, {available / 1e9:.1f} GB available"


def measure(size: float, folder: Path, args) -> dict:
    """A size's runs, `args.rounds` of each feed, their order alternating round by round (the
    rounds compare the feeds: a size memory cannot hold is streamed once); each feed's figures
    are the medians of its runs."""
    row = {"gigabytes": size, "folder": str(folder)}
    fits, why = fits_in_memory(size * 1e9)
    runs = {"streamed": [], "memory": []}
    for round_ in range(args.rounds if fits else 1):
        for stream in (True, False) if round_ % 2 == 0 else (False, True):
            if not stream and not fits:
                continue
            warm(folder)
            with tempfile.TemporaryDirectory(prefix="scale-", dir=args.dir) as scratch:
                found = train(folder, Path(scratch) / "run", stream, args.preset)
            runs[found["feed"]].append(found)
            print(size, found, flush=True)
    return row | {feed: summary(done, why) for feed, done in runs.items()}


def summary(runs: list[dict], skipped: str) -> dict:
    """A feed's figures: the medians of its runs, and the runs; why it was skipped if none ran."""
    if not runs:
        return {"skipped": skipped}
    return {key: statistics.median(run[key] for run in runs) for key in NUMBERS} | {"runs": runs}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--sizes", default="0.5,2,8", help="GB of images (default: 0.5,2,8)")
    parser.add_argument(
        "--dir",
        default=str(Path(tempfile.gettempdir()) / "convnet-scale"),
        help="where the doodle folders are written and kept (default: /tmp/convnet-scale)",
    )
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each feed (default: 1)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    args = parser.parse_args(argv)
    results = []
    for size in (float(s) for s in args.sizes.split(",")):
        folder = write_doodles(Path(args.dir) / f"doodles-{size:g}GB", int(size * 1e9))
        results.append(measure(size, folder, args))
    info = machine()
    payload = {"machine": info, "settings": vars(args), "results": results}
    payload["date"] = time.strftime("%Y-%m-%d %H:%M")
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    print(table(results, info))
    return payload


def table(results: list[dict], info: dict) -> str:
    """The results as a Markdown table, for docs/benchmarks.md."""
    lines = [
        f"{info['cpu']}, {info['cpus']} cores",
        "",
        "| GB | images | streamed peak RSS MB | memory peak RSS MB | streamed images/s "
        "| memory images/s | streamed / memory | streamed CPU s | memory CPU s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results:
        streamed, memory = row["streamed"], row["memory"]
        images = int(row["gigabytes"] * 1e9 / 784)
        memory_rss = memory.get("skipped") or f"{memory['peak_rss_mb']:,.0f}"
        memory_speed = "-" if "skipped" in memory else f"{memory['images_per_second']:,.0f}"
        ratio = (
            "-"
            if "skipped" in memory
            else f"{streamed['images_per_second'] / memory['images_per_second']:.2f}"
        )
        cpu = [
            f"{run['cpu_seconds']:,.0f}" if "cpu_seconds" in run else "-"
            for run in (streamed, memory)
        ]
        lines.append(
            f"| {row['gigabytes']:g} | {images:,} | {streamed['peak_rss_mb']:,.0f} | {memory_rss} "
            f"| {streamed['images_per_second']:,.0f} | {memory_speed} | {ratio} "
            f"| {' | '.join(cpu)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
