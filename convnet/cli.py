"""The `convnet` command: argparse subcommands -> config -> convnet.api. No logic of its own."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn

from convnet import api, backend, framework
from convnet.config import RECIPE_CHOICES, TRAINING_ONLY, config_fields, field_type, load_config
from convnet.errors import ConvnetError, ConvnetWarning
from convnet.models.recipe import RECIPE_FIELDS
from convnet.models.registry import get_preset, list_presets
from convnet.runs import RUNS_ROOT
from convnet.tuning.space import OBJECTIVES, PRUNERS

# How `train --help` groups its flags; every other setting belongs to the recipe.
FLAG_GROUPS = {
    "data": (
        "train",
        "test",
        "format",
        "label_column",
        "class_names",
        "data_dir",
        "limit",
        "val_split",
        "stratify",
        "test_split",
        "pixel_range",
        "stream",
        "class_weight",
    ),
    "augmentation in training (`flip` also mirrors among the test-time views)": (
        "translate",
        "flip",
        "rotate",
        "zoom",
    ),
    "devices and processes (docs/distributed.md)": (
        "backend",
        "devices",
        "num_processes",
        "process_id",
        "coordinator",
        "join_timeout",
    ),
    "output": ("out",),
}


METAVARS = {int: "N", float: "X"}  # --epochs N, --learning-rate X


def _add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per config and recipe field but `skip`, kebab-case, in groups; only flags given
    apply."""
    parser.add_argument("--config", help="YAML file of settings (flags override it)")
    groups = {name: parser.add_argument_group(name) for name in FLAG_GROUPS}
    recipe = parser.add_argument_group("model and recipe (a recipe's default is the preset's)")
    for field in config_fields():
        if field.name in skip:
            continue
        group = next((groups[g] for g, names in FLAG_GROUPS.items() if field.name in names), recipe)
        kind = field_type(field.name)
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "")
        if field.name in RECIPE_FIELDS:
            help_text += f" ({_preset_defaults(field.name)})"
        choices = field.metadata.get("choices") or RECIPE_CHOICES.get(field.name)
        if kind is bool:
            group.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            group.add_argument(
                flag,
                type=str.lower if choices else kind,  # --optimizer AdamW, as YAML allows
                default=argparse.SUPPRESS,
                help=help_text,
                choices=choices,
                metavar="{" + ",".join(choices) + "}"
                if choices
                else METAVARS.get(kind, field.name.upper()),
            )


def _preset_defaults(name: str) -> str:
    """Each preset's default for a recipe field: "seed 15, fast 5, best 24"."""
    presets = sorted(list_presets(), key=lambda p: (p != "seed", p != "fast", p))  # as in docs

    def shown(value) -> str:
        if value is None:
            return "auto"
        if isinstance(value, bool):
            return "on" if value else "off"
        return f"{value:g}" if isinstance(value, float) else str(value)

    return ", ".join(f"{p} {shown(getattr(get_preset(p).recipe, name))}" for p in presets)


_UNSAFE_HELP = "load a model that carries Python code (Lambda layers); only for trusted files"


def _parser() -> argparse.ArgumentParser:
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


def _add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def _add_no_tta_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-tta",
        dest="tta",
        action="store_false",
        help="one model pass per image: ignore the run's test-time views (flip, shift_tta)",
    )


def _add_run_commands(commands) -> None:
    """train, evaluate, predict, runs."""
    train = commands.add_parser("train", help="train a preset and write a run folder")
    train.set_defaults(handler=_train)
    _add_config_flags(train)
    _add_json_flag(train)
    train.add_argument(
        "--resume",
        metavar="RUN",
        help="continue an interrupted run folder with its own config (no other settings)",
    )
    tracking = _add_tracking_flags(train, "the run")
    tracking.add_argument(
        "--mlflow-register",
        metavar="NAME",
        help="register the model that --mlflow logs under NAME in MLflow's model registry, "
        "as a new version",
    )

    evaluate = commands.add_parser("evaluate", help="test loss and accuracy of a run")
    evaluate.set_defaults(handler=_evaluate)
    evaluate.add_argument("run")
    evaluate.add_argument("--test", help="another test set (default: the run's own)")
    _add_json_flag(evaluate)
    _add_no_tta_flag(evaluate)
    evaluate.add_argument("--unsafe", action="store_true", help=_UNSAFE_HELP)

    predict = commands.add_parser(
        "predict", help="classify images, .npy or CSV files, or folders of images"
    )
    predict.set_defaults(handler=_predict)
    predict.add_argument("run")
    predict.add_argument(
        "files",
        nargs="+",
        metavar="PATH",
        help="image, .npy or .csv files, and folders (searched recursively for images)",
    )
    predict.add_argument("--top-k", type=int, default=3)
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
    predict.add_argument("--batch-size", type=int, default=1024, help="inputs read together")
    _add_json_flag(predict)
    _add_no_tta_flag(predict)
    predict.add_argument("--unsafe", action="store_true", help=_UNSAFE_HELP)

    runs = commands.add_parser("runs", help="list run folders: status, preset, accuracy, date")
    runs.set_defaults(handler=_runs)
    runs.add_argument(
        "dir", nargs="?", default=RUNS_ROOT, help=f"folder of runs (default: {RUNS_ROOT})"
    )
    _add_json_flag(runs)


def _add_tracking_flags(parser: argparse.ArgumentParser, what: str):
    """--tensorboard and --mlflow, in a group that it returns."""
    tracking = parser.add_argument_group("tracking (not part of the run's config)")
    tracking.add_argument(
        "--tensorboard",
        nargs="?",
        const="",
        metavar="DIR",
        help=f"write TensorBoard logs of {what}: to DIR/RUN-NAME, or without DIR to "
        "RUN/tensorboard",
    )
    tracking.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        metavar="URI",
        help=f"log {what} to MLflow at URI (default: sqlite:///mlruns.db, a database file in "
        "the current directory); needs pip install 'convnet[track]'",
    )
    return tracking


def _add_tune_command(commands) -> None:
    tune = commands.add_parser(
        "tune",
        help="search a preset's recipe with Optuna; run it again on its --out to continue",
    )
    tune.set_defaults(handler=_tune)
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
    _add_tracking_flags(tune, "each trial")
    _add_config_flags(tune, skip=("out", "time_budget"))
    _add_json_flag(tune)


def _add_data_commands(commands) -> None:
    """presets, summary, fetch, export-csv."""
    presets = commands.add_parser("presets", help="list the presets")
    presets.set_defaults(handler=_presets)

    summary = commands.add_parser("summary", help="print a preset's layers")
    summary.set_defaults(handler=lambda args: print(api.summary(args.preset), end=""))
    summary.add_argument("preset")

    fetch = commands.add_parser(
        "fetch", help="download a dataset by name, checked, to train on with --train NAME"
    )
    fetch.set_defaults(
        handler=lambda args: print(f"{args.name}: {api.fetch(args.name, args.data_dir)}")
    )
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
    export_csv.set_defaults(
        handler=lambda args: print("\n".join(map(str, api.export_csv(args.out_dir, args.data_dir))))
    )
    export_csv.add_argument("out_dir", nargs="?", default=".", help="folder (default: .)")
    export_csv.add_argument("--data-dir")


def _add_report_commands(commands) -> None:
    """report, compare, lr-find."""
    report = commands.add_parser("report", help="write a run's plots and report.html")
    report.set_defaults(handler=lambda args: print(f"report: {api.report(args.run)}"))
    report.add_argument("run")

    compare = commands.add_parser("compare", help="one HTML page comparing several runs")
    compare.set_defaults(handler=_compare)
    compare.add_argument("runs", nargs="+", metavar="RUN")
    compare.add_argument("--out", default="compare.html", help="HTML file (default: compare.html)")

    lr_find = commands.add_parser(
        "lr-find", help="learning-rate range test: plot loss against rate"
    )
    lr_find.set_defaults(handler=_lr_find)
    _add_config_flags(lr_find, skip=TRAINING_ONLY)
    lr_find.add_argument(
        "--plot", default="lr_find.png", help="PNG to write (default: lr_find.png)"
    )
    lr_find.add_argument("--steps", type=int, default=200, help="batches at most (default: 200)")
    lr_find.add_argument("--min-lr", type=float, default=1e-7, help="first rate (default: 1e-7)")
    lr_find.add_argument("--max-lr", type=float, default=10.0, help="last rate (default: 10)")
    _add_json_flag(lr_find)


def _add_serving_commands(commands) -> None:
    """serve, export."""
    serve = commands.add_parser("serve", help="HTTP prediction service and web page for a run")
    serve.set_defaults(
        handler=lambda args: api.serve(
            args.run,
            args.host,
            args.port,
            engine=args.engine,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            max_connections=args.max_connections,
            workers=args.workers,
            api_key=args.api_key,
            insecure=args.insecure,
            grpc_port=args.grpc_port,
        )
    )
    serve.add_argument("run")
    serve.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port (default: 8000)")
    serve.add_argument(
        "--grpc-port",
        type=_port,
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

    export = commands.add_parser(
        "export", help="write a run's model as ONNX, a SavedModel or LiteRT"
    )
    export.set_defaults(
        handler=lambda args: print(
            f"{args.format}: "
            f"{api.export(args.run, args.format, args.out, quantize=args.quantize, tta=args.tta)}"
        )
    )
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


def _config_flags(args, *own: str) -> dict:
    """The config and recipe flags given on the command line, without the command's own."""
    skip = {"command", "config", "json", "handler", "verbose", *own}
    return {key: value for key, value in vars(args).items() if key not in skip}


def _train(args) -> None:
    flags = _config_flags(args, "resume", "tensorboard", "mlflow", "mlflow_register")
    verbose = 2 if args.json or not sys.stdout.isatty() else 1
    result = api.train(
        args.config,
        resume=args.resume,
        command=sys.argv,
        verbose=0 if args.json else verbose,
        tensorboard=args.tensorboard,
        mlflow=args.mlflow,
        mlflow_register=args.mlflow_register,
        **flags,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "run": str(result.run) if result.is_chief else None,
                    "test_loss": result.test_loss,
                    "test_accuracy": result.test_accuracy,
                    "wall_seconds": result.wall_seconds,
                }
            )
        )
    else:
        print(
            f"test loss {result.test_loss:.4f}, test accuracy {result.test_accuracy:.4f}, "
            f"{result.wall_seconds:.1f} s"
        )
        print(f"run folder: {result.run if result.is_chief else '(written by process 0)'}")


def _tune(args) -> None:
    own = ("trials", "space", "objective", "objectives", "time_budget", "pruner", "workers")
    where = ("storage", "study", "heartbeat", "out", "tensorboard", "mlflow", "quiet")
    flags = _config_flags(args, *own, *where)
    objectives = args.objectives.split(",") if args.objectives else [args.objective]
    objectives = [o for o in objectives if o] or None
    result = api.tune(
        args.config,
        trials=args.trials,
        space=args.space,
        objectives=objectives,
        time_budget=args.time_budget,
        workers=args.workers,
        storage=args.storage,
        study=args.study,
        pruner=args.pruner,
        heartbeat=args.heartbeat,
        out=args.out,
        tensorboard=args.tensorboard,
        mlflow=args.mlflow,
        verbose=0 if args.quiet else 1,
        **flags,
    )
    if args.json:
        print(json.dumps(dataclasses.asdict(result), default=str))
        return
    print(f"study {result.study}: {result.finished} trials finished")
    for best in result.best:
        values = ", ".join(f"{v:.4g}" for v in best["values"])
        where = result.folder / best["run"] if best["run"] else "its run folder is unknown here"
        print(f"best trial {best['trial']}: {values}  ({where})")
    if result.best_run:
        print(f"best run: {result.best_run}")
    print(f"tune folder: {result.folder} (tune.html, trials.csv)")


def _evaluate(args) -> None:
    metrics = api.evaluate(args.run, args.test, unsafe=args.unsafe, tta=args.tta)
    if args.json:
        print(json.dumps(metrics))
    else:
        views = metrics["tta_views"]
        print(
            f"test loss {metrics['test_loss']:.4f}, test accuracy {metrics['test_accuracy']:.4f} "
            f"on {metrics['test_examples']} examples of {metrics['test_data']}"
            + (f" ({views} views per image)" if views > 1 else "")
        )


def _predict(args) -> int:
    """Streams rows to --out or stdout; lists unreadable files on stderr, exit 1 if any."""
    first = True

    def show(row: dict) -> None:
        nonlocal first
        if "error" in row:
            print(f"convnet: {row['file']}: {row['error']}", file=sys.stderr)
        elif args.out is None and args.format is None:  # text, or one JSON list, as it comes
            if args.json:
                print(("[" if first else ",") + json.dumps(row), flush=True)
                first = False
            else:
                others = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in row["top"][1:])
                print(
                    f"{row['file']}: {row['class']} {row['probability']:.3f}"
                    + (f"  ({others})" if others else ""),
                    flush=True,
                )

    result = api.predict_files(
        args.run,
        args.files,
        out=args.out,
        format=args.format,
        top_k=args.top_k,
        batch_size=args.batch_size,
        unsafe=args.unsafe,
        tta=args.tta,
        on_row=show,
    )
    # Rows streamed to stdout (or a FIFO, a device) keep it to themselves: the summary goes aside.
    summary = sys.stderr if result["stream"] else sys.stdout
    if args.out is None and args.format is None and args.json:
        print("[]" if first else "]")
    elif args.json:
        print(json.dumps(result), file=summary)
    elif args.out:
        print(f"predictions: {args.out} ({result['rows']} rows)", file=summary)
    for reason in dict.fromkeys(skip["reason"] for skip in result["skipped"]):
        files = [skip["file"] for skip in result["skipped"] if skip["reason"] == reason]
        print(
            f"convnet: skipped {len(files)} files in the folders given ({reason}), such as "
            f"{files[0]}",
            file=sys.stderr,
        )
    if result["failed"]:
        print(
            f"convnet: {len(result['failed'])} of {result['rows']} inputs could not be read",
            file=sys.stderr,
        )
        return 1
    return 0


def _compare(args) -> None:
    path = api.compare(args.runs, args.out)  # its warnings are also at the top of the page
    print(f"comparison: {path}")


def _lr_find(args) -> None:
    flags = _config_flags(args, "plot", "steps", "min_lr", "max_lr")
    config = load_config(args.config, flags)
    result = api.lr_find(
        config, plot=args.plot, steps=args.steps, min_lr=args.min_lr, max_lr=args.max_lr
    )
    if args.json:
        print(json.dumps({k: str(v) if k == "plot" else v for k, v in result.items()}))
    elif result["suggested"] is None:
        print(f"loss diverged after {result['steps']} steps; try a lower --min-lr")
    else:
        print(
            f"suggested learning rate {result['suggested']:.2g} (minimum loss at "
            f"{result['minimum']:.2g}, steepest descent at {result['steepest']:.2g}); "
            f"plot: {result['plot']}"
        )


def _runs(args) -> None:
    found = api.runs(args.dir)
    if args.json:
        print(json.dumps(found))
        return
    if not found:
        print(f"no runs in {args.dir}")
        return
    print(f"{'RUN':40s} {'STATUS':12s} {'PRESET':10s} {'TEST ACC':>8s}  STARTED")
    for run in found:
        accuracy = run["test_accuracy"]
        print(
            f"{run['run']:40s} {run['status']:12s} {run['preset'] or '-':10s} "
            f"{'-' if accuracy is None else f'{accuracy:.4f}':>8s}  {run['started'] or '-'}"
        )


def _presets(args) -> None:
    for preset in api.presets():
        print(f"{preset.name:10s} {preset.description}")


def _port(text: str) -> int:
    """A TCP port number, 0 to 65535 (0: any free port)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number; expected 0 to 65535")
    return int(text)


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


_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """convnet's own warnings as one line, `convnet: warning: ...`; others as Python shows them."""
    if issubclass(category, ConvnetWarning):
        print(f"convnet: warning: {message}", file=sys.stderr, flush=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


class _TerminateAsInterrupt:
    """While in effect, SIGTERM (`kill`, a container or a scheduler stopping the command) does
    what Ctrl-C does: it runs SIGINT's handler, so the cleanup written for Ctrl-C runs (temporary
    files removed, a training run left "interrupted" and resumable), where the default action
    ends the process on the spot. During `fit` that handler stops at the next batch
    (`StopOnInterrupt`); elsewhere it raises KeyboardInterrupt in the main thread."""

    received = False
    _installed = False

    def __enter__(self):
        with contextlib.suppress(ValueError):  # not the main thread: signals are not ours
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed = True
        return self

    def __exit__(self, *exc_info) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous or signal.SIG_DFL)

    def _on_sigterm(self, signum, frame) -> None:
        self.received = True
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):  # SIGINT ignored (started in the background): stop anyway
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand. Returns the exit code: 0, 1 when some inputs failed (predict), 2 for
    a user error, 130 when interrupted (Ctrl-C), 143 when terminated (SIGTERM: 128 + 15, as if
    the signal had ended the process, but after the same cleanup as Ctrl-C)."""
    args = _parser().parse_args(argv)
    framework.quiet(False if args.verbose else None)  # None: TF_CPP_MIN_LOG_LEVEL=0 shows too
    terminate = _TerminateAsInterrupt()
    try:
        with warnings.catch_warnings(), terminate:
            warnings.simplefilter("always", ConvnetWarning)
            warnings.showwarning = _show_warning
            code = args.handler(args)  # None, or 1 when some of the work failed (predict)
    except ConvnetError as error:
        print(f"convnet: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        stopped = "terminated" if terminate.received else "interrupted"
        print(f"convnet: {str(interrupt) or stopped}", file=sys.stderr)
        return 143 if terminate.received else 130
    return code or 0


def run() -> NoReturn:
    """The console script: `main`, then an exit that skips the interpreter's teardown once a
    framework is loaded, which took TensorFlow 1.3 s and more after all the work was written
    (docs/benchmarks.md). Threads still running are waited for and atexit handlers run, as in a
    normal exit: only the freeing of modules and of C++ objects is left to the OS.
    """
    code = main()
    if not any(framework in sys.modules for framework in ("tensorflow", "jax", "torch")):
        sys.exit(code)
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()  # the parse cache's writer, say
    atexit._run_exitfuncs()
    with contextlib.suppress(OSError, ValueError):  # a reader that went away; a closed stream
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
