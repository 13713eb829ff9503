"""Datasets x presets: test accuracy and wall time of each preset on MNIST-like data of several
sizes, each run in a fresh process with the preset's own recipe, its under-training warning noted.

    python -m bench.datasets --cifar DIR --fashion   # the table of docs/datasets.md
    python -m bench.datasets --flip               # --flip against --no-flip on the 8x8 digits

The data: scikit-learn's 1,797 8x8 digits (shipped with it), the same upscaled to 16x16 with
Pillow's bicubic filter, CIFAR-10's Python batches in DIR (`cifar-10-batches-py`; files cut
short are read up to their last whole image), synthetic doodles (`bench.doodles`, 10 classes of
2,000) and Fashion-MNIST (`--fashion`: seed and fast; `best` takes 10 minutes a run on 2 cores).
Sources without a test set hold out 20% (convnet's default). Results go to
bench/results/datasets.json (or datasets-flip.json) and the table to docs/datasets.md.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.doodles import write_doodles
from bench.time_to_accuracy import ROOT, write_section

# As CIFAR-10's batches.meta names them, in label order.
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer"]
CIFAR_NAMES += ["dog", "frog", "horse", "ship", "truck"]
DOODLES = 2_000  # per class: 20,000 in all


def digits(folder: Path, side: int) -> Path:
    """scikit-learn's digits, at `side` x `side` pixels (resized from 8x8 past 8), one NPZ."""
    from PIL import Image
    from sklearn.datasets import load_digits

    found = load_digits()
    x = np.rint(found.images * (255 / 16)).astype(np.uint8)
    if side != 8:
        resize = Image.Resampling.BICUBIC
        x = np.stack([np.asarray(Image.fromarray(i).resize((side, side), resize)) for i in x])
    path = folder / f"digits-{side}.npz"
    np.savez(path, x=x, y=found.target, class_names=np.array([str(d) for d in range(10)]))
    return path


def cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The whole images and their labels in one CIFAR-10 Python batch file, even one cut short:
    its labels come before its pixels, so a truncated file still holds them all."""
    raw = path.read_bytes()
    try:
        batch = pickle.loads(raw, encoding="bytes")
        pixels, labels = np.asarray(batch[b"data"]), list(batch[b"labels"])
    except (pickle.UnpicklingError, EOFError):
        labels = _labels(raw)
        size = struct.pack("<I", len(labels) * 3072)  # the pixels: one string of N x 3072 bytes
        start = max(raw.find(b"T" + size), raw.find(b"B" + size)) + 5
        pixels = np.frombuffer(raw, np.uint8, (len(raw) - start) // 3072 * 3072, start)
    pixels = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # channels last
    return pixels, np.asarray(labels[: len(pixels)])


def _labels(raw: bytes) -> list[int]:
    """The small integers pickled after the key "labels", up to the next key."""
    labels, inside = [], False
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(raw)):
            if op.name in ("SHORT_BINSTRING", "BINSTRING", "BINUNICODE", "SHORT_BINUNICODE"):
                if inside:
                    break
                inside = arg in ("labels", b"labels")
            elif inside and op.name == "BININT1":
                labels.append(arg)
    except ValueError:  # the pixels' string, cut short
        pass
    return labels


def cifar(folder: Path, batches: Path) -> Path:
    """CIFAR-10's batches in `batches` as one NPZ: data_batch_1-5 to train, test_batch to test."""
    parts = [cifar_batch(batches / f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = cifar_batch(batches / "test_batch")
    path = folder / "cifar.npz"
    np.savez(
        path,
        x_train=np.concatenate([p[0] for p in parts]),
        y_train=np.concatenate([p[1] for p in parts]),
        x_test=x_test,
        y_test=y_test,
        class_names=np.array(CIFAR_NAMES),
    )
    return path


# One run in a fresh process, through `convnet.train` as a notebook would call it: the flags as
# keywords, the warnings it gives recorded.
RUN = """
import json, sys, warnings
import convnet
settings = json.loads(sys.argv[1])
with warnings.catch_warnings(record=True) as said:
    warnings.simplefilter("always")
    run = convnet.train(verbose=0, **settings)
print(json.dumps({"warnings": [str(w.message) for w in said], "metrics": run.metrics}))
"""


def train(source: dict, preset: str, flags: dict, out: Path) -> dict:
    """One run: its test accuracy, wall seconds, and whether it warned of under-training."""
    load = os.getloadavg()[0]
    settings = {**source, "preset": preset, **flags, "out": str(out)}
    done = subprocess.run(
        [sys.executable, "-c", RUN, json.dumps(settings)], capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"{settings}: {done.stderr[-2000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    metrics = found["metrics"]
    return {
        "preset": preset,
        "flags": " ".join(map(_flag, flags.items())),
        "test_accuracy": metrics["test_accuracy"],
        "wall_seconds": metrics["wall_seconds"],
        "fit_seconds": metrics["fit_seconds"],
        "epochs": metrics["epochs"],
        "test_examples": metrics["test_examples"],
        "under_training": any("optimizer step" in w for w in found["warnings"]),
        "load": load,
    }


def _flag(item: tuple[str, object]) -> str:
    """A setting as the CLI writes it: `--epochs 15`, `--flip`, `--no-flip`."""
    name, value = item[0].replace("_", "-"), item[1]
    if isinstance(value, bool):
        return f"--{'' if value else 'no-'}{name}"
    return f"--{name} {value}"


def fix_epochs(preset: str, examples: int) -> int:
    """The --epochs the under-training warning asks of `preset` on `examples`."""
    from convnet.models.registry import fit_steps, get_preset

    found = get_preset(preset)
    return math.ceil(found.min_steps / fit_steps(examples, found.recipe)[0])


def plan(folder: Path, args) -> list[tuple[str, dict, str, dict]]:
    """(dataset, source settings, preset, recipe settings) of every run of the table."""
    d8, d16 = ({"train": str(digits(folder, side))} for side in (8, 16))
    runs = [("digits 8x8", d8, p, {}) for p in ("seed", "fast", "best")]
    for preset in ("seed", "fast"):  # with the --epochs the under-training warning asks for
        runs.append(("digits 8x8", d8, preset, {"epochs": fix_epochs(preset, 1437)}))
    runs += [("digits 16x16", d16, p, {}) for p in ("seed", "fast", "best")]
    if args.cifar:
        source = {"train": str(cifar(folder, args.cifar))}
        runs += [("CIFAR-10 (partial)", source, p, {}) for p in ("seed", "fast", "best")]
    doodles = {"train": str(write_doodles(folder / "doodles", DOODLES * 10 * 784))}
    runs += [("doodles (synthetic)", doodles, p, {}) for p in ("seed", "fast", "best")]
    if args.fashion:
        runs += [("Fashion-MNIST", {}, p, {}) for p in ("seed", "fast")]
    return runs


def flip_plan(folder: Path, seeds: int) -> list[tuple[str, dict, str, dict]]:
    """fast (with the epochs it needs here) and best on the 8x8 digits, mirrored or not."""
    source = {"train": str(digits(folder, 8))}
    runs = []
    for preset, epochs in (("fast", {"epochs": fix_epochs("fast", 1437)}), ("best", {})):
        for flip in (True, False):
            for seed in range(seeds):
                runs.append(("digits 8x8", source, preset, {**epochs, "flip": flip, "seed": seed}))
    return runs


def markdown(results: dict) -> str:
    lines = [
        f"Command: `{results['command']}`  ",
        f"Date: {results['date']}; machine: {results['machine']}",
        "",
        "| data | preset | flags | test accuracy | wall s | fit s | epochs | test images | "
        "under-training warning | load average (1 min) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['data']} | {r['preset']} | {r['flags'] or '-'} | {r['test_accuracy']:.4f} | "
            f"{r['wall_seconds']:.1f} | {r['fit_seconds']:.1f} | {r['epochs']} | "
            f"{r['test_examples']:,} | {'yes' if r['under_training'] else 'no'} | "
            f"{r['load']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", type=Path, help="a cifar-10-batches-py folder")
    parser.add_argument("--fashion", action="store_true", help="Fashion-MNIST too (seed, fast)")
    parser.add_argument("--flip", action="store_true", help="the flip measurement instead")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per flip setting")
    args = parser.parse_args(argv)
    from convnet.machine import machine

    results = {
        "command": "python -m bench.datasets " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": "{processor}, {cpu}, {cpus} cores".format(**machine()),
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs = flip_plan(folder, args.seeds) if args.flip else plan(folder, args)
        for index, (data, source, preset, flags) in enumerate(runs):
            row = {"data": data} | train(source, preset, flags, folder / f"run-{index}")
            print(json.dumps(row), flush=True)
            results["runs"].append(row)
    name = "datasets-flip" if args.flip else "datasets"
    (ROOT / "bench" / "results" / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    if not args.flip:
        write_section(ROOT / "docs" / "datasets.md", "datasets", markdown(results))
    return results


if __name__ == "__main__":
    main()
