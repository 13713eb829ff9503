"""What each command does with its parsed arguments: call `convnet.api`, and print the result, as
lines for a person or, with --json, one JSON document.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from convnet import api
from convnet.config import load_config
from convnet.runs import Run as RunFolder


def _config_flags(args, *own: str) -> dict:
    """The config and recipe flags given on the command line, without the command's own."""
    skip = {"command", "config", "json", "handler", "verbose", *own}
    return {key: value for key, value in vars(args).items() if key not in skip}


def train(args) -> None:
    flags = _config_flags(args, "resume", "tensorboard", "mlflow", "mlflow_register")
    # Built here, once, so that a bad value is refused as the flag it is; a resume refuses any
    # setting, and takes the run's own.
    config, settings = args.config, flags
    if not args.resume:
        config, settings = load_config(args.config, flags), {}
    verbose = 2 if args.json or not sys.stdout.isatty() else 1
    result = api.train(
        config,
        resume=args.resume,
        command=sys.argv,
        verbose=0 if args.json else verbose,
        tensorboard=args.tensorboard,
        mlflow=args.mlflow,
        mlflow_register=args.mlflow_register,
        **settings,
    )
    logged = None  # the MLflow run, which process 0 logged
    if args.mlflow is not None and result.is_chief:
        logged = RunFolder(result.run).read_json("manifest.json").get("mlflow", {}).get("run_id")
    if args.json:
        print(
            json.dumps(
                {
                    "run": str(result.run) if result.is_chief else None,
                    "test_loss": result.test_loss,
                    "test_accuracy": result.test_accuracy,
                    "wall_seconds": result.wall_seconds,
                }
                | ({"mlflow_run_id": logged} if logged else {})
            )
        )
    else:
        print(
            f"test loss {result.test_loss:.4f}, test accuracy {result.test_accuracy:.4f}, "
            f"{result.wall_seconds:.1f} s"
        )
        print(f"run folder: {result.run if result.is_chief else '(written by process 0)'}")
        if logged:
            print(f"mlflow run: {logged} (its model: runs:/{logged}/model)")


def tune(args) -> None:
    own = ("trials", "space", "objective", "objectives", "time_budget", "pruner", "workers")
    where = ("storage", "study", "heartbeat", "out", "tensorboard", "mlflow", "quiet")
    flags = _config_flags(args, *own, *where)
    load_config(args.config, flags)  # a bad value is refused as the flag it is
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


def evaluate(args) -> None:
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


def predict(args) -> int:
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
            f"convnet: skipped {len(files)} file{'s' * (len(files) != 1)} in the folders given "
            f"({reason}), such as {files[0]}",
            file=sys.stderr,
        )
    if result["failed"]:
        print(
            f"convnet: {len(result['failed'])} of {result['rows']} inputs could not be read",
            file=sys.stderr,
        )
        return 1
    return 0


def serve(args) -> None:
    api.serve(
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


def summary(args) -> None:
    print(api.summary(args.preset), end="")


def fetch(args) -> None:
    print(f"{args.name}: {api.fetch(args.name, args.data_dir)}")


def export_csv(args) -> None:
    print("\n".join(map(str, api.export_csv(args.out_dir, args.data_dir))))


def report(args) -> None:
    print(f"report: {api.report(args.run)}")


def export(args) -> None:
    path = api.export(args.run, args.format, args.out, quantize=args.quantize, tta=args.tta)
    print(f"{args.format}: {path}")


def compare(args) -> None:
    path = api.compare(args.runs, args.out)  # its warnings are also at the top of the page
    print(f"comparison: {path}")


def lr_find(args) -> None:
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


def runs(args) -> None:
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


def presets(args) -> None:
    for preset in api.presets():
        print(f"{preset.name:10s} {preset.description}")
