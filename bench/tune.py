"""What `convnet tune` gets done in a fixed time: trials per hour with and without pruning, one
worker against two on the same study, and what a search finds against the `fast` preset.

Each setting is a real `convnet tune --preset fast` on Fashion-MNIST, run one after the other for
the same wall time (`--minutes`), on `--limit` training examples. Trials per hour counts finished
trials (complete or pruned). The search (`--search-minutes`) optimizes validation accuracy and
training seconds together; its Pareto front's most accurate trial that trains no longer than the
`fast` preset (trained here on the same data, all of it by default) is scored on the test set,
beside `fast` itself.

    .venv/bin/python -m bench.tune --minutes 12 --limit 20000 --search-minutes 30
    .venv/bin/python -m bench.tune --minutes 0 --search-minutes 60   # the search alone
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from convnet.machine import machine

CONVNET = str(Path(sys.executable).with_name("convnet"))
ROOT = Path(__file__).resolve().parent.parent


def tune(out: Path, seconds: float, limit: int | None, *extra: str) -> dict:
    """Runs one tune for `seconds`; returns its trial counts and best validation accuracy."""
    args = ["tune", "--preset", "fast", "--trials", "10000", "--time-budget", str(seconds)]
    args += ["--out", str(out), *(["--limit", str(limit)] if limit else []), *extra]
    started = time.perf_counter()
    done = subprocess.run([CONVNET, *args], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"tune {extra}: exit {done.returncode}\n{done.stderr[-2000:]}")
    rows = list(csv.DictReader((out / "trials.csv").read_text().splitlines()))
    states = [row["state"] for row in rows]
    finished = sum(s in ("complete", "pruned") for s in states)
    accuracies = [float(row["val_accuracy"]) for row in rows if row["state"] == "complete"]
    return {
        "wall_seconds": round(wall, 1),
        "complete": states.count("complete"),
        "pruned": states.count("pruned"),
        "trials_per_hour": round(finished * 3600 / wall, 1),
        "best_val_accuracy": max(accuracies, default=None),
        "rows": rows,
    }


def train(out: Path, limit: int | None, *extra: str) -> dict:
    args = ["train", "--out", str(out), "--json", *(["--limit", str(limit)] if limit else [])]
    done = subprocess.run([CONVNET, *args, *extra], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"train {extra}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return json.loads((out / "metrics.json").read_text())


def search_against_fast(scratch: Path, seconds: float, limit: int | None) -> dict:
    """The Pareto front's most accurate trial within `fast`'s training time, on the test set."""
    fast = train(scratch / "fast", limit, "--preset", "fast")
    found = tune(scratch / "search", seconds, limit, "--objectives", "val_accuracy,train_seconds")
    within = [
        row
        for row in found.pop("rows")
        if row["state"] == "complete" and float(row["train_seconds"]) <= fast["fit_seconds"]
    ]
    result = {"fast": {k: fast[k] for k in ("test_accuracy", "fit_seconds")}, "search": found}
    if within:
        best = max(within, key=lambda row: float(row["val_accuracy"]))
        metrics = json.loads((scratch / "search" / best["run"] / "metrics.json").read_text())
        result["found"] = {
            "trial": best["number"],
            "val_accuracy": float(best["val_accuracy"]),
            "fit_seconds": metrics["fit_seconds"],
            "test_accuracy": metrics["test_accuracy"],
            "params": {k: v for k, v in best.items() if k not in ("number", "state", "run")},
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--minutes", type=float, default=12, help="per setting (default: 12; 0 skips them)"
    )
    parser.add_argument("--limit", type=int, default=20000, help="training examples (0: all)")
    parser.add_argument("--search-minutes", type=float, default=60, help="0 to skip the search")
    parser.add_argument(
        "--search-limit", type=int, default=0, help="the search's examples (default 0: all)"
    )
    args = parser.parse_args()
    seconds, limit = args.minutes * 60, args.limit or None
    results = {"machine": machine(), "minutes": args.minutes, "limit": limit, "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="convnet-bench-tune-") as scratch:
        scratch = Path(scratch)
        settings = {
            "median pruner, 1 worker": (),
            "hyperband pruner, 1 worker": ("--pruner", "hyperband"),
            "no pruner, 1 worker": ("--pruner", "none"),
            "median pruner, 2 workers": ("--workers", "2"),
        }
        for i, (name, extra) in enumerate(settings.items() if args.minutes else []):
            results[name] = tune(scratch / f"tune{i}", seconds, limit, *extra)
            results[name].pop("rows")
            print(name, results[name], flush=True)
        if args.search_minutes:
            search_limit = args.search_limit or None
            search = search_against_fast(scratch, args.search_minutes * 60, search_limit)
            results["search"] = search
            print("search", search, flush=True)
    # A search alone keeps the settings' figures of an earlier run beside it.
    out = ROOT / "bench" / "results" / ("tune.json" if args.minutes else "tune_search.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
