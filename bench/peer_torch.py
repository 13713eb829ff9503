"""The peer: `fast` (and `seed`) written in plain PyTorch, as a careful PyTorch user would.

This is what a user would pick instead of convnet, so it gets every easy speed-up PyTorch
offers on a CPU: channels_last, fused AdamW, bfloat16 autocast where asked, a warm-up + cosine
schedule stepped per batch, and BatchNorm's eps and momentum matched to Keras' (1e-3, and
PyTorch's momentum is 1 - Keras' 0.9). The data is the same Fashion-MNIST IDX files, the same
10% (fast) or 30% (seed) held out for validation, the same test set. No convnet import: the
start-up measured is PyTorch's own.

    python -m bench.peer_torch --net fast --precision bfloat16   # one run, a JSON line out

`bench.peer` runs it against `convnet train` side by side. The time of the first training step
is measured from `$BENCH_T0` (the driver's `time.time()` just before it started the process).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import math
import os
import time
from pathlib import Path

T0 = float(os.environ.get("BENCH_T0", time.time()))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

DATA = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(data: Path, val_split: float, seed: int):
    """(train, val, test) as (uint8 images N x 1 x 28 x 28, int64 labels) tensors."""
    x = read_idx(data / "train-images-idx3-ubyte.gz")
    y = read_idx(data / "train-labels-idx1-ubyte.gz").astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    held = int(len(x) * val_split)
    val, train = order[:held], order[held:]
    x_test = read_idx(data / "t10k-images-idx3-ubyte.gz")
    y_test = read_idx(data / "t10k-labels-idx1-ubyte.gz").astype(np.int64)

    def tensors(images, labels):
        return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.copy())

    return tensors(x[train], y[train]), tensors(x[val], y[val]), tensors(x_test, y_test)


def conv_bn(cin: int, cout: int, pool: bool) -> nn.Sequential:
    """Conv 3x3 without bias -> (max-pool) -> BatchNorm -> ReLU, as convnet's `fast` orders it."""
    layers = [nn.Conv2d(cin, cout, 3, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(cout, eps=1e-3, momentum=0.1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def fast_net(classes: int = 10) -> nn.Module:
    return nn.Sequential(
        conv_bn(1, 32, pool=True),  # 26 -> 13
        conv_bn(32, 64, pool=True),  # 11 -> 5
        conv_bn(64, 128, pool=False),  # 3
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(128 * 3 * 3, classes),
    )


def seed_net(classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * 3 * 3, 64), nn.ReLU(), nn.Linear(64, classes),
    )  # fmt: skip


# Each net's recipe, as convnet's presets have it (convnet/models/presets.py).
RECIPES = {
    "fast": dict(epochs=5, batch=256, lr=4e-3, warmup_epochs=1.0, weight_decay=1e-4,
                 smoothing=0.1, val_split=0.1, optimizer="adamw"),
    "seed": dict(epochs=15, batch=512, lr=1e-3, warmup_epochs=0.0, weight_decay=0.0,
                 smoothing=0.0, val_split=0.3, optimizer="rmsprop"),
}  # fmt: skip
NETS = {"fast": fast_net, "seed": seed_net}


def schedule(step: int, warmup: int, total: int) -> float:
    """Keras' CosineDecay with a linear warm-up from 0, as a multiplier of the peak rate."""
    if step < warmup:
        return step / warmup
    decay = max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, decay) / decay))


def evaluate(model: nn.Module, x, y, autocast, batch: int = 1024) -> tuple[float, float]:
    model.eval()
    loss = correct = 0.0
    with torch.inference_mode(), autocast():
        for i in range(0, len(x), batch):
            logits = model(prepare(x[i : i + batch])).float()
            loss += F.cross_entropy(logits, y[i : i + batch], reduction="sum").item()
            correct += (logits.argmax(1) == y[i : i + batch]).sum().item()
    return loss / len(x), correct / len(x)


def make_optimizer(model: nn.Module, recipe: dict) -> torch.optim.Optimizer:
    """The recipe's optimizer: fused AdamW, or RMSprop with Keras' rho 0.9 and eps 1e-7."""
    if recipe["optimizer"] == "adamw":
        return torch.optim.AdamW(
            model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"], fused=True
        )
    return torch.optim.RMSprop(model.parameters(), lr=recipe["lr"], alpha=0.9, eps=1e-7)


def train_step(model, optimizer, images, labels, smoothing: float, autocast=contextlib.nullcontext):
    """One step on a batch of uint8 images: forward (under `autocast`), loss, backward, update."""
    with autocast():
        logits = model(prepare(images))
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def prepare(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255).contiguous(memory_format=torch.channels_last)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=sorted(NETS), default="fast")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="bfloat16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--epochs", type=int, help="default: the recipe's")
    parser.add_argument("--limit", type=int, help="train on the first N training examples")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args(argv)
    recipe = RECIPES[args.net] | ({"epochs": args.epochs} if args.epochs else {})
    torch.manual_seed(args.seed)
    (x, y), (x_val, y_val), (x_test, y_test) = load(args.data, recipe["val_split"], args.seed)
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    model = NETS[args.net]().to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    steps = math.ceil(len(x) / recipe["batch"])
    total, warmup = steps * recipe["epochs"], int(recipe["warmup_epochs"] * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: schedule(step, warmup, total) if warmup else 1.0
    )
    step = torch.compile(model) if args.compile else model
    bf16 = args.precision == "bfloat16"

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    first_step = None
    epoch_seconds = []
    startup = time.time() - T0  # imports, data, model and optimizer
    fit_started = time.perf_counter()
    for _ in range(recipe["epochs"]):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x), recipe["batch"]):
            batch = order[i : i + recipe["batch"]]
            train_step(step, optimizer, x[batch], y[batch], recipe["smoothing"], autocast)
            scheduler.step()
            if first_step is None:
                first_step = time.time() - T0
        evaluate(model, x_val, y_val, autocast)  # the validation pass Keras' fit makes
        epoch_seconds.append(time.perf_counter() - started)
    fit = time.perf_counter() - fit_started
    test_loss, test_accuracy = evaluate(model, x_test, y_test, autocast)
    result = {
        "net": args.net, "precision": args.precision, "compile": args.compile,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "startup_seconds": startup, "first_step_seconds": first_step, "fit_seconds": fit,
        "epoch_seconds": epoch_seconds,
        "test_loss": test_loss, "test_accuracy": test_accuracy,
    }  # fmt: skip
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
