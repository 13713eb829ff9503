"""`convnet predict RUN FOLDER --out preds.csv` on 10,000 and 100,000 PNG files: images/s and the
process's peak memory, which should not grow with the count.

    .venv/bin/python -m bench.predict --counts 10000,100000

The PNGs are Fashion-MNIST test images (repeated), 28x28 grey, in folders of 1,000; the model a
`seed` run trained briefly (what is measured is the reading and streaming, not the model). Each
count runs as its own process under a small wrapper that reports its peak resident memory.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from convnet.machine import machine

CONVNET = str(Path(sys.executable).with_name("convnet"))
ROOT = Path(__file__).resolve().parent.parent
IMAGES = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
# Runs a command and prints its peak resident memory in KiB (Linux's ru_maxrss unit).
PEAK = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(done.returncode)"
)


def write_pngs(folder: Path, count: int) -> None:
    with gzip.open(IMAGES) as f:
        pixels = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    for i in range(count):
        if i % 1000 == 0:
            (folder / f"{i // 1000:03d}").mkdir(parents=True)
        Image.fromarray(pixels[i % len(pixels)]).save(folder / f"{i // 1000:03d}" / f"{i:06d}.png")


def predict(run: Path, folder: Path, out: Path) -> dict:
    command = [sys.executable, "-c", PEAK, CONVNET, "predict", str(run), str(folder)]
    started = time.perf_counter()
    done = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"predict: exit {done.returncode}\n{done.stderr[-2000:]}")
    with out.open() as f:
        rows = sum(1 for _ in csv.DictReader(f))
    peak_mb = int(done.stdout.strip().splitlines()[-1]) / 1024
    return {"images": rows, "seconds": seconds, "images_per_second": rows / seconds,
            "peak_rss_mb": peak_mb}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10000,100000")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    results = {}
    with tempfile.TemporaryDirectory(prefix="convnet-predict-") as scratch:
        scratch = Path(scratch)
        run = scratch / "run"
        train = [CONVNET, "train", "--preset", "seed", "--limit", "5000", "--epochs", "1"]
        subprocess.run([*train, "--out", str(run)], check=True, capture_output=True)
        for count in counts:
            folder = scratch / f"pngs-{count}"
            write_pngs(folder, count)
            results[count] = predict(run, folder, scratch / f"preds-{count}.csv")
            print(count, results[count], flush=True)
    info = machine()
    print(f"{info['cpu']}, {info['cpus']} cores")
    print("| PNG files | seconds | images/s | peak RSS MB |")
    print("| --- | --- | --- | --- |")
    for count, r in results.items():
        print(f"| {count:,} | {r['seconds']:.1f} | {r['images_per_second']:.0f} | "
              f"{r['peak_rss_mb']:.0f} |")  # fmt: skip
    payload = {"machine": info, "settings": vars(args), "results": results}
    (ROOT / "bench" / "results" / "predict.json").write_text(json.dumps(payload, indent=2) + "\n")
    return payload


if __name__ == "__main__":
    main()
