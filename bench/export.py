"""Each export of a run side by side: file size, single-image latency, batch throughput and test
accuracy of Keras, ONNX Runtime, LiteRT float32 and LiteRT int8, for each preset.

    .venv/bin/python -m bench.export --presets seed,fast,best --limit 10000 --epochs 2

Each preset is trained briefly on Fashion-MNIST (`--limit`, `--epochs`: what is measured is the
exports, not the recipe), or taken from `--runs`. Every engine runs the same graph: the run's
test-time views averaged inside it, as `convnet export` writes it. Latency is the median of
`--calls` one-image calls after a warm-up; throughput is the full test set in batches of 256; each
engine uses its default threads (2 cores here). Accuracy is on the run's whole test set.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from convnet import api, framework
from convnet.machine import machine
from convnet.runs import Run

ROOT = Path(__file__).resolve().parent.parent
BATCH = 256


def keras_engine(run: Run):
    import tensorflow as tf

    from convnet.evaluation import TestTimeAugmentation
    from convnet.exporter import _in_inference_mode
    from convnet.models.factory import load_model

    model = load_model(run.model_file)
    graph = _in_inference_mode(model, TestTimeAugmentation.of(run.config().recipe()))
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.uint8)
    call = tf.function(lambda x: graph(x, training=False), input_signature=[spec])
    return lambda x: call(x).numpy()


def onnx_engine(path: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def litert_engine(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path), num_threads=2)
    given = interpreter.get_input_details()[0]["index"]
    answer = interpreter.get_output_details()[0]["index"]
    shape = [None]

    def call(x):
        if shape[0] != x.shape:  # resizing reallocates: only when the batch size changes
            interpreter.resize_tensor_input(given, x.shape)
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(given, x)
        interpreter.invoke()
        return interpreter.get_tensor(answer).copy()

    return call


def measure(call, x: np.ndarray, y: np.ndarray, calls: int) -> dict:
    for _ in range(5):
        call(x[:1])
    times = []
    for i in range(calls):
        started = time.perf_counter()
        call(x[i : i + 1])
        times.append(time.perf_counter() - started)
    call(x[:BATCH])  # warm the batch shape
    started = time.perf_counter()
    probabilities = np.concatenate([call(x[i : i + BATCH]) for i in range(0, len(x), BATCH)])
    seconds = time.perf_counter() - started
    return {
        "latency_ms": statistics.median(times) * 1000,
        "images_per_second": len(x) / seconds,
        "test_accuracy": float(np.mean(probabilities.argmax(1) == y)),
    }


def bench_run(run_dir: Path, scratch: Path, calls: int) -> dict:
    run = Run(run_dir)
    _, test = run.load_data()
    x, y = test.x, test.y
    onnx = api.export(run_dir, "onnx", scratch / "model.onnx")
    f32 = api.export(run_dir, "litert", scratch / "f32.tflite")
    int8 = api.export(run_dir, "litert", scratch / "int8.tflite", quantize="int8")
    engines = {
        "Keras": (keras_engine(run), run.model_file),
        "ONNX Runtime": (onnx_engine(onnx), onnx),
        "LiteRT float32": (litert_engine(f32), f32),
        "LiteRT int8": (litert_engine(int8), int8),
    }
    results = {}
    for name, (call, path) in engines.items():
        results[name] = measure(call, x, y, calls) | {"megabytes": path.stat().st_size / 1e6}
        print(run_dir.name, name, results[name], flush=True)
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="seed,fast,best")
    parser.add_argument("--runs", help="comma-separated run folders instead of training")
    parser.add_argument("--limit", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args(argv)
    framework.load("tensorflow")
    results = {}
    with tempfile.TemporaryDirectory(prefix="convnet-export-") as scratch:
        scratch = Path(scratch)
        runs = [Path(r) for r in args.runs.split(",")] if args.runs else []
        for preset in [] if args.runs else args.presets.split(","):
            out = scratch / preset
            api.train(preset=preset, limit=args.limit, epochs=args.epochs, out=str(out), verbose=0)
            runs.append(out)
        for run in runs:
            (scratch / "exports").mkdir(exist_ok=True)
            results[Run(run).config().preset] = bench_run(run, scratch / "exports", args.calls)
    info = machine()
    print(f"{info['cpu']}, {info['cpus']} cores")
    print("| preset | engine | MB | 1-image ms | images/s (batch 256) | test acc |")
    print("| --- | --- | --- | --- | --- | --- |")
    for preset, engines in results.items():
        for name, r in engines.items():
            print(f"| {preset} | {name} | {r['megabytes']:.2f} | {r['latency_ms']:.2f} | "
                  f"{r['images_per_second']:.0f} | {r['test_accuracy']:.4f} |")  # fmt: skip
    payload = {"machine": info, "settings": vars(args), "results": results}
    (ROOT / "bench" / "results" / "export.json").write_text(json.dumps(payload, indent=2) + "\n")
    return payload


if __name__ == "__main__":
    main()
