"""Training throughput of each Keras backend on the `seed` net, side by side in one run.

Runs the real `convnet train --backend B` on a Fashion-MNIST subset for each backend in turn,
round after round (so a machine that slows down for a while slows all of them alike), and reads
the epoch times from each run's history.csv. The first epoch (tracing, XLA or graph compilation)
is left out. images/s = training images / epoch seconds (the validation pass is inside the
epoch). Also the whole command's wall time, start-up and the tail after training included.

    .venv/bin/python -m bench.backends --limit 20000 --epochs 3 --rounds 2
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from convnet.machine import machine

CONVNET = str(Path(sys.executable).with_name("convnet"))
ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("tensorflow", "jax", "torch")


def train_once(backend: str, out: Path, limit: int, epochs: int) -> dict:
    args = ["train", "--backend", backend, "--preset", "seed", "--limit", str(limit)]
    args += ["--epochs", str(epochs), "--out", str(out), "--json"]
    started = time.perf_counter()
    done = subprocess.run([CONVNET, *args], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{backend}: exit {done.returncode}\n{done.stderr[-2000:]}")
    with (out / "history.csv").open() as f:
        seconds = [float(row["epoch_seconds"]) for row in csv.DictReader(f)]
    trained = json.loads((out / "manifest.json").read_text())["data"]["train"]["examples"]
    images = trained * (1 - 0.3)  # seed holds out 30% for validation
    later = statistics.mean(seconds[1:])
    accuracy = json.loads(done.stdout.strip().splitlines()[-1])["test_accuracy"]
    return {"epoch_seconds": later, "images_per_second": images / later, "wall": wall,
            "test_accuracy": accuracy}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args()
    backends = args.backends.split(",")
    results: dict[str, list[dict]] = {b: [] for b in backends}
    with tempfile.TemporaryDirectory(prefix="convnet-backends-") as scratch:
        for round_ in range(args.rounds):
            for backend in backends:
                out = Path(scratch) / f"{backend}-{round_}"
                results[backend].append(train_once(backend, out, args.limit, args.epochs))
    info = machine()
    print(f"{info['cpu']}, {info['cpus']} cores; seed preset, {args.limit} examples, "
          f"{args.epochs} epochs, median of {args.rounds} rounds")  # fmt: skip
    print("| backend | s/epoch | images/s | wall s | test accuracy |")
    print("| --- | --- | --- | --- | --- |")
    rows = {}
    for backend, runs in results.items():
        row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows[backend] = row
        print(f"| {backend} | {row['epoch_seconds']:.2f} | {row['images_per_second']:,.0f} | "
              f"{row['wall']:.1f} | {row['test_accuracy']:.4f} |")  # fmt: skip
    results_file = ROOT / "bench" / "results" / "backends.json"
    payload = {"machine": info, "settings": vars(args), "median": rows, "runs": results}
    results_file.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
