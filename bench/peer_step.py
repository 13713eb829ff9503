"""The `fast` training step alone: convnet's (Keras on TensorFlow) against the PyTorch peer's
(`bench.peer_torch`), one process each, alternately, after a warm-up.

    .venv/bin/python -m bench.peer_step --steps 60 --rounds 2
    .venv/bin/python -m bench.peer_step --onednn     # and what each spends in oneDNN per step

A step is one batch of 256 random 28x28 images: forward, loss, backward and the optimizer (AdamW
with the recipe's schedule in both), float32. The figure is the median milliseconds of the steps
after the first `--warmup`. With `--onednn`, each worker runs again twice under
`ONEDNN_VERBOSE=profile_exec`, for `--warmup` steps and for `--warmup` + `--steps`; the difference
of their oneDNN execution times, per primitive kind, divided by `--steps`, is what one step spends
there (TensorFlow can run two primitives at once, so its sum may exceed the step).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from convnet.machine import machine

BATCH = 256
TIMES = "step seconds: "  # the worker's line of results
ROOT = Path(__file__).resolve().parent.parent


def tensorflow_steps(steps: int) -> list[float]:
    """Seconds of each step of convnet's compiled `fast` model, as `convnet train` builds it."""
    from convnet import framework

    framework.load("tensorflow")
    import keras
    import numpy as np
    import tensorflow as tf

    from bench.step_time import StepTimes
    from convnet.config import TrainConfig
    from convnet.models.factory import model_for_recipe
    from convnet.training.feed import epoch_steps
    from convnet.training.keras_recipe import compile_for_training, learning_rate

    recipe = TrainConfig(preset="fast").recipe()
    model = model_for_recipe("fast", (28, 28, 1), 10, recipe)
    steps_per_epoch = epoch_steps(54_000, recipe.batch_size)  # Fashion-MNIST less `fast`'s 10%
    rate = learning_rate(recipe, steps_per_epoch)
    compile_for_training(model, recipe, rate, metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (BATCH * 8, 28, 28, 1), dtype=np.uint8)
    y = keras.utils.to_categorical(rng.integers(0, 10, len(x)), 10)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).repeat()
    timer = StepTimes()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer])
    return timer.times


def torch_steps(steps: int) -> list[float]:
    """Seconds of each step of the PyTorch peer's `fast` net, as `bench.peer_torch` trains it."""
    import torch

    from bench.peer_torch import RECIPES, fast_net, make_optimizer, train_step

    recipe = RECIPES["fast"]
    model = fast_net().to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    x = torch.randint(0, 256, (BATCH * 8, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (len(x),))
    model.train()
    times = []
    for _ in range(steps):
        began = time.perf_counter()
        batch = torch.randperm(len(x))[:BATCH]
        train_step(model, optimizer, x[batch], y[batch], recipe["smoothing"])
        times.append(time.perf_counter() - began)
    return times


WORKERS = {"convnet (TensorFlow)": tensorflow_steps, "PyTorch": torch_steps}


def run_worker(name: str, steps: int, verbose: bool = False) -> tuple[list[float], str]:
    """The step times of `name` in a process of its own, and its output (oneDNN's log among it)."""
    env = dict(os.environ) | ({"ONEDNN_VERBOSE": "profile_exec"} if verbose else {})
    command = [sys.executable, "-m", "bench.peer_step", "--worker", name, "--steps", str(steps)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{name}: exit {done.returncode}\n{done.stderr[-3000:]}")
    # oneDNN writes its log to stdout too, buffered apart from Python's: find the times' line.
    (times,) = (line for line in done.stdout.splitlines() if line.startswith(TIMES))
    return json.loads(times.removeprefix(TIMES)), done.stdout + done.stderr


def onednn_ms(log: str) -> collections.Counter:
    """Milliseconds of oneDNN execution per "kind:propagation" in a profile_exec log."""
    spent: collections.Counter = collections.Counter()
    for line in log.splitlines():
        fields = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in fields:
            continue
        at = fields.index("exec")
        try:
            spent[f"{fields[at + 2]}:{fields[at + 4]}"] += float(fields[-1])
        except (IndexError, ValueError):
            continue
    return spent


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="measured steps, after the warm-up")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--onednn", action="store_true", help="also profile oneDNN's primitives")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(TIMES + json.dumps(WORKERS[args.worker](args.steps)), flush=True)
        return {}
    total = args.warmup + args.steps
    medians: dict[str, list[float]] = {name: [] for name in WORKERS}
    for _ in range(args.rounds):
        for name in WORKERS:
            times, _log = run_worker(name, total)
            medians[name].append(statistics.median(times[args.warmup :]) * 1000)
            print(name, f"{medians[name][-1]:.1f} ms", file=sys.stderr)
    info = machine()
    settings = f"fast, batch {BATCH}, float32, {args.rounds} rounds"
    print(f"{info['cpu']}, {info['cpus']} cores; {settings}")
    print("| step of | median ms per round | ratio to PyTorch |")
    print("| --- | --- | --- |")
    torch_ms = statistics.median(medians["PyTorch"])
    for name, ms in medians.items():
        rounds = ", ".join(f"{m:.1f}" for m in ms)
        print(f"| {name} | {rounds} | {statistics.median(ms) / torch_ms:.2f} |")
    payload = {"machine": info, "settings": vars(args), "median_ms": medians}
    if args.onednn:
        payload["onednn_ms_per_step"] = {}
        for name in WORKERS:
            short = onednn_ms(run_worker(name, args.warmup, verbose=True)[1])
            long = onednn_ms(run_worker(name, total, verbose=True)[1])
            per_step = {k: (long[k] - short[k]) / args.steps for k in long}
            payload["onednn_ms_per_step"][name] = per_step
            print(f"\n{name}, oneDNN ms per step (total {sum(per_step.values()):.1f}):")
            for kind, ms in sorted(per_step.items(), key=lambda item: -item[1]):
                print(f"  {kind:42s} {ms:6.2f}")
    (ROOT / "bench" / "results" / "peer_step.json").write_text(json.dumps(payload, indent=2) + "\n")
    return payload


if __name__ == "__main__":
    main()
