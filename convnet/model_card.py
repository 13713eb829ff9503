"""Model cards: `MODEL_CARD.md`, written by `convnet export` with every export, in Hugging Face's
layout (YAML front matter, then Markdown sections), from the run folder's own records.

The front matter holds what the Hub reads (`library_name`, `pipeline_tag`, `license`, `tags`,
`datasets`, and `model-index` with the test accuracy and loss of metrics.json) and a `convnet`
section for programs (preset, format, class names, pixel range, views). The sections say what the
model is, what it is for and not for, what it was trained on and how, how it scored, and a
snippet that runs it with its class names. Paths in the card are relative to the card's folder:
beside an ONNX or LiteRT file, and inside a SavedModel's folder (so the folder carries its card
and both are replaced together).
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from convnet.errors import ConfigError
from convnet.model_card_snippets import SNIPPETS
from convnet.models.registry import get_preset
from convnet.runs import Run, source_name

CARD_FILE = "MODEL_CARD.md"
LABELS_FILE = "labels.txt"
# The first line of the body: an export replaces a card that holds it, and refuses any other
# MODEL_CARD.md (someone's own notes).
MARKER = (
    "<!-- Written by `convnet export` from the run's records; the next export here replaces it. -->"
)
# Data sets convnet fetches itself, by the name a run's config gives (None: Fashion-MNIST, the
# default; "quickdraw:cat,dog" is "quickdraw"): the Hub's id where the makers publish there, and
# the licence, in the Hub's spelling, which weights trained on them inherit (Fashion-MNIST: MIT;
# Kuzushiji-MNIST: CC BY-SA 4.0; Quick, Draw!: CC BY 4.0, as their makers publish them). Others,
# MNIST's and EMNIST's included, have no licence their makers state: "unknown", as the Hub says.
FASHION_MNIST = {"name": "Fashion-MNIST", "id": "zalando-datasets/fashion_mnist", "license": "mit"}
KNOWN_DATA = {
    None: FASHION_MNIST,
    "fashion-mnist": FASHION_MNIST,
    "kmnist": {"name": "Kuzushiji-MNIST", "license": "cc-by-sa-4.0"},
    "quickdraw": {"name": "Quick, Draw!", "license": "cc-by-4.0"},
}
FORMAT_NAMES = {"onnx": "ONNX", "savedmodel": "TensorFlow SavedModel", "litert": "LiteRT (TFLite)"}
FORMAT_TAGS = {"onnx": "onnx", "savedmodel": "tf-saved-model", "litert": "tflite"}
# metrics.json's keys shown under "Evaluation results", in this order.
METRICS = {
    "test_accuracy": "accuracy",
    "test_loss": "loss (cross-entropy)",
    "test_balanced_accuracy": "balanced accuracy",
    "test_macro_f1": "macro F1",
    "test_ece": "expected calibration error",
}


@dataclass(frozen=True)
class Export:
    """What the exporter knows of an export that the run folder does not record.

    Attributes:
        format: "onnx", "savedmodel" or "litert".
        file: the exported file's name, or "." for a SavedModel (the card is inside it).
        input_shape: the model's (H, W, C).
        class_names: the names of the outputs, in order.
        pixel_range: (low, high), the values the run's data spanned, which the model takes
            scaled to 0-255.
        parameters: the model's parameter count.
        layers: the model's layers in order, as "Conv2D(32)", "Dense(10)", ...
        views: the test-time views the graph averages.
        run_views: the views the run averaged as it scored its test set (metrics.json).
        quantize: the LiteRT quantization, or "none".
    """

    format: str
    file: str
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    pixel_range: tuple[float, float]
    parameters: int
    layers: tuple[str, ...]
    views: int = 1
    run_views: int = 1
    quantize: str = "none"


def model_card(run: Run, export: Export) -> str:
    """The text of the model card of `export` of `run`.

    Raises:
        RunError: a record of the run is damaged.
    """
    facts = _Facts(run, export)
    sections = [
        _description(facts),
        _intended_use(facts),
        _training(facts),
        _evaluation(facts),
        _how_to_use(facts),
    ]
    return f"---\n{_front_matter(facts)}---\n{MARKER}\n\n" + "\n\n".join(sections) + "\n"


def described_export(text: str) -> dict | None:
    """The `convnet` section of a card's front matter (which run, which file, ...) when an
    export wrote the card; None for any other text (someone's own notes, a damaged card)."""
    if MARKER not in text:
        return None
    try:
        header = yaml.safe_load(text.split("---\n", 2)[1])
    except (IndexError, yaml.YAMLError):
        return None
    section = header.get("convnet") if isinstance(header, dict) else None
    return section if isinstance(section, dict) else None


def run_label(run: Run) -> str:
    """Which run a card describes: its folder's name and when it started training."""
    started = run.read_json("manifest.json").get("started", "at an unrecorded time")
    return f"{run.path.name}, started {started}"


class _Facts:
    """The run's records, read once for the sections."""

    def __init__(self, run: Run, export: Export):
        self.run, self.export = run, export
        self.config = run.config()
        self.recipe = self.config.recipe()
        self.manifest = run.read_json("manifest.json")
        self.metrics = run.read_json("metrics.json")
        self.data = self.manifest.get("data", {})
        # The test set by its file's name: a card is published, the machine's folders are not.
        self.test_data = source_name(
            self.metrics.get("test_data") or self.data.get("test", {}).get("source")
        )
        self.preset = self.manifest.get("preset") or self.config.preset
        train = self.config.train
        self.dataset = KNOWN_DATA.get(train.partition(":")[0] if train else None)
        self.kind = "colour" if export.input_shape[-1] == 3 else "greyscale"
        self.background = "light" if self.data.get("background_is_light") else "dark"


def _front_matter(facts: _Facts) -> str:
    export, metrics = facts.export, facts.metrics
    dataset = facts.dataset or {}
    header = {
        "library_name": "keras",
        "pipeline_tag": "image-classification",
        "license": dataset.get("license", "unknown"),
        "tags": ["convnet", "keras", "image-classification", FORMAT_TAGS[export.format]],
    }
    if "id" in dataset:
        header["datasets"] = [dataset["id"]]
    if "test_accuracy" in metrics and "test_loss" in metrics:
        header["metrics"] = ["accuracy"]
        header["model-index"] = [{"name": facts.run.path.name, "results": [_result(facts)]}]
    header["convnet"] = {
        "run": run_label(facts.run),
        "preset": facts.preset,
        "format": export.format,
        "file": export.file,
        "input_shape": list(export.input_shape),
        "pixel_range": list(export.pixel_range),
        "tta_views": export.views,
        "quantize": export.quantize,
        "class_names": list(export.class_names),
    }
    return yaml.safe_dump(header, sort_keys=False, allow_unicode=True)


def _result(facts: _Facts) -> dict:
    """The test set's scores, as the Hub's `model-index` records a result."""
    dataset = facts.dataset or {}
    return {
        "task": {"type": "image-classification", "name": "Image Classification"},
        "dataset": {
            "name": dataset.get("name") or facts.test_data or "custom",
            "type": dataset.get("id", "custom"),
            "split": "test",
        },
        "metrics": [
            {"type": "accuracy", "value": facts.metrics["test_accuracy"], "name": "Test accuracy"},
            {"type": "loss", "value": facts.metrics["test_loss"], "name": "Test loss"},
        ],
    }


def _description(facts: _Facts) -> str:
    export, names = facts.export, facts.export.class_names
    low, high = export.pixel_range
    scaled = (
        "as the run's training data held them"
        if (low, high) == (0, 255)
        else f"the run's training data held values {low} to {high}, scaled to 0-255 as it was "
        "read: scale new images the same way"
    )
    lines = [
        f"# {facts.run.path.name}: a `{facts.preset}` image classifier",
        "",
        f"The {FORMAT_NAMES[export.format]} export of the convnet run `{facts.run.path.name}`: "
        f"{export.input_shape[0]}x{export.input_shape[1]} {facts.kind} images into {len(names)} "
        "classes.",
        "",
        "## Model description",
        "",
        f"- **Preset**: `{facts.preset}`{_preset_description(facts.preset)}",
        f"- **Architecture**: {' → '.join(export.layers)}; {export.parameters:,} parameters.",
        f"- **Input**: `uint8` pixels of shape (N, {', '.join(map(str, export.input_shape))}), "
        f"0-255 ({scaled}); the model rescales them itself. {_background(facts)}",
        f"- **Output**: `float32` probabilities of shape (N, {len(names)}), one per class in "
        "the order below.",
        f"- **Test-time views**: {_views(export)}",
    ]
    if export.format == "litert":
        quantized = "" if export.quantize == "none" else " The scores below are the float model's."
        lines.append(f"- **Quantization**: {_QUANTIZATIONS[export.quantize]}{quantized}")
    lines += [
        f"- **Class names**: {_LABELS[export.format]}",
        "",
        "| index | class |",
        "| --- | --- |",
    ]
    lines += [f"| {i} | {_cell(name)} |" for i, name in enumerate(names)]
    return "\n".join(lines)


_QUANTIZATIONS = {
    "none": "none (float32).",
    "float16": "float16 weights, float32 compute.",
    "dynamic": "int8 weights, float32 activations (dynamic range).",
    "int8": "int8 weights and activations, calibrated on the run's validation images; "
    "input and output stay as above.",
}
_LABELS = {
    "onnx": "in the file's `metadata_props`: `class_names` (a JSON list), with `pixel_range` "
    "(JSON [low, high]) and `convnet_tta_views`.",
    "savedmodel": "the `serving_default` signature returns `class` (the most likely class's "
    "name, a string per image) beside `probabilities`; `serve` returns the probabilities alone.",
    "litert": f"`{LABELS_FILE}` beside the model, one name per line in index order (LiteRT "
    "metadata is not embedded).",
}


def _preset_description(preset: str) -> str:
    try:
        return f": {get_preset(preset).description}"
    except ConfigError:  # a preset registered by another program, not this one
        return ""


def _background(facts: _Facts) -> str:
    other = "dark" if facts.background == "light" else "light"
    return (
        f"The training images have a {facts.background} background: invert images with a "
        f"{other} one first (`convnet predict` and `serve` do)."
    )


def _views(export: Export) -> str:
    if export.views == 1:
        averaged = "one view of each image"
    else:
        averaged = f"the graph averages {export.views} views of each image (shifts, mirrors)"
    if export.views == export.run_views:
        return f"{averaged}, as the run scored its test set."
    return (
        f"{averaged}; the run scored its test set over {export.run_views}, so this export's "
        "scores may differ slightly from those below."
    )


def _intended_use(facts: _Facts) -> str:
    export, names = facts.export, facts.export.class_names
    height, width, _ = export.input_shape
    test = facts.test_data
    return "\n".join(
        [
            "## Intended use and limits",
            "",
            f"Classifying {height}x{width} {facts.kind} images like its training data's (MNIST-"
            f"like: one object, centred, on a plain {facts.background} background) into one of its "
            f"{len(names)} classes: {', '.join(names)}.",
            "",
            '- It knows only these classes. Every image gets one of them (there is no "none of '
            'these"): an image of anything else gets a wrong answer, often a confident one.',
            f"- Images of another size must be fitted to {height}x{width} first (`convnet "
            "predict` and `serve` trim, scale and centre them); photographs and cluttered scenes "
            "are far from what it saw.",
            f"- It was evaluated only on {f'`{test}`' if test else 'its test set'}. It was not "
            "evaluated on data from other sources, under distribution shift, on adversarial "
            "inputs, or for fairness across groups of people: check it on your own data before "
            "relying on it.",
        ]
    )


def _training(facts: _Facts) -> str:
    recipe, metrics, train = facts.recipe, facts.metrics, facts.data.get("train", {})
    source = f"`{source_name(train['source'])}`" if train.get("source") else "not recorded"
    if facts.dataset:
        source = f"{facts.dataset['name']} (licence {facts.dataset['license']})"
    if "examples" in train:
        source += f", {train['examples']:,} images (SHA-256 `{train.get('sha256', '?')[:16]}…`)"
    held = f"{recipe.val_split:.0%} of it held out (seeded)" if recipe.val_split else "none"
    trained = metrics.get("epochs", recipe.epochs)
    rate = "default" if recipe.learning_rate is None else f"{recipe.learning_rate:g}"
    versions = facts.manifest.get("versions", {})
    software = ("convnet", "keras", versions.get("keras_backend"), "python")
    rows = [
        ("epochs", trained if trained == recipe.epochs else f"{trained} of {recipe.epochs}"),
        ("batch size", recipe.batch_size),
        ("optimizer", f"{recipe.optimizer}, learning rate {rate}, {recipe.schedule} schedule"),
        ("regularization", f"weight decay {recipe.weight_decay:g}, label smoothing "
         f"{recipe.label_smoothing:g}, augmentation: {_augmentation(facts)}"),
        ("precision", facts.manifest.get("precision", recipe.precision)),
        ("seed", facts.config.seed),
        ("calibration", f"temperature {metrics['temperature']:.3g}, folded into the softmax"
         if "temperature" in metrics else "none"),
        ("software", ", ".join(f"{k} {versions[k]}" for k in software if k in versions) or "?"),
    ]  # fmt: skip
    lines = ["## Training data", "", f"- **Source**: {source}", f"- **Validation**: {held}"]
    lines += ["", "## Training procedure", "", "| setting | value |", "| --- | --- |"]
    lines += [f"| {name} | {_cell(value)} |" for name, value in rows]
    return "\n".join(lines)


def _augmentation(facts: _Facts) -> str:
    """The augmentations the run trained with; None values were chosen from the data."""
    augment = facts.config.resolved()["augment"]
    used = {k: ("auto" if v is None else v) for k, v in augment.items() if v not in (0, False)}
    return ", ".join(f"{k} {v}" for k, v in used.items()) or "none"


def _evaluation(facts: _Facts) -> str:
    metrics = facts.metrics
    if "test_accuracy" not in metrics:
        return "## Evaluation results\n\nThe run recorded no test scores (no metrics.json)."
    test = f"`{facts.test_data}`" if facts.test_data else "the run's test set"
    examples = metrics.get("test_examples")
    lines = [
        "## Evaluation results",
        "",
        f"On {test}" + (f" ({examples:,} images)" if examples else "") + ", from metrics.json:",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    lines += [
        f"| {label} | {metrics[key]:.4f} |" for key, label in METRICS.items() if key in metrics
    ]
    if metrics.get("per_class"):
        lines += [
            "",
            "| class | precision | recall | F1 | support |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {_cell(row['class'])} | {row['precision']:.3f} | {row['recall']:.3f} | "
            f"{row['f1']:.3f} | {row['support']} |"
            for row in metrics["per_class"]
        ]
    return "\n".join(lines)


def _how_to_use(facts: _Facts) -> str:
    export = facts.export
    shape = ", ".join(map(str, (1, *export.input_shape)))
    code = SNIPPETS[export.format].format(file=export.file, shape=shape, labels=LABELS_FILE)
    return "\n".join(
        [
            "## How to use",
            "",
            "Paths are relative to this card's folder. `pixels` stands for your images: uint8, "
            "0-255, as under Input.",
            "",
            "```python",
            code.strip(),
            "```",
        ]
    )


def _cell(value) -> str:
    """`value` as a Markdown table cell: a "|" in a class name would end the cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")
