"""Training throughput of the JAX backend on 1 process, 2 processes, and 1 process x 2 devices.

Runs the real `convnet train` binary on a Fashion-MNIST subset (5% held out for validation, whose
short pass is inside the epoch time) and reads the per-epoch times from the run folder's
history.csv; the first epoch (JIT compilation) is left out.
The pair meets on 127.0.0.1, so on one machine its two processes share the cores: the figure
shows the cost of the all-reduce, not the gain of a second machine. See
docs/benchmarks.md for what the numbers imply for N machines.

    .venv/bin/python -m bench.distributed --limit 10240 --epochs 3 --batch-size 512 --repeats 1
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CONVNET = str(Path(sys.executable).with_name("convnet"))


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(out: Path, extra: list[list[str]], common: list[str]) -> None:
    """Starts one `convnet train` per entry of `extra` and waits for all of them."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    jobs = [
        subprocess.Popen(
            [CONVNET, "train", *common, *args, "--out", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for args in extra
    ]
    for job in jobs:
        _, err = job.communicate(timeout=3600)
        if job.returncode:
            raise SystemExit(f"convnet train failed:\n{err[-2000:]}")


def measure(topology: str, common: list[str], examples: int) -> float:
    """Images per second of one training with `topology`, compile epoch excluded."""
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as scratch:
        out = Path(scratch) / "run"
        if topology == "2 processes":
            pair = ["--num-processes", "2", "--coordinator", f"127.0.0.1:{_port()}"]
            _launch(out, [[*pair, "--process-id", str(i)] for i in (0, 1)], common)
        elif topology == "1 process x 2 devices":
            _launch(out, [["--devices", "2"]], common)
        else:
            _launch(out, [[]], common)
        with open(out / "history.csv") as f:
            seconds = [float(row["epoch_seconds"]) for row in csv.DictReader(f)][1:]
    return examples / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=10240, help="training examples")
    parser.add_argument("--epochs", type=int, default=3, help="the first is not timed")
    parser.add_argument("--batch-size", type=int, default=512, help="global batch")
    parser.add_argument("--repeats", type=int, default=1, help="runs per topology")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    common = ["--backend", "jax", "--limit", str(args.limit), "--epochs", str(args.epochs)]
    common += ["--batch-size", str(args.batch_size), "--val-split", "0.05", "--seed", "1"]
    examples = args.limit - math.ceil(args.limit * 0.05)  # as sklearn's train_test_split
    results = []
    for topology in ("1 process", "2 processes", "1 process x 2 devices"):
        rates = [measure(topology, common, examples) for _ in range(args.repeats)]
        results.append({"topology": topology, "images_per_second": rates})
        print(
            f"{topology:22s} {statistics.mean(rates):8.0f} images/s "
            f"(runs: {', '.join(f'{r:.0f}' for r in rates)})",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
