"""Time to accuracy: the seed article's pipeline against convnet's presets, side by side, one run.

    python -m bench.time_to_accuracy            # full: 3 seeds each, about 50 minutes on 2 cores
    python -m bench.time_to_accuracy --reference-seeds 1 --presets seed:1,fast:3,best:1
    python -m bench.time_to_accuracy --quick    # 10,000 examples (1,000 test), 2 epochs: < 3 min

Every training runs in a fresh process on the same Kaggle CSVs (made from the IDX files by
`convnet export-csv`). Results go to bench/results/time_to_accuracy[-quick].json and, for full
runs, to the time-to-accuracy section of docs/benchmarks.md.
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

from convnet.data.kaggle import KAGGLE_NAMES, export_fashion_mnist_csv
from convnet.files import cache_dir, write_atomic
from convnet.reports.plots import read_history

ROOT = Path(__file__).resolve().parent.parent
CONVNET = str(Path(sys.executable).with_name("convnet"))
TARGET = 0.91  # validation accuracy whose first epoch gives "time to 0.91"
MARKS = (120, 300, 600)  # seconds of training: the accuracy reached at 2, 5 and 10 minutes
# Images in the pass through a run's test-time views: a rate needs no more, and `best`'s 18 views
# took 106 s over the 10,000 test images (AMD Zen 4, 2 cores).
TTA_IMAGES = 500


def kaggle_csvs(rows: int | None, test_rows: int | None) -> tuple[Path, Path]:
    """The Kaggle CSVs, exported once into the cache; the first rows of each if given."""
    directory = cache_dir() / "kaggle"
    train, test = (directory / KAGGLE_NAMES[s] for s in ("train", "test"))
    if not (train.is_file() and test.is_file()):
        export_fashion_mnist_csv(directory)
    return _head(train, rows), _head(test, test_rows)


def _head(path: Path, rows: int | None) -> Path:
    """A CSV of the header and the first `rows` rows of `path`, cached beside it."""
    if rows is None:
        return path
    head = path.with_name(f"{path.stem}-{rows}.csv")
    if not head.is_file():
        with path.open() as source:
            write_atomic(head, "".join(next(source) for _ in range(rows + 1)))
    return head


def time_csv_loading(train_csv: Path) -> dict:
    """pandas.read_csv as the seed uses it, against convnet's reader cold and from its cache."""
    code = (  # imports happen before the clock starts: the load alone is timed
        "import sys, time\n"
        "import pandas as pd\n"
        "from convnet.data import load_source\n"
        "t = time.perf_counter()\n"
        "pd.read_csv(sys.argv[2]) if sys.argv[1] == 'pandas' else load_source(sys.argv[2])\n"
        "print(time.perf_counter() - t)\n"
    )
    seconds = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache}  # an empty cache: the first load is cold
        for label, reader in (
            ("pandas", "pandas"),
            ("convnet_cold", "convnet"),
            ("convnet_cached", "convnet"),
        ):
            out = subprocess.run(
                [sys.executable, "-c", code, reader, str(train_csv)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            seconds[label] = float(out.stdout.split()[-1])
    seconds["speedup_cold"] = seconds["pandas"] / seconds["convnet_cold"]
    with train_csv.open() as rows:
        seconds["rows"] = sum(1 for _ in rows) - 1  # the header
    return seconds


def run_reference(train_csv: Path, test_csv: Path, seed: int, epochs: int) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.seed_article",
            str(train_csv),
            str(test_csv),
            str(seed),
            str(epochs),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["seconds_per_epoch"] = result["fit_seconds"] / result["epochs"]
    return result


def run_preset(
    preset: str, train_csv: Path, test_csv: Path, seed: int, out: Path, epochs: int | None
) -> dict:
    command = [
        CONVNET,
        "train",
        "--preset",
        preset,
        "--seed",
        str(seed),
        "--train",
        str(train_csv),
        "--test",
        str(test_csv),
        "--json",
        "--out",
        str(out),
    ]
    command += ["--epochs", str(epochs)] if epochs else []
    subprocess.run(command, capture_output=True, text=True, check=True)
    metrics = json.loads((out / "metrics.json").read_text())
    history = read_history(out / "history.csv")
    curve = list(zip(history["elapsed_seconds"], history.get("val_accuracy", []), strict=False))
    reached = [t for t, a in curve if a >= TARGET]
    return {
        "wall_seconds": metrics["wall_seconds"],
        "fit_seconds": metrics["fit_seconds"],
        "epochs": len(history["loss"]),
        "seconds_per_epoch": metrics["fit_seconds"] / len(history["loss"]),
        "seconds_to_target": reached[0] if reached else None,
        "test_accuracy": metrics["test_accuracy"],
        "test_loss": metrics["test_loss"],
        # The validation accuracy of the last epoch finished by each mark (None: none was).
        "val_accuracy_at": {m: accuracy_by(curve, m) for m in MARKS},
    }


def accuracy_by(curve: list[tuple[float, float]], seconds: float) -> float | None:
    """The validation accuracy of the last epoch finished within `seconds`, if any was."""
    finished = [accuracy for elapsed, accuracy in curve if elapsed <= seconds]
    return finished[-1] if finished else None


def inference_throughput(runs: list[Path], test_csv: Path) -> list[dict]:
    """Batch inference on the test CSV's images (batch 1024), after a warm-up pass, in images/s.

    `images_per_second` is one pass of the model, the fastest of three (single passes of the
    same model measured 30% apart); `predicted_per_second` is as `convnet predict` and the
    server compute it, averaged over the run's test-time augmentation views, on the first
    `TTA_IMAGES` images. One process measures every run: importing TensorFlow takes 8 s.
    """
    code = (
        "import json, sys, time\n"
        "from convnet.data import load_source\n"
        "from convnet.evaluation import TestTimeAugmentation, predict_proba\n"
        "from convnet.models.factory import load_model\n"
        "from convnet.runs import Run\n"
        "x = load_source(sys.argv[1])['train'].x\n"
        "sample = x[: int(sys.argv[2])]\n"
        "def rate(model, images, views=None):\n"
        "    t = time.perf_counter(); predict_proba(model, images, tta=views)\n"
        "    return len(images) / (time.perf_counter() - t)\n"
        "for folder in sys.argv[3:]:\n"
        "    run = Run(folder)\n"
        "    model = load_model(run.model_file)\n"
        "    tta = TestTimeAugmentation.of(run.config().recipe())\n"
        "    predict_proba(model, x)\n"
        "    single = max(rate(model, x) for _ in range(3))\n"
        "    print(json.dumps({'images_per_second': single, 'predicted_per_second': "
        "rate(model, sample, tta)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(test_csv), str(TTA_IMAGES), *map(str, runs)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(line) for line in out.stdout.strip().splitlines()[-len(runs) :]]


def summarize(runs: list[dict], reference: dict | None) -> dict:
    """Mean and spread of each figure over seeds, and ratios against the reference's means."""
    summary = {"runs": runs, "seeds": len(runs)}
    for key in (
        "wall_seconds",
        "fit_seconds",
        "epochs",
        "seconds_per_epoch",
        "test_accuracy",
        "images_per_second",
        "predicted_per_second",
    ):
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            summary[key] = {
                "mean": statistics.fmean(values),
                "min": min(values),
                "max": max(values),
            }
    marks = [r["val_accuracy_at"] for r in runs if "val_accuracy_at" in r]
    if marks:
        summary["val_accuracy_at"] = {
            m: statistics.fmean(v) if None not in (v := [r[m] for r in marks]) else None
            for m in MARKS
        }
    reached = [r["seconds_to_target"] for r in runs if r.get("seconds_to_target") is not None]
    summary["seconds_to_target"] = statistics.fmean(reached) if len(reached) == len(runs) else None
    if reference:
        for key in ("wall_seconds", "fit_seconds", "seconds_per_epoch"):
            summary[f"{key}_vs_reference"] = summary[key]["mean"] / reference[key]["mean"]
    return summary


def _fmt(summary: dict, key: str, digits: int = 1, missing: str = "-") -> str:
    value = summary.get(key)
    if value is None:
        return missing
    if isinstance(value, dict):
        if value["max"] - value["min"] > 0:
            return (
                f"{value['mean']:.{digits}f} ({value['min']:.{digits}f}-{value['max']:.{digits}f})"
            )
        return f"{value['mean']:.{digits}f}"
    return f"{value:.{digits}f}"


def markdown(results: dict) -> str:
    """The results as a markdown section: machine, command, and one row per pipeline."""
    lines = [
        f"Command: `{results['command']}`  ",
        f"Date: {results['date']}; machine: {results['machine']}; versions: {results['versions']}",
        "",
        "| pipeline | seeds | wall s | fit s | epochs | s/epoch | s to 0.91 val acc | "
        "test accuracy | images/s | images/s with TTA | wall vs article | s/epoch vs article |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in results["pipelines"].items():
        ratios = [
            f"{s[k]:.2f}" if k in s else "1.00"
            for k in ("wall_seconds_vs_reference", "seconds_per_epoch_vs_reference")
        ]
        lines.append(
            f"| {name} | {s['seeds']} | {_fmt(s, 'wall_seconds')} | {_fmt(s, 'fit_seconds')} | "
            f"{_fmt(s, 'epochs', 0)} | {_fmt(s, 'seconds_per_epoch', 2)} | "
            f"{_fmt(s, 'seconds_to_target', missing='not reached')} | "
            f"{_fmt(s, 'test_accuracy', 4)} | {_fmt(s, 'images_per_second', 0)} | "
            f"{_fmt(s, 'predicted_per_second', 0)} | "
            f"{ratios[0]} | {ratios[1]} |"
        )
    lines += ["", "Validation accuracy reached by 2 / 5 / 10 minutes of training (seed mean):"]
    for name, s in results["pipelines"].items():
        if "val_accuracy_at" in s:
            marks = [s["val_accuracy_at"][m] for m in MARKS]
            lines.append(f"- {name}: " + " / ".join(f"{a:.4f}" if a else "-" for a in marks))
    csv = results["csv_loading"]
    lines += [
        "",
        f"Kaggle train CSV ({csv['rows']:,} rows) loading: "
        f"pandas.read_csv {csv['pandas']:.2f} s, "
        f"convnet cold {csv['convnet_cold']:.2f} s "
        f"({csv['speedup_cold']:.2f}x the speed of pandas), "
        f"convnet from its cache {csv['convnet_cached']:.2f} s.",
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, name: str, body: str) -> None:
    """Replaces the section between `<!-- name:begin -->` and `<!-- name:end -->` in `path`."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    block = f"{begin}\n{body}{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + f"\n\n## Time to accuracy\n\n{block}\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="10,000 examples (1,000 test), 2 epochs, 1 seed"
    )
    parser.add_argument(
        "--reference-seeds", type=int, help="runs of the article's pipeline (default 3; quick 1)"
    )
    parser.add_argument(
        "--presets", help="PRESET[:SEEDS],... (default seed,fast,best with 3 seeds; quick 1)"
    )
    parser.add_argument(
        "--keep-runs", type=Path, metavar="DIR", help="keep the run folders in DIR (default: none)"
    )
    args = parser.parse_args(argv)
    default_seeds = 1 if args.quick else 3
    presets = [
        (name, int(seeds) if seeds else default_seeds)
        for name, _, seeds in (
            p.partition(":") for p in (args.presets or "seed,fast,best").split(",")
        )
    ]
    epochs = 2 if args.quick else None
    train_csv, test_csv = kaggle_csvs(*((10_000, 1_000) if args.quick else (None, None)))

    from convnet import framework
    from convnet.machine import machine, versions
    from convnet.models.precision import resolve_precision

    backend = framework.load()
    results = {
        "command": "python -m bench.time_to_accuracy " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "versions": versions(backend),
        "machine": "{processor}, {cpu}, {cpus} cores, auto precision {precision}".format(
            **machine(), precision=resolve_precision("auto")
        ),
        "csv_loading": time_csv_loading(train_csv),
        "pipelines": {},
    }
    reference_runs = [
        run_reference(train_csv, test_csv, s, epochs or 15)
        for s in range(args.reference_seeds or default_seeds)
    ]
    reference = summarize(reference_runs, None)
    results["pipelines"]["article (reference)"] = reference
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = args.keep_runs or Path(tmp)
        trained: dict[str, dict[Path, dict]] = {}  # preset -> run folder -> its figures
        for preset, seeds in presets:
            preset_folders = [runs_dir / f"{preset}-{s}" for s in range(seeds)]
            trained[preset] = {
                folder: run_preset(preset, train_csv, test_csv, s, folder, epochs)
                for s, folder in enumerate(preset_folders)
            }
        folders = [folder for runs in trained.values() for folder in runs]
        speeds = dict(zip(folders, inference_throughput(folders, test_csv), strict=True))
        for preset, runs in trained.items():
            measured = [run | speeds[folder] for folder, run in runs.items()]
            results["pipelines"][f"convnet {preset}"] = summarize(measured, reference)
    out = ROOT / "bench" / "results" / f"time_to_accuracy{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    if not args.quick:
        write_section(ROOT / "docs" / "benchmarks.md", "time_to_accuracy", markdown(results))
    return results


if __name__ == "__main__":
    main()
