"""The `convnet` command's parser: its subcommands and their flags, each handled by its function
in `convnet.cli.handlers`.
"""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version

from convnet import backend
from convnet.cli import handlers
from convnet.cli.flags import (
    UNSAFE_HELP,
    add_config_flags,
    add_json_flag,
    add_no_tta_flag,
    add_tracking_flags,
    port,
)
from convnet.config import TRAINING_ONLY
from convnet.run_folders import RUNS_ROOT
from convnet.tuning.space import OBJECTIVES, PRUNERS


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand with its flags; each sets `handler`, the function that runs it."""
    parser = argparse.ArgumentParser(
        prog="convnet",
        description="Train, evaluate and serve Keras CNNs for image classification.",
    )
    parser.add_argument(
        "--version", action=_Version, nargs=0, default=argparse.SUPPRESS, help="print the version"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the frameworks' start-up messages (TensorFlow's oneDNN and absl lines)",
    )
    parser.add_argument(
        "--print-completion",
        action=_Completion,
        choices=("bash", "zsh"),
        default=argparse.SUPPRESS,  # not a config key: absent unless given, as --version
        help="print a shell completion script (docs/install.md: where to put it)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for add_commands in (
        _add_run_commands,
        _add_tune_command,
        _add_data_commands,
        _add_report_commands,
        _add_serving_commands,
    ):
        add_commands(commands)
    return parser


class _Completion(argparse.Action):
    """Prints shtab's completion script for the whole parser and exits; shtab is imported only
    then, so other commands do not pay for it."""

    def __call__(self, parser, namespace, values, option_string=None):
        import shtab

        print(shtab.complete(parser, values, preamble=""), end="")
        parser.exit(0)


class _Version(argparse.Action):
    """Prints convnet's version and the Keras backend it would use; reads the package metadata
    only when asked (it costs an import that `--help` should not pay)."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            found = version("convnet")
        except PackageNotFoundError:
            found = "(not installed)"
        print(f"convnet {found} (Keras backend: {backend.select()})")
        parser.exit()


def _add_run_commands(commands) -> None:
    """train, evaluate, predict, runs."""
    train = commands.add_parser("train", help="train a preset and write a run folder")
    train.set_defaults(handler=handlers.train)
    add_config_flags(train)
    add_json_flag(train)
    train.add_argument(
        "--resume",
        metavar="RUN",
        help="continue an interrupted run folder with its own config (no other settings)",
    )
    tracking = add_tracking_flags(train, "the run")
    tracking.add_argument(
        "--mlflow-register",
        metavar="NAME",
        help="register the model that --mlflow logs under NAME in MLflow's model registry, "
        "as a new version",
    )

    evaluate = commands.add_parser("evaluate", help="test loss and accuracy of a run")
    evaluate.set_defaults(handler=handlers.evaluate)
    evaluate.add_argument("run")
    evaluate.add_argument("--test", help="another test set (default: the run's own)")
    add_json_flag(evaluate)
    add_no_tta_flag(evaluate)
    evaluate.add_argument("--unsafe", action="store_true", help=UNSAFE_HELP)

    _add_predict_command(commands)

    runs = commands.add_parser("runs", help="list run folders: status, preset, accuracy, date")
    runs.set_defaults(handler=handlers.runs)
    runs.add_argument(
        "dir", nargs="?", default=RUNS_ROOT, help=f"folder of runs (default: {RUNS_ROOT})"
    )
    add_json_flag(runs)


def _add_predict_command(commands) -> None:
    predict = commands.add_parser(
        "predict", help="classify images, .npy or CSV files, or folders of images"
    )
    predict.set_defaults(handler=handlers.predict)
    predict.add_argument("run")
    predict.add_argument(
        "files",
        nargs="+",
        metavar="PATH",
        help="image, .npy or .csv files, and folders (searched recursively for images)",
    )
    predict.add_argument(
        "--top-k", type=int, default=3, help="the most likely classes listed per input (default 3)"
    )
    predict.add_argument(
        "--out",
        help="write the predictions to this file as the batches finish (.csv or .jsonl), "
        "complete or not at all",
    )
    predict.add_argument(
        "--format",
        choices=("csv", "jsonl", "kaggle"),
        help="the output's format (default: from --out's extension); kaggle writes "
        "ImageId,Label for the rows of one test CSV",
    )
    predict.add_argument(
        "--batch-size", type=int, default=1024, help="inputs read together (default 1024)"
    )
    add_json_flag(predict)
    add_no_tta_flag(predict)
    predict.add_argument("--unsafe", action="store_true", help=UNSAFE_HELP)


def _add_tune_command(commands) -> None:
    tune = commands.add_parser(
        "tune",
        help="search a preset's recipe with Optuna; run it again on its --out to continue",
    )
    tune.set_defaults(handler=handlers.tune)
    search = tune.add_argument_group("search")
    search.add_argument(
        "--trials", type=int, help="finished trials to stop at (default: 20, or the tune's own)"
    )
    search.add_argument("--space", help="YAML file replacing or adding to the preset's space")
    search.add_argument(
        "--objective",
        choices=list(OBJECTIVES),
        help="what to optimize (default: val_accuracy)",
    )
    search.add_argument(
        "--objectives",
        help="two objectives, comma-separated, for a Pareto front: val_accuracy,train_seconds",
    )
    search.add_argument(
        "--time-budget", type=float, help="seconds each worker searches for at most"
    )
    search.add_argument("--pruner", choices=PRUNERS, help="(default: median)")
    where = tune.add_argument_group("workers and storage (docs/tuning.md)")
    where.add_argument("--workers", type=int, default=1, help="worker processes here (default: 1)")
    where.add_argument(
        "--storage", help="database URL shared by machines (default: study.db in --out)"
    )
    where.add_argument("--study", help="the study's name (default: convnet)")
    where.add_argument(
        "--heartbeat",
        type=int,
        default=None,
        help="seconds between a trial's heartbeats; a killed worker's trial is run again "
        "after twice that (default: 30, or a continued tune's own)",
    )
    where.add_argument("--out", help="tune folder (default: tunes/PRESET-TIME)")
    tune.add_argument(
        "--quiet", action="store_true", help="no line on stderr as each trial finishes"
    )
    add_tracking_flags(tune, "each trial")
    add_config_flags(tune, skip=("out", "time_budget"))
    add_json_flag(tune)


def _add_data_commands(commands) -> None:
    """presets, summary, fetch, export-csv."""
    presets = commands.add_parser("presets", help="list the presets")
    presets.set_defaults(handler=handlers.presets)

    summary = commands.add_parser("summary", help="print a preset's layers")
    summary.set_defaults(handler=handlers.summary)
    summary.add_argument("preset")

    fetch = commands.add_parser(
        "fetch", help="download a dataset by name, checked, to train on with --train NAME"
    )
    fetch.set_defaults(handler=handlers.fetch)
    fetch.add_argument(
        "name",
        nargs="?",
        default="fashion-mnist",
        help="fashion-mnist (default), mnist, kmnist, emnist-letters, or quickdraw:CLASS,CLASS",
    )
    fetch.add_argument("--data-dir", help="keep it in this folder (default: ~/.cache/convnet/NAME)")

    export_csv = commands.add_parser(
        "export-csv", help="write Fashion-MNIST as the Kaggle CSVs (label,pixel1..pixel784)"
    )
    export_csv.set_defaults(handler=handlers.export_csv)
    export_csv.add_argument("out_dir", nargs="?", default=".", help="folder (default: .)")
    export_csv.add_argument("--data-dir")


def _add_report_commands(commands) -> None:
    """report, compare, lr-find."""
    report = commands.add_parser("report", help="write a run's plots and report.html")
    report.set_defaults(handler=handlers.report)
    report.add_argument("run")

    compare = commands.add_parser("compare", help="one HTML page comparing several runs")
    compare.set_defaults(handler=handlers.compare)
    compare.add_argument("runs", nargs="+", metavar="RUN")
    compare.add_argument("--out", default="compare.html", help="HTML file (default: compare.html)")

    lr_find = commands.add_parser(
        "lr-find", help="learning-rate range test: plot loss against rate"
    )
    lr_find.set_defaults(handler=handlers.lr_find)
    add_config_flags(lr_find, skip=TRAINING_ONLY)
    lr_find.add_argument(
        "--plot", default="lr_find.png", help="PNG to write (default: lr_find.png)"
    )
    lr_find.add_argument("--steps", type=int, default=200, help="batches at most (default: 200)")
    lr_find.add_argument("--min-lr", type=float, default=1e-7, help="first rate (default: 1e-7)")
    lr_find.add_argument("--max-lr", type=float, default=10.0, help="last rate (default: 10)")
    add_json_flag(lr_find)


def _add_serving_commands(commands) -> None:
    """serve, export."""
    _add_serve_command(commands)
    _add_export_command(commands)


def _add_serve_command(commands) -> None:
    serve = commands.add_parser("serve", help="HTTP prediction service and web page for a run")
    serve.set_defaults(handler=handlers.serve)
    serve.add_argument("run")
    serve.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    serve.add_argument("--port", type=port, default=8000, help="port (default: 8000)")
    serve.add_argument(
        "--grpc-port",
        type=port,
        metavar="PORT",
        help="also serve the Open Inference Protocol over gRPC (KServe's and Triton's gRPC "
        "clients) on this port of --host, with the same model and API key (default: no gRPC)",
    )
    serve.add_argument(
        "--engine",
        choices=["keras", "onnx"],
        default="keras",
        help="what computes the probabilities: keras or onnx (default: keras)",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds for a request's headers to arrive before the connection closes (default: 10)",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds for a request's whole body to arrive before a 408 (default: 30)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=256,
        help="open connections per worker past which requests get a 503 (default: 256)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes serving the same port, each with the model loaded (default: 1)",
    )
    serve.add_argument(
        "--api-key",
        help="key that requests must send as 'Authorization: Bearer KEY' or 'X-API-Key: KEY' "
        "(default: $CONVNET_API_KEY; required off loopback)",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="serve an address other than loopback without an API key, to anyone",
    )


def _add_export_command(commands) -> None:
    export = commands.add_parser(
        "export", help="write a run's model as ONNX, a SavedModel or LiteRT"
    )
    export.set_defaults(handler=handlers.export)
    export.add_argument("run")
    export.add_argument(
        "--format",
        choices=["onnx", "savedmodel", "litert"],
        default="onnx",
        help="onnx, savedmodel or litert (default: onnx)",
    )
    export.add_argument(
        "--out",
        help="destination (default: RUN/model.onnx, RUN/saved_model or RUN/model.tflite)",
    )
    export.add_argument(
        "--quantize",
        choices=["none", "float16", "dynamic", "int8"],
        default="none",
        help="LiteRT only: float16 weights, int8 weights (dynamic), or int8 weights and "
        "activations calibrated on the run's validation images (default: none)",
    )
    export.add_argument(
        "--no-tta",
        dest="tta",
        action="store_false",
        help="export one view: do not average the run's test-time views in the graph",
    )
