"""The optimizer steps each preset needs to learn: test accuracy against steps on small data.

    python -m bench.steps_needed                  # seed, fast, best on the 8x8 digits, 3 seeds
    python -m bench.steps_needed --presets fast --seeds 3

Trains each preset on scikit-learn's 1,797 8x8 digits (shipped with scikit-learn: no download)
given as one file, so convnet holds out 20% to test on (360) and trains on 1,437 less the
preset's validation split, with more and more epochs. A preset "needs" the fewest steps whose
mean test accuracy is within `TOLERANCE` of the best mean it reaches in the sweep: that is the
`min_steps` registered with it (`convnet.models.registry`), below which training warns.
Results go to bench/results/steps_needed.json; the table is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 0.01  # accuracy (1 point, 3.6 of the 360 test digits) counted as "stopped climbing"
EPOCHS = {  # each preset's sweep: from its own recipe's epochs up
    "seed": (15, 50, 100, 150, 250, 400),  # 2 steps an epoch here
    "fast": (5, 10, 15, 20, 40, 80),  # 6 steps an epoch
    "best": (5, 10, 16, 24, 50),  # 6 steps an epoch
}


def digits_file(folder: Path) -> Path:
    """scikit-learn's digits as one NPZ without a test split, as a user would bring them."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = folder / "digits.npz"
    np.savez(path, x=digits.images.astype(np.int64), y=digits.target)
    return path


def train_once(data: Path, preset: str, epochs: int, seed: int, out: Path) -> dict:
    """One run; its test accuracy, optimizer steps and fit seconds."""
    import keras

    import convnet
    from convnet.models.registry import get_preset

    with warnings.catch_warnings():  # the held-out test set and under-training: known here
        warnings.simplefilter("ignore")
        run = convnet.train(
            train=str(data), preset=preset, epochs=epochs, seed=seed, out=str(out), verbose=0
        )
    metrics = json.loads((out / "metrics.json").read_text())
    recipe = get_preset(preset).recipe
    train = 1437 - math.ceil(recipe.val_split * 1437)  # sklearn's split: the test part rounds up
    keras.backend.clear_session()
    return {
        "preset": preset,
        "epochs": metrics["epochs"],
        "seed": seed,
        "steps": metrics["epochs"] * math.ceil(train / recipe.batch_size),
        "test_accuracy": run.test_accuracy,
        "fit_seconds": metrics["fit_seconds"],
    }


def needed(rows: list[dict]) -> dict:
    """Mean accuracy per step count, and the fewest steps within TOLERANCE of the best mean."""
    by_steps: dict[int, list[float]] = {}
    for row in rows:
        by_steps.setdefault(row["steps"], []).append(row["test_accuracy"])
    means = {steps: statistics.fmean(a) for steps, a in sorted(by_steps.items())}
    top = max(means.values())
    return {
        "mean_accuracy": means,
        "best_mean": top,
        "min_steps": min(s for s, a in means.items() if a >= top - TOLERANCE),
    }


def markdown(results: dict) -> str:
    lines = [
        f"Command: `{results['command']}`  ",
        f"Date: {results['date']}; machine: {results['machine']}; load average at the start "
        f"{results['load']}",
        "",
        "| preset | epochs | steps | test accuracy (mean of seeds) | fit s (mean) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for preset, found in results["presets"].items():
        rows = [r for r in results["runs"] if r["preset"] == preset]
        for steps, accuracy in found["mean_accuracy"].items():
            same = [r for r in rows if r["steps"] == steps]
            fit = statistics.fmean(r["fit_seconds"] for r in same)
            mark = " (needed)" if steps == found["min_steps"] else ""
            lines.append(
                f"| {preset} | {same[0]['epochs']} | {steps}{mark} | {accuracy:.4f} | {fit:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="seed,fast,best", help="comma-separated presets")
    parser.add_argument("--seeds", type=int, default=3, help="runs per point (default 3)")
    args = parser.parse_args(argv)
    import os

    from convnet import framework
    from convnet.machine import machine

    framework.load()
    results = {
        "command": "python -m bench.steps_needed " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": "{processor}, {cpu}, {cpus} cores".format(**machine()),
        "load": ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        "runs": [],
        "presets": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = digits_file(Path(tmp))
        for preset in args.presets.split(","):
            for epochs in EPOCHS[preset]:
                for seed in range(args.seeds):
                    out = Path(tmp) / f"{preset}-{epochs}-{seed}"
                    row = train_once(data, preset, epochs, seed, out)
                    print(json.dumps(row), flush=True)
                    results["runs"].append(row)
            rows = [r for r in results["runs"] if r["preset"] == preset]
            results["presets"][preset] = needed(rows)
    out = ROOT / "bench" / "results" / "steps_needed.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
