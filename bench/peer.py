"""`convnet train` against the same net and recipe in plain PyTorch (`bench.peer_torch`), side by
side in one run: alternating processes, round after round, so a machine that slows down for a
while slows both alike.

    .venv/bin/python -m bench.peer --net fast --rounds 2

Each pipeline is a whole process started here: wall is its start to its exit; start-up from its
start to the start of training (imports, data, model); first step to the end of the first
training step (start-up and tracing); fit its training loop (validation passes included);
after the rest (test predictions, saving, the report, exit); s/epoch fit over epochs. Times are
medians over rounds, and the ratios divide convnet's by each peer's. Round k trains every
pipeline with seed k, and test accuracy is the mean over those seeds. PyTorch comes from the
`torch` extra (`make test` installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from convnet.machine import cpu_flags, machine
from convnet.models.precision import BFLOAT16_CPU_FLAGS

CONVNET = str(Path(sys.executable).with_name("convnet"))
ROOT = Path(__file__).resolve().parent.parent


def pipelines(net: str, bfloat16: bool) -> dict[str, list[str]]:
    """Each pipeline's name and command (the run folder is appended to convnet's)."""
    peer = [sys.executable, "-m", "bench.peer_torch", "--net", net]
    ours = [CONVNET, "train", "--preset", net, "--json"]
    found = {f"convnet {net}": ours}
    if bfloat16:
        found["PyTorch bfloat16 autocast"] = [*peer, "--precision", "bfloat16"]
    found["PyTorch float32"] = [*peer, "--precision", "float32"]
    if bfloat16:  # without bfloat16, `auto` is float32: the first row already is that run
        found[f"convnet {net} float32"] = [*ours, "--precision", "float32"]
    return found


def run_once(name: str, command: list[str], scratch: Path) -> dict:
    env = dict(os.environ, BENCH_T0=repr(time.time()))
    out = scratch / f"run-{time.monotonic_ns()}"
    if name.startswith("convnet"):
        command = [*command, "--out", str(out)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{name}: exit {done.returncode}\n{done.stderr[-3000:]}")
    if name.startswith("convnet"):
        metrics = json.loads((out / "metrics.json").read_text())
        fit, epochs = metrics["fit_seconds"], metrics["epochs"]
        row = {"fit": fit, "epoch": fit / epochs, "accuracy": metrics["test_accuracy"]}
        row |= {k: metrics.get(f"{k}_seconds") for k in ("startup", "first_step")}
    else:
        result = json.loads(done.stdout.strip().splitlines()[-1])
        fit = result["fit_seconds"]
        row = {"fit": fit, "epoch": fit / len(result["epoch_seconds"])}
        row |= {k: result[f"{k}_seconds"] for k in ("startup", "first_step")}
        row["accuracy"] = result["test_accuracy"]
    if row["startup"] is not None:  # what the pipeline does after training: test, save, report
        row["after"] = wall - row["startup"] - row["fit"]
    return {"wall": wall, **row}


def median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=["fast", "seed"], default="fast")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--bfloat16",
        choices=["auto", "yes", "no"],
        default="auto",
        help="run the PyTorch bfloat16 peer (auto: where the CPU has bfloat16)",
    )
    args = parser.parse_args(argv)
    info = machine()
    has_bf16 = bool(cpu_flags() & BFLOAT16_CPU_FLAGS)
    bf16 = args.bfloat16 == "yes" or (args.bfloat16 == "auto" and has_bf16)
    commands = pipelines(args.net, bf16)
    results: dict[str, list[dict]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory(prefix="convnet-peer-") as scratch:
        for round in range(args.rounds):  # each round its own seed: the accuracy is over seeds
            for name, command in commands.items():
                seeded = [*command, "--seed", str(round + 1)]
                results[name].append(run_once(name, seeded, Path(scratch)))
                print(name, results[name][-1], file=sys.stderr)
    keys = ("wall", "startup", "first_step", "fit", "after", "epoch")
    medians = {name: {k: median(runs, k) for k in keys} for name, runs in results.items()}
    for name, runs in results.items():  # over seeds, as the accuracy target is
        medians[name]["accuracy"] = statistics.mean(r["accuracy"] for r in runs)
    ours = medians[f"convnet {args.net}"]
    print(f"{info['cpu']}, {info['cpus']} cores; {args.net}, {args.rounds} rounds")
    print(
        "| pipeline | wall s | start-up s | first step s | fit s | after s | s/epoch | test acc "
        + "| wall ratio | epoch ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, row in medians.items():
        startup, first, after = (
            "-" if row[k] is None else f"{row[k]:.1f}" for k in ("startup", "first_step", "after")
        )
        print(f"| {name} | {row['wall']:.1f} | {startup} | {first} | {row['fit']:.1f} | {after} | "
              f"{row['epoch']:.2f} | {row['accuracy']:.4f} | {ours['wall'] / row['wall']:.2f} | "
              f"{ours['epoch'] / row['epoch']:.2f} |")  # fmt: skip
    payload = {"machine": info, "settings": vars(args), "median": medians, "runs": results}
    (ROOT / "bench" / "results" / f"peer_{args.net}.json").write_text(
        json.dumps(payload, indent=2) + "\n"
    )
    return payload


if __name__ == "__main__":
    main()
