"""`convnet.train` on data in hand (a pandas DataFrame, NumPy arrays) against the same data as the
Kaggle CSV files, side by side in one run: each pipeline a process of its own, alternating round
after round.

    .venv/bin/python -m bench.in_memory --preset seed --epochs 1 --rounds 2

Each process first makes its data ready as a user would hold it (nothing for the files; the
CSVs read by pandas; the arrays loaded from an .npy file), then times `convnet.train`: wall is
that call, and memory is the process's peak RSS less its RSS before the call (what training the
data adds to what the user holds already). The data is Fashion-MNIST's, written as the Kaggle
CSVs by `convnet export-csv` into a scratch folder.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from convnet.machine import machine

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ("csv files", "pandas DataFrame", "NumPy arrays")
NUMBERS = ("wall_seconds", "fit_seconds", "rss_before_mb", "added_peak_mb", "test_accuracy")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def worker(kind: str, data: Path, out: Path, preset: str, epochs: int) -> dict:
    """Trains once on `data` held as `kind`; returns the figures."""
    import pandas as pd

    import convnet

    if kind == "csv files":
        train, test = str(data / "fashion-mnist_train.csv"), str(data / "fashion-mnist_test.csv")
    elif kind == "pandas DataFrame":
        train = pd.read_csv(data / "fashion-mnist_train.csv")
        test = pd.read_csv(data / "fashion-mnist_test.csv")
    else:
        arrays = np.load(data / "arrays.npz")
        train = (arrays["x_train"], arrays["y_train"])
        test = (arrays["x_test"], arrays["y_test"])
    before = _rss_mb()
    started = time.perf_counter()
    run = convnet.train(
        preset=preset,
        train=train,
        test=test,
        epochs=epochs,
        out=str(out),
        verbose=0,
        class_names="fashion-mnist",
    )
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "wall_seconds": wall,
        "fit_seconds": run.metrics["fit_seconds"],
        "rss_before_mb": before,
        "added_peak_mb": peak - before,
        "test_accuracy": run.test_accuracy,
        "train_sha256": run.manifest["data"]["train"]["sha256"],
    }


def prepare(folder: Path) -> None:
    """The Kaggle CSVs, and the same pixels as uint8 arrays in an .npz (28x28 images)."""
    import convnet

    convnet.export_csv(folder)
    import pandas as pd

    arrays = {}
    for part in ("train", "test"):
        frame = pd.read_csv(folder / f"fashion-mnist_{part}.csv")
        arrays[f"x_{part}"] = frame.drop(columns="label").to_numpy(np.uint8).reshape(-1, 28, 28)
        arrays[f"y_{part}"] = frame["label"].to_numpy()
    np.savez(folder / "arrays.npz", **arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="seed")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/in_memory.json")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.out, args.preset, args.epochs)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        prepare(scratch / "data")
        rows: dict[str, list[dict]] = {kind: [] for kind in PIPELINES}
        for round_ in range(args.rounds):
            for kind in PIPELINES:
                out = scratch / f"run-{round_}-{PIPELINES.index(kind)}"
                command = [sys.executable, "-m", "bench.in_memory", "--worker", kind]
                command += ["--data", str(scratch / "data"), "--out", str(out)]
                command += ["--preset", args.preset, "--epochs", str(args.epochs)]
                done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
                if done.returncode:
                    raise SystemExit(f"{kind}: exit {done.returncode}\n{done.stderr[-3000:]}")
                rows[kind].append(json.loads(done.stdout.splitlines()[-1]))
                print(kind, rows[kind][-1], file=sys.stderr)
    summary = _summary(rows)
    found = {"machine": machine(), "preset": args.preset, "epochs": args.epochs} | summary
    args.results.write_text(json.dumps(found, indent=2) + "\n")
    _print(found)


def _summary(rows: dict[str, list[dict]]) -> dict:
    medians = {
        kind: {key: statistics.median(run[key] for run in runs) for key in NUMBERS}
        for kind, runs in rows.items()
    }
    reference = medians["csv files"]
    for found in medians.values():
        found["wall_ratio"] = found["wall_seconds"] / reference["wall_seconds"]
    same = len({run["train_sha256"] for runs in rows.values() for run in runs}) == 1
    return {"pipelines": medians, "same_data": same}


def _print(found: dict) -> None:
    print(f"CPU: {found['machine'].get('cpu')}; {found['preset']}, {found['epochs']} epoch(s)")
    print("| pipeline | wall s | fit s | RSS before MB | peak added MB | test acc | wall ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for kind, f in found["pipelines"].items():
        print(
            f"| {kind} | {f['wall_seconds']:.1f} | {f['fit_seconds']:.1f} | "
            f"{f['rss_before_mb']:.0f} | {f['added_peak_mb']:.0f} | {f['test_accuracy']:.4f} | "
            f"{f['wall_ratio']:.2f} |"
        )
    print(f"same data (SHA-256 of the training set) in every pipeline: {found['same_data']}")


if __name__ == "__main__":
    main()
