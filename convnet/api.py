"""The entry points the CLI and the server call. They return results and never exit."""

from __future__ import annotations

import io
from pathlib import Path

from convnet.config import TrainConfig, load_config
from convnet.data import load_train_test
from convnet.data.sources import ensure_fashion_mnist
from convnet.models.registry import create_model, list_presets  # noqa: F401  (re-exported)
from convnet.runs import Run


def train(
    config: TrainConfig | str | Path | None = None,
    *,
    command: list[str] | None = None,
    verbose: int | str = "auto",
    **settings,
):
    """Trains a preset and writes a run folder.

    Args:
        config: a TrainConfig, or the path of a YAML config file, or None for the defaults.
        command: the command line to record in the manifest.
        verbose: Keras' fit verbosity.
        **settings: any config or recipe key (`preset="fast"`, `epochs=3`, `train="a.csv"`, ...),
            applied over `config`.

    Returns:
        A TrainResult: run folder, test loss, test accuracy, wall seconds.
    """
    from convnet.training.trainer import train as fit

    if not isinstance(config, TrainConfig):
        config = load_config(config, settings)
    elif settings:
        config = load_config(None, config.resolved() | settings)
    return fit(config, command=command, verbose=verbose)


def evaluate(run: str | Path, test: str | None = None) -> dict:
    """Test loss and accuracy of a run's model, on its own test set or on `test`.

    The result is saved as the run's `metrics.json` when it is the run's own test set.
    """
    from convnet.evaluation import evaluate as score

    run = Run(run)
    config = run.config()
    _, test_set = load_train_test(
        config["train"],
        test or config["test"],
        config["format"],
        config["label_column"],
        config["class_names"],
        config["data_dir"],
    )
    metrics = score(run.load_model(), test_set, flip_tta=config.get("flip_tta", False))
    if test is None:
        run.write_json("metrics.json", run.read_json("metrics.json") | metrics)
    return metrics


def predict(run: str | Path, files: list[str | Path], top_k: int = 3) -> list[dict]:
    """Classifies image, .npy or CSV files with a run's model.

    Returns:
        One dict per input: {"file", "class", "probability", "top": [{"class", "probability"}]}.
    """
    from convnet.evaluation import predict_proba
    from convnet.inputs import load_inputs

    run = Run(run)
    model = run.load_model()
    data = run.read_json("manifest.json").get("data", {})
    names, x = load_inputs(files, model.input_shape[1:], data.get("background_is_light", False))
    probabilities = predict_proba(model, x, flip_tta=run.config().get("flip_tta", False))
    return [
        top_classes(name, p, data.get("class_names"), top_k)
        for name, p in zip(names, probabilities, strict=True)
    ]


def top_classes(name: str, probabilities, class_names: list[str] | None, top_k: int) -> dict:
    """The `top_k` most probable classes for one input."""
    class_names = class_names or [str(i) for i in range(len(probabilities))]
    order = probabilities.argsort()[::-1][:top_k]
    top = [{"class": class_names[i], "probability": float(probabilities[i])} for i in order]
    return {"file": name, **top[0], "top": top}


def summary(preset: str, input_shape=(28, 28, 1), num_classes: int = 10) -> str:
    """The Keras summary of a preset's model."""
    model = create_model(preset, input_shape, num_classes)
    lines = io.StringIO()
    model.summary(print_fn=lambda line, **_: lines.write(line + "\n"))
    return lines.getvalue()


def fetch(data_dir: str | Path | None = None) -> Path:
    """Makes sure Fashion-MNIST is on this machine; returns its folder."""
    return ensure_fashion_mnist(data_dir)
