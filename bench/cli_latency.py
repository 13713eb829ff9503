"""How long each command takes to answer, side by side with a bare Python start and `import keras`.

The commands that refuse bad input or need no model (`compare` reads the runs' files) answer
without a framework; `evaluate` and `predict` load one, on a run this bench trains first (1 epoch
on 500 synthetic images); `export-csv` writes Fashion-MNIST's Kaggle CSVs.

    python -m bench.cli_latency              # 7 rounds, commands alternating within each round
    python -m bench.cli_latency --rounds 3
    python -m bench.cli_latency --source /tmp/old-checkout   # another checkout's code, same venv

Each command runs in a fresh process; the rounds alternate the commands, so a machine that slows
down for a while slows all of them alike. The median of the rounds is reported, with its
difference from `python -c pass`. Results go to bench/results/cli_latency.json; the table to
docs/benchmarks.md by hand, with the CPU it names.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from convnet.machine import machine

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CONVNET = str(Path(sys.executable).with_name("convnet"))
RETRAINED = "retrained-run"  # the folder of the timed training


def tiny_run(scratch: Path, convnet: list[str], env: dict, cwd: str | None) -> Path:
    """A run trained for 1 epoch on 500 synthetic 28x28 images (tested on 100), and one image."""
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (600, 28, 28), dtype=np.uint8), rng.integers(0, 10, 600)
    np.savez(scratch / "tiny.npz", x_train=x[:500], y_train=y[:500], x_test=x[500:], y_test=y[500:])
    np.save(scratch / "one.npy", x[0])
    run = scratch / "run"
    train = [*convnet, "train", "--train", str(scratch / "tiny.npz"), "--epochs", "1"]
    subprocess.run([*train, "--out", str(run)], check=True, capture_output=True, env=env, cwd=cwd)
    return run


def commands(scratch: Path, convnet: list[str], run: Path) -> dict[str, tuple[list[str], int]]:
    """Name -> (argv, expected exit code), in the order they are reported; `convnet` is how the
    command is started, `run` a trained run."""
    bad_csv = scratch / "bad.csv"
    bad_csv.write_text("label,pixel1,pixel2,pixel3,pixel4\n0,1,2,3\n")
    bad_yaml = scratch / "bad.yaml"
    bad_yaml.write_text("preset: seed\nepochs: many\n")
    (scratch / "runs").mkdir(exist_ok=True)
    out = str(scratch / "never")
    return {
        "python -c pass": ([PYTHON, "-c", "pass"], 0),
        'python -c "import keras"': ([PYTHON, "-c", "import keras"], 0),
        "convnet --help": ([*convnet, "--help"], 0),
        "convnet --version": ([*convnet, "--version"], 0),
        "convnet presets": ([*convnet, "presets"], 0),
        "convnet runs (empty folder)": ([*convnet, "runs", str(scratch / "runs")], 0),
        "convnet train --help": ([*convnet, "train", "--help"], 0),
        "train: bad CSV": ([*convnet, "train", "--train", str(bad_csv), "--out", out], 2),
        "train: unknown preset": ([*convnet, "train", "--preset", "nope", "--out", out], 2),
        "train: bad YAML value": ([*convnet, "train", "--config", str(bad_yaml), "--out", out], 2),
        "train: 2 processes on tensorflow": (
            [*convnet, "train", "--num-processes", "2", "--process-id", "0"]
            + ["--coordinator", "127.0.0.1:1", "--out", out],
            2,
        ),
        "train 1 epoch of 500 images": (
            [*convnet, "train", "--train", str(scratch / "tiny.npz"), "--epochs", "1", "--out"]
            + [str(scratch / RETRAINED), "--json"],
            0,
        ),
        "evaluate a run": ([*convnet, "evaluate", str(run), "--json"], 0),
        "predict one image": ([*convnet, "predict", str(run), str(scratch / "one.npy")], 0),
        "compare two runs": (
            [*convnet, "compare", str(run), str(run), "--out", str(scratch / "compare.html")],
            0,
        ),
        # Fashion-MNIST as found on this machine (`make data`), 155 MB of CSV.
        "export-csv Fashion-MNIST": ([*convnet, "export-csv", str(scratch / "kaggle")], 0),
    }


def time_once(argv: list[str], expected: int, env: dict, cwd: str | None) -> float | None:
    """Seconds to run `argv`; None when it exits otherwise than `expected` (not supported)."""
    for arg in argv:  # the timed training's folder, emptied: `train` refuses one in use
        if arg.endswith(RETRAINED):
            shutil.rmtree(arg, ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd)
    seconds = time.perf_counter() - start
    return seconds if done.returncode == expected else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--source",
        help="run `python -m convnet.cli` in this checkout instead of the installed command",
    )
    parser.add_argument("--out", default="cli_latency", help="results file stem in bench/results")
    args = parser.parse_args()
    convnet = [PYTHON, "-m", "convnet.cli"] if args.source else [CONVNET]
    env = {**os.environ}
    env.pop("KERAS_BACKEND", None)
    with tempfile.TemporaryDirectory(prefix="convnet-latency-") as scratch:
        env["XDG_CACHE_HOME"] = str(Path(scratch) / "cache")
        run = tiny_run(Path(scratch), convnet, env, args.source)
        todo = commands(Path(scratch), convnet, run)
        for name, (argv, expected) in list(todo.items()):  # warms the file cache; not timed
            if time_once(argv, expected, env, args.source) is None:
                print(f"skipped {name!r}: it does not exit {expected} on this version")
                del todo[name]
        times: dict[str, list[float]] = {name: [] for name in todo}
        for _ in range(args.rounds):
            for name, (argv, expected) in todo.items():
                times[name].append(time_once(argv, expected, env, args.source))
    bare = statistics.median(times["python -c pass"])
    rows = [
        {
            "command": name,
            "median_seconds": round(statistics.median(values), 3),
            "over_bare_python": round(statistics.median(values) - bare, 3),
            "min_seconds": round(min(values), 3),
        }
        for name, values in times.items()
    ]
    info = machine()
    print(f"{info['cpu']}, {info['cpus']} cores; median of {args.rounds} rounds")
    print(f"| {'command':30s} | median s | over python -c pass |")
    print(f"| {'-' * 30} | -------- | ------------------- |")
    for row in rows:
        name, median, over = row["command"], row["median_seconds"], row["over_bare_python"]
        print(f"| {name:30s} | {median:8.3f} | {over:19.3f} |")
    results = ROOT / "bench" / "results" / f"{args.out}.json"
    payload = {"machine": info, "rounds": args.rounds, "source": args.source, "rows": rows}
    results.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
